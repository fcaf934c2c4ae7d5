"""The sandbox's phone page at ``/phones``: a person tries the app without curl.

It lists the simulated phones and linked numbers, scans the QR code the app is showing (the network
knows it: one click), types a pairing code, chats as a customer (text, a picture file or a generated
sample picture) and drops a number (disconnect, log out, ban, replace). The page is static HTML
(``phones.html``) whose script talks only to the simulated network's control API
(``ghl_desktop/sandbox/whatsapp/control.py``) with ``fetch``.

Why static: nothing from the network (names, message text) is ever rendered into HTML on the
server; the script puts it into the page with ``textContent``. The Content-Security-Policy allows only
that one inline script (by its hash) and same-origin requests, so even an injected tag could not run.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from aiohttp import web

#: where the page is served; the window's sandbox banner and the sandbox inbox link here
PHONES_PATH = "/phones"

_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


@cache
def _page() -> tuple[str, str]:
    """The page's HTML and its Content-Security-Policy (the inline script's sha256)."""
    text = resources.files("ghl_desktop.sandbox").joinpath("phones.html").read_text("utf-8")
    scripts = _SCRIPT.findall(text)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode("utf-8")).digest()).decode() + "'" for s in scripts
    )
    policy = (
        "default-src 'none'; "
        f"script-src {hashes}; "
        "style-src 'unsafe-inline'; "
        "img-src 'self' data: blob:; "
        "connect-src 'self'; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'"
    )
    return text, policy


async def phones_page(_request: web.Request) -> web.Response:
    text, policy = _page()
    return web.Response(
        text=text,
        content_type="text/html",
        headers={"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
    )


def add_phones_routes(app: web.Application) -> None:
    app.router.add_get(PHONES_PATH, phones_page)


__all__ = ["PHONES_PATH", "add_phones_routes", "phones_page"]
