"""HighLevel webhooks: verification and the durable hand-off to the desktop's job queue.

``verify`` (Ed25519 / RSA signatures, keys), ``schema`` (body shapes), ``gate`` (the ordered checks →
``VerifiedEvent``), ``intake`` (JobQueue hand-off, 200/429 policy), ``endpoint`` (direct-mode aiohttp
server, also mounted by the relay).
"""
