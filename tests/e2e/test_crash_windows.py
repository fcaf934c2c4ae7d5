"""The crash windows a random SIGKILL only sometimes hits, each forced deterministically.

In ``headless --sandbox`` the sandbox and the simulated network die with the bridge, so what a kill
leaves behind is whatever each of them had saved. Each test builds exactly that leftover and shows
the restart finishing the work, once:

- the sandbox saved an agent's reply but its webhook delivery was cut short (or, on a graceful stop,
  the reply came while the bridge's endpoint was closing);
- the network stored a send in the phone's inbox but died before the phone's delivery receipt;
- the bridge stored "delivered" but died before storing the status job for HighLevel.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from ghl_desktop.adapters.ghl.tls import ssl_context
from ghl_desktop.core.models import Direction, MessageStatus, utcnow
from ghl_desktop.core.whatsapp import Receipt, ReceiptKind
from ghl_desktop.sandbox.server import running_sandbox
from ghl_desktop.sandbox.whatsapp import whatsapp_network
from ghl_desktop.services.bridge import STATUS
from tests.e2e.harness import Env, bridge_env, eventually

pytestmark = pytest.mark.timeout(120)

ALICE = "+4915150000001"


async def _receiver(answer: asyncio.Future[None] | None) -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    """A webhook endpoint that records bodies; with ``answer`` it hangs until that future is set."""
    got: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(await request.json())
        if answer is not None:
            await answer
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hook", got


@pytest.mark.asyncio
async def test_a_reply_cut_off_mid_delivery_is_delivered_after_the_restart(tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    hang: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    first_endpoint, hanging_url, first_got = await _receiver(hang)
    try:
        async with running_sandbox(state_dir=str(alive), webhook_url=hanging_url) as sb:
            location = sb.location_ids[0]
            contact = sb.sandbox.create_contact(location, ALICE, "Alice")
            reply = asyncio.ensure_future(sb.reply(location, contact.id, "cut off mid-delivery"))
            await eventually(lambda: first_got, 10)  # the bridge has the request; nothing answered yet
            # SIGKILL now: the disk holds what was saved up to this moment
            killed = tmp_path / "killed"
            shutil.copytree(alive, killed)
            reply.cancel()
    finally:
        hang.set_result(None)
        await first_endpoint.cleanup()

    second_endpoint, url, got = await _receiver(None)
    try:
        async with running_sandbox(state_dir=str(killed)) as sb:
            message = next(m for m in sb.state.messages.values() if m.body == "cut off mid-delivery")
            assert [d.status for d in sb.state.deliveries if d.message_id == message.id] == ["pending"]
            # the restarted bridge points the sandbox at its new endpoint (headless does this at start)
            async with httpx.AsyncClient(verify=ssl_context()) as http:
                answer = await http.post(f"{sb.url}/_sandbox/config", json={"webhook_url": url})
                answer.raise_for_status()
            await eventually(lambda: got, 10)
            await eventually(lambda: sb.state.deliveries[-1].status == "delivered", 10)
            assert [body["messageId"] for body in got] == [message.id]
    finally:
        await second_endpoint.cleanup()


@pytest.mark.asyncio
async def test_a_reply_made_while_the_bridge_shuts_down_waits_for_the_next_run(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    endpoint, url, got = await _receiver(None)
    try:
        async with (running_sandbox(state_dir=str(state_dir), webhook_url=url) as sb,
                    httpx.AsyncClient(verify=ssl_context()) as http):
            location = sb.location_ids[0]
            contact = sb.sandbox.create_contact(location, ALICE, "Alice")
            # what headless does first on SIGTERM, before its webhook endpoint closes
            (await http.post(f"{sb.url}/_sandbox/config", json={"hold_webhooks": True})).raise_for_status()
            answer = await http.post(f"{sb.url}/_sandbox/locations/{location}/reply",
                                     json={"contactId": contact.id, "message": "made during shutdown"})
            assert answer.status_code == 201 and answer.json()["delivery"]["status"] == "pending"
        assert got == []  # nothing went to the closing endpoint

        async with running_sandbox(state_dir=str(state_dir)) as sb, httpx.AsyncClient(verify=ssl_context()) as http:
            message = next(m for m in sb.state.messages.values() if m.body == "made during shutdown")
            (await http.post(f"{sb.url}/_sandbox/config", json={"webhook_url": url})).raise_for_status()
            await eventually(lambda: got, 10)
            await eventually(lambda: sb.state.deliveries[-1].status == "delivered", 10)
            assert [body["messageId"] for body in got] == [message.id]
    finally:
        await endpoint.cleanup()


async def _reply_to_offline_phone(env: Env) -> tuple[str, Any]:
    """An agent's reply sent by the bridge to a phone that has not received it yet (status sent)."""
    await env.customer(ALICE, "Alice")
    await env.send(ALICE, text="hello")
    await eventually(lambda: env.app.db.contacts.find(env.location_id, phone=ALICE))
    contact = await env.contact_for(phone=ALICE)
    await env.http.post(f"{env.url}/_sandbox/phones/{ALICE}/online", json={"online": False})
    ghl_id = await env.reply(contact["id"], "did you get this?")

    def sent_row() -> Any:
        row = env.app.db.messages.by_ghl_id(env.location_id, ghl_id)
        return row if row is not None and row.status is MessageStatus.SENT else None

    row = await eventually(sent_row)
    assert row.direction is Direction.OUTBOUND and row.wa_message_id
    assert [m["status"] for m in await env.inbox(ALICE)] == ["sent"]
    return ghl_id, row


async def _ghl_status(env: Env, ghl_id: str) -> str:
    return str(next(m["status"] for m in await env.messages() if m["id"] == ghl_id))


@pytest.mark.asyncio
async def test_a_send_stored_on_the_phone_but_never_receipted_is_delivered_on_reconnect() -> None:
    async with bridge_env() as env:
        ghl_id, _row = await _reply_to_offline_phone(env)
        # what a kill between "stored in the phone's inbox" and "delivered" leaves: an online phone
        # holding the message at "sent", no receipt queued
        net = whatsapp_network(env.sandbox.app)
        net.phones[ALICE].online = True
        assert await _ghl_status(env, ghl_id) == "pending"
        # the restarted bridge connects again
        answer = await env.http.post(f"{env.url}/_sandbox/whatsapp/{env.linked}/drop", json={"kind": "disconnect"})
        answer.raise_for_status()
        await eventually(lambda: _is(_ghl_status(env, ghl_id), "delivered"), 30)
        inbox = await env.inbox(ALICE)
        assert [(m["text"], m["status"]) for m in inbox] == [("did you get this?", "delivered")]


@pytest.mark.asyncio
async def test_a_receipt_redelivered_after_a_crash_still_reaches_highlevel() -> None:
    async with bridge_env() as env:
        ghl_id, row = await _reply_to_offline_phone(env)
        # what a kill between storing "delivered" and storing its status job leaves
        await env.app.db.aio.messages.update(row.id, status=MessageStatus.DELIVERED)
        assert not [j for j in env.app.db.jobs.list(limit=500) if j.kind == STATUS]
        # the network redelivers the unacked receipt to the restarted bridge
        session = (await env.app.db.aio.sessions.list())[0]
        receipt = Receipt(chat=row.chat_jid, message_ids=(row.wa_message_id,), kind=ReceiptKind.DELIVERED,
                          timestamp=utcnow())
        await env.runtime.bridge.on_receipt(session, receipt)
        await env.runtime.bridge.on_receipt(session, receipt)  # and again: still one status job
        assert len([j for j in env.app.db.jobs.list(limit=500) if j.kind == STATUS]) == 1
        await eventually(lambda: _is(_ghl_status(env, ghl_id), "delivered"), 30)


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)
