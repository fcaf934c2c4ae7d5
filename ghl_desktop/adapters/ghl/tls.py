"""One TLS context per process, built off the event loop (docs/event-loop.md).

``httpx.AsyncClient()`` without ``verify=`` builds a new ``ssl.SSLContext`` and loads the whole CA
bundle into it: 50–330 ms of disk and parsing on whichever thread makes the client, which in this app is
the event loop. Every client we make passes ``verify=ssl_context()`` instead. The context is built once,
on a daemon thread started when this module is imported (loading the bundle releases the GIL, so the
import does not wait for it); :func:`ssl_context` returns it, waiting for that thread only if it has not
finished yet, and async code that may run before that can ``await ssl_context_async()``.

The bundle is certifi's, as httpx's own default (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` win, as in httpx).
A context is safe to share between clients and threads once built; nothing here changes it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading

_lock = threading.Lock()
_context: ssl.SSLContext | None = None


def _build() -> ssl.SSLContext:
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def ssl_context() -> ssl.SSLContext:
    """The process's TLS context (verifying, CA bundle loaded). Blocks only until the build started at
    import has finished — call it from async code only through :func:`ssl_context_async` when in doubt."""
    global _context
    context = _context
    if context is not None:
        return context
    with _lock:
        if _context is None:
            _context = _build()
        return _context


async def ssl_context_async() -> ssl.SSLContext:
    """:func:`ssl_context` without waiting on the loop: a worker thread waits if it is not built yet."""
    context = _context
    if context is not None:
        return context
    return await asyncio.to_thread(ssl_context)


def ssl_context_ready() -> bool:
    return _context is not None


threading.Thread(target=ssl_context, name="ghl-tls-context", daemon=True).start()

__all__ = ["ssl_context", "ssl_context_async", "ssl_context_ready"]
