"""The HighLevel sandbox: a local stand-in for services.leadconnectorhq.com (``server.py``), validated
against HighLevel's own OpenAPI specs (``validation.py``), plus the simulated WhatsApp network
(the ``whatsapp`` package). Used by sandbox mode and by every test of the HighLevel client."""
