"""Webhooks the sandbox sends (signed with its Ed25519 key) and the HTML inbox that triggers them."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ghl_desktop.sandbox.server import RunningSandbox
from tests.fixtures.sandbox import WebhookReceiver
from tests.sandbox.api_helpers import auth, location_install, state, upsert


def verify(pem: str, headers: dict[str, str], body: bytes) -> bool:
    key = load_pem_public_key(pem.encode())
    assert isinstance(key, Ed25519PublicKey)
    sig = {k.lower(): v for k, v in headers.items()}["x-ghl-signature"]
    try:
        key.verify(base64.b64decode(sig), body)
    except InvalidSignature:
        return False
    return True


async def _contact(client: httpx.AsyncClient, sb: RunningSandbox) -> tuple[str, str, str]:
    loc = sb.location_ids[0]
    token = (await location_install(client, sb, loc))["access_token"]
    contact = (await upsert(client, token, loc, "+14155550160", name="Bo")).json()["contact"]["id"]
    return loc, token, contact


async def _wait_status(sb: RunningSandbox, delivery_kind: str, wanted: str) -> None:
    done = sb.sandbox.wait_until(
        lambda: any(d.kind == delivery_kind and d.status == wanted for d in sb.state.deliveries))
    await asyncio.wait_for(done, 10)


@pytest.mark.asyncio
async def test_reply_posts_signed_provider_outbound_webhook(sandbox: RunningSandbox,
                                                            webhook_receiver: WebhookReceiver) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, _, contact = await _contact(client, sandbox)
        r = await client.post("/_sandbox/config", json={"webhook_url": webhook_receiver.url + "/hooks/ghl"})
        assert r.json()["webhook_url"].endswith("/hooks/ghl")
        reply = await client.post(f"/_sandbox/locations/{loc}/reply", json={
            "contactId": contact, "message": "Hi Bo", "attachments": ["https://cdn.example/p.png"]})
        assert reply.status_code == 201
        assert reply.json()["delivery"]["status"] == "delivered"
        headers, body = webhook_receiver.received[-1]
        payload = json.loads(body)
        assert payload == {
            "contactId": contact, "locationId": loc, "messageId": reply.json()["messageId"], "type": "SMS",
            "phone": "+14155550160", "message": "Hi Bo", "attachments": ["https://cdn.example/p.png"],
            "userId": sandbox.state.user_id, "conversationProviderId": sandbox.provider_id}
        keys = (await state(client))["webhook_public_keys"]
        assert verify(keys[0], headers, body)
        assert not verify(keys[0], headers, body.replace(b"Hi Bo", b"Hi Al"))
        msg = next(m for m in (await state(client))["messages"] if m["id"] == payload["messageId"])
        assert msg["direction"] == "outbound" and msg["status"] == "pending" and msg["body"] == "Hi Bo"


@pytest.mark.asyncio
async def test_webhook_429_is_retried_other_failures_are_lost(sandbox: RunningSandbox,
                                                              webhook_receiver: WebhookReceiver) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, _, contact = await _contact(client, sandbox)
        await client.post("/_sandbox/config", json={"webhook_url": webhook_receiver.url})
        webhook_receiver.responses = [429, 429]
        first = await client.post(f"/_sandbox/locations/{loc}/reply", json={"contactId": contact, "message": "a"})
        assert first.json()["delivery"]["status"] == "retrying"
        await webhook_receiver.wait_for(3)
        await _wait_status(sandbox, "ProviderOutboundMessage", "delivered")
        delivery = sandbox.state.deliveries[-1]
        assert delivery.attempts == 3 and delivery.last_status_code == 200
        assert webhook_receiver.received[0][1] == webhook_receiver.received[2][1]  # the same event again

        webhook_receiver.responses = [500]
        second = await client.post(f"/_sandbox/locations/{loc}/reply", json={"contactId": contact, "message": "b"})
        assert second.json()["delivery"] == {**second.json()["delivery"], "status": "lost", "statusCode": 500}
        await client.post("/_sandbox/config", json={"webhook_url": "http://127.0.0.1:9/closed"})
        third = await client.post(f"/_sandbox/locations/{loc}/reply", json={"contactId": contact, "message": "c"})
        assert third.json()["delivery"]["status"] == "lost" and third.json()["delivery"]["error"]
        snap = await state(client)
        assert [d["status"] for d in snap["webhook_deliveries"] if d["kind"] == "ProviderOutboundMessage"] == \
            ["delivered", "lost", "lost"]


@pytest.mark.asyncio
async def test_install_and_uninstall_webhooks_go_to_the_app_url(sandbox: RunningSandbox,
                                                                 webhook_receiver: WebhookReceiver) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        await client.post("/_sandbox/config", json={"app_webhook_url": webhook_receiver.url + "/app"})
        loc = sandbox.location_ids[0]
        await location_install(client, sandbox, loc)
        await webhook_receiver.wait_for(1)
        headers, body = webhook_receiver.received[0]
        event = json.loads(body)
        assert event["type"] == "INSTALL" and event["locationId"] == loc and event["appId"] == sandbox.app_id
        assert event["installType"] == "Location" and event["webhookId"] and event["timestamp"]
        assert verify(sandbox.public_key_pem, headers, body)
        r = await client.post(f"/_sandbox/locations/{loc}/uninstall")
        assert r.status_code == 200
        await webhook_receiver.wait_for(2)
        gone = json.loads(webhook_receiver.received[1][1])
        assert gone["type"] == "UNINSTALL" and gone["locationId"] == loc
        assert not sandbox.state.locations[loc].installed


@pytest.mark.asyncio
async def test_uninstall_revokes_tokens(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, _ = await _contact(client, sandbox)
        await client.post(f"/_sandbox/locations/{loc}/uninstall")
        r = await upsert(client, token, loc, "+14155550161")
        assert r.status_code == 401


@pytest.mark.asyncio
async def test_inbox_page_shows_threads_and_its_reply_form_sends(sandbox: RunningSandbox,
                                                                 webhook_receiver: WebhookReceiver) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, contact = await _contact(client, sandbox)
        await client.post("/_sandbox/config", json={"webhook_url": webhook_receiver.url})
        sent = await client.post("/conversations/messages/inbound", headers=auth(token), json={
            "type": "Custom", "contactId": contact, "conversationProviderId": sandbox.provider_id,
            "message": "Is the <shop> open?", "direction": "inbound"})
        conv = sent.json()["conversationId"]
        home = await client.get("/")
        assert home.status_code == 200 and f"/?conversation={conv}" in home.text
        page = await client.get("/", params={"conversation": conv})
        assert "Is the &lt;shop&gt; open?" in page.text and "inbound · delivered" in page.text
        form = await client.post("/inbox/reply", data={"locationId": loc, "contactId": contact,
                                                        "message": "Yes, until 6"})
        assert form.status_code == 303 and form.headers["location"] == f"/?conversation={conv}"
        assert json.loads(webhook_receiver.received[-1][1])["message"] == "Yes, until 6"
        after = await client.get("/", params={"conversation": conv})
        assert "Yes, until 6" in after.text and "outbound · pending · webhook delivered" in after.text
