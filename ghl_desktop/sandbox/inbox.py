"""A small HTML inbox at / so a person can watch the bridge work and answer as a HighLevel user would."""

from __future__ import annotations

import html

from aiohttp import web

from ghl_desktop.sandbox.common import sandbox_of
from ghl_desktop.sandbox.phones_page import PHONES_PATH
from ghl_desktop.sandbox.runtime import ApiError
from ghl_desktop.sandbox.state import iso

_STYLE = """body{font-family:sans-serif;margin:0;display:flex;height:100vh}
nav{width:22em;border-right:1px solid #ccc;overflow:auto;padding:.5em}
main{flex:1;display:flex;flex-direction:column;padding:.5em}
.msgs{flex:1;overflow:auto} .m{margin:.3em 0;padding:.4em .6em;border-radius:.5em;max-width:70%}
.inbound{background:#eee} .outbound{background:#d6ecff;margin-left:auto}
small{color:#666} a.sel{font-weight:bold} form{display:flex;gap:.5em} textarea{flex:1}"""


def _attachment_link(url: str) -> str:
    """A link only for http(s) URLs; anything else (``javascript:``, ``data:``…) is shown as text."""
    if url.strip().lower().startswith(("http://", "https://")):
        return f' <a href="{html.escape(url.strip())}" rel="noopener noreferrer">attachment</a>'
    return f" <small>attachment (not a web link): {html.escape(url)}</small>"


async def inbox(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    state = sandbox.state
    selected = request.query.get("conversation")
    nav = []
    for loc in state.locations.values():
        nav.append(f"<h3>{html.escape(loc.name)}</h3><small>{loc.id}"
                   f"{' · app installed' if loc.installed else ''}</small><ul>")
        for thread in state.conversations.values():
            if thread.location_id != loc.id or thread.deleted:
                continue
            person = state.contacts.get(thread.contact_id)
            label = html.escape((person.name or person.phone or person.id) if person else thread.contact_id)
            cls = ' class="sel"' if thread.id == selected else ""
            unread = f" ({thread.unread_count})" if thread.unread_count else ""
            nav.append(f'<li><a{cls} href="/?conversation={thread.id}">{label}</a>{unread}</li>')
        nav.append("</ul>")
    body = "<p>Choose a conversation.</p>"
    conv = state.conversations.get(selected or "")
    if conv is not None:
        contact = state.contacts.get(conv.contact_id)
        deliveries = {d.message_id: d for d in state.deliveries if d.message_id}
        rows = []
        for m in sorted((m for m in state.messages.values() if m.conversation_id == conv.id),
                        key=lambda m: m.date_added):
            links = "".join(_attachment_link(a) for a in m.attachments)
            hook = deliveries.get(m.id)
            hook_text = f" · webhook {hook.status}" if hook else ""
            rows.append(f'<div class="m {m.direction}">{html.escape(m.body)}{links}<br>'
                        f"<small>{m.direction} · {m.status}{hook_text} · {iso(m.date_added)}</small></div>")
        who = html.escape(f"{contact.name or ''} {contact.phone or ''}" if contact else "")
        body = (f"<h2>{who}</h2><div class=msgs>{''.join(rows)}</div>"
                f'<form method="post" action="/inbox/reply">'
                f'<input type="hidden" name="locationId" value="{conv.location_id}">'
                f'<input type="hidden" name="contactId" value="{conv.contact_id}">'
                f'<input type="hidden" name="conversationId" value="{conv.id}">'
                f'<textarea name="message" rows="2" required placeholder="Reply as a HighLevel user"></textarea>'
                f"<button>Send</button></form>")
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>HighLevel sandbox inbox</title>"
            f"<style>{_STYLE}</style></head><body><nav><h2>Sandbox inbox</h2>"
            f'<p><a id="phones-link" href="{PHONES_PATH}">Simulated phones: link a number, write as a customer</a></p>'
            f"{''.join(nav)}</nav>"
            f"<main>{body}</main></body></html>")
    return web.Response(text=page, content_type="text/html")


async def inbox_reply(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    form = await request.post()
    try:
        result = await sandbox.reply(str(form.get("locationId", "")), str(form.get("contactId", "")),
                                     str(form.get("message", "")))
    except ApiError as exc:
        return web.Response(status=exc.status, text=str(exc.body.get("message")), content_type="text/plain")
    raise web.HTTPSeeOther(f"/?conversation={result['conversationId']}")


def add_inbox_routes(app: web.Application) -> None:
    app.router.add_get("/", inbox)
    app.router.add_post("/inbox/reply", inbox_reply)
