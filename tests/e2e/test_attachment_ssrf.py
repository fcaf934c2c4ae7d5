"""Issue 10.2 end to end: a HighLevel reply whose attachment points at an internal page (here a
loopback server next to the app) must not put that page on the customer's phone; the reply fails
with a readable reason. The sandbox's own attachments still go through (test_bridge covers them)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.e2e.harness import bridge_env, eventually

ALICE = "+4915112345678"


@pytest.mark.asyncio
async def test_a_reply_with_an_internal_attachment_url_delivers_nothing_to_the_phone() -> None:
    hits: list[str] = []

    async def secret(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="<h1>router admin</h1>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", secret)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    internal = f"http://127.0.0.1:{runner.addresses[0][1]}/admin/config.html"
    try:
        async with bridge_env() as env:
            await env.customer(ALICE, "Alice")
            await env.send(ALICE, text="hello")
            await eventually(lambda: env.app.db.contacts.find(env.location_id, phone=ALICE))
            contact = await env.contact_for(phone=ALICE)
            reply_id = await env.reply(contact["id"], "see attached", attachments=[internal])

            async def failed() -> dict[str, Any] | None:
                found = next((m for m in await env.messages() if m["id"] == reply_id), None)
                return found if found and found["status"] == "failed" else None

            message = await eventually(failed, 30)
            assert "not a public address" in str(message["error"])
            assert await env.inbox(ALICE) == []
    finally:
        await runner.cleanup()
    assert hits == []
