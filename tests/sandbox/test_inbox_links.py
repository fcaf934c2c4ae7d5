"""Issue 10.10: the sandbox inbox rendered any attachment URL as a link, ``javascript:`` included — a
click ran script on the sandbox's origin (which holds its control API)."""

from __future__ import annotations

import httpx
import pytest

from ghl_desktop.sandbox.server import RunningSandbox
from tests.sandbox.api_helpers import auth, location_install, upsert


@pytest.mark.asyncio
async def test_only_http_and_https_attachments_become_links(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        token = (await location_install(client, sandbox, loc))["access_token"]
        contact = (await upsert(client, token, loc, "+14155550162", name="Cy")).json()["contact"]["id"]
        evil = ["javascript:alert(document.cookie)", " JavaScript:alert(1)", "data:text/html,<script>x</script>",
                "vbscript:msgbox(1)"]
        sent = await client.post("/conversations/messages/inbound", headers=auth(token), json={
            "type": "Custom", "contactId": contact, "conversationProviderId": sandbox.provider_id,
            "message": "look", "direction": "inbound",
            "attachments": [*evil, "https://cdn.example.com/a.png"]})
        assert sent.status_code == 200, sent.text
        page = await client.get("/", params={"conversation": sent.json()["conversationId"]})
    text = page.text.lower()
    assert 'href="https://cdn.example.com/a.png"' in text
    for scheme in ("javascript:", "data:", "vbscript:"):
        assert f'href="{scheme}' not in text and f'href=" {scheme}' not in text
