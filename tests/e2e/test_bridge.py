"""WhatsApp ⇄ HighLevel end to end, in-process, over real loopback HTTP and WebSocket: the sandbox
plays HighLevel, the simulated network plays WhatsApp and the customers' phones."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ghl_desktop.adapters.whatsapp.simulated import SimulatedTransport, TransportOptions
from ghl_desktop.core.errors import WhatsAppTransientError
from ghl_desktop.core.models import Direction, MessageKind, MessageStatus, NewJob, utcnow
from ghl_desktop.core.whatsapp import IncomingMessage, OutgoingMedia, SendResult
from ghl_desktop.services.bridge import OUTBOUND, BridgeOptions, part_key
from ghl_desktop.webhooks.gate import KIND_APP_EVENT, KIND_OUTBOUND_MESSAGE
from tests.e2e.harness import FAST_RUNTIME, PNG, Env, bridge_env, eventually

ALICE = "+4915112345678"


def by_alt(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["altId"]: m for m in messages if m.get("altId")}


def test_job_kinds_agree_with_the_webhook_intake() -> None:
    from ghl_desktop.services import bridge

    assert bridge.OUTBOUND == KIND_OUTBOUND_MESSAGE and bridge.APP_EVENT == KIND_APP_EVENT


@pytest.mark.asyncio
async def test_every_inbound_kind_reaches_highlevel_once() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        png = base64.b64encode(PNG).decode()
        ids: dict[str, str] = {}
        ids["text"] = await env.send(ALICE, text="Hi, is the shop open today?")
        ids["image"] = await env.send(ALICE, media={"data": png, "mimetype": "image/png", "file_name": "p.png",
                                                    "caption": "this one"})
        ids["document"] = await env.send(ALICE, media={"data": base64.b64encode(b"%PDF-1.4 tiny").decode(),
                                                       "mimetype": "application/pdf", "file_name": "quote.pdf",
                                                       "kind": "document"})
        ids["voice"] = await env.send(ALICE, kind="voice", media={"data": base64.b64encode(b"OggS....").decode(),
                                                                  "mimetype": "audio/ogg; codecs=opus",
                                                                  "seconds": 3})
        ids["reply"] = await env.send(ALICE, text="yes that one", reply_to=ids["text"])
        ids["reaction"] = await env.send(ALICE, kind="reaction", target_id=ids["text"], emoji="👍")
        ids["edit"] = await env.send(ALICE, kind="edit", target_id=ids["reply"], text="yes, the blue one")
        ids["revoke"] = await env.send(ALICE, kind="revoke", target_id=ids["image"])
        ids["location"] = await env.send(ALICE, location={"latitude": 52.52, "longitude": 13.405, "name": "Shop"})
        ids["contact"] = await env.send(ALICE, contact={"name": "Bob", "phone": "+4915199999999"})

        async def all_there() -> bool:
            return set(ids.values()) <= set(by_alt(await env.messages()))

        await eventually(all_there, 30)
        messages = await env.messages()
        got = by_alt(messages)
        assert max(Counter(m["altId"] for m in messages if m.get("altId")).values()) == 1
        assert {got[i]["direction"] for i in ids.values()} == {"inbound"}
        contact = await env.contact_for(phone=ALICE)
        assert {got[i]["contactId"] for i in ids.values()} == {contact["id"]}
        assert contact["name"] == "Alice"

        assert got[ids["text"]]["body"] == "Hi, is the shop open today?"
        assert got[ids["image"]]["body"] == "this one" and len(got[ids["image"]]["attachments"]) == 1
        image = await env.http.get(got[ids["image"]]["attachments"][0])
        assert image.content == PNG
        assert len(got[ids["document"]]["attachments"]) == 1
        # HighLevel's upload refuses .ogg: the agent still learns a voice message came, and why it is missing
        assert "voice message" in got[ids["voice"]]["body"] and "could not be attached" in got[ids["voice"]]["body"]
        assert got[ids["reply"]]["body"] == "↪ Reply to “Hi, is the shop open today?”\nyes that one"
        assert got[ids["reaction"]]["body"] == "👍 reacted to “Hi, is the shop open today?”"
        assert got[ids["edit"]]["body"] == "✏️ Edited “yes that one” → “yes, the blue one”"
        assert got[ids["revoke"]]["body"] == "🗑 Deleted “this one”"
        assert "Shop" in got[ids["location"]]["body"] and "maps.google.com" in got[ids["location"]]["body"]
        assert got[ids["contact"]]["body"].startswith("👤 Contact card: Bob")

        rows = env.app.db.messages.recent(100)
        inbound = [r for r in rows if r.direction is Direction.INBOUND]
        assert inbound and all(r.status is MessageStatus.SENT and r.ghl_message_id for r in inbound)


@pytest.mark.asyncio
async def test_outbound_text_and_media_with_real_delivery_and_read_ticks() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        await env.send(ALICE, text="hello")
        await eventually(lambda: env.app.db.contacts.find(env.location_id, phone=ALICE))
        contact = await env.contact_for(phone=ALICE)
        url = await env.upload_file("menu.png", PNG, "image/png", contact["id"])

        text_id = await env.reply(contact["id"], "Hi Alice, we open at 9")
        media_id = await env.reply(contact["id"], "Here is the menu", attachments=[url])

        async def inbox_has_both() -> list[dict[str, Any]] | None:
            inbox = await env.inbox(ALICE)
            return inbox if len(inbox) >= 2 else None

        inbox = await eventually(inbox_has_both)
        assert [m["text"] for m in inbox] == ["Hi Alice, we open at 9", "Here is the menu"]
        assert inbox[1]["media"] and inbox[1]["media"]["mimetype"] == "image/png"
        assert inbox[1]["media"]["size"] == len(PNG)

        async def status(message_id: str) -> str:
            return next(m["status"] for m in await env.messages() if m["id"] == message_id)

        await eventually(lambda: _is(status(text_id), "delivered"), 30)
        await env.read(ALICE, [inbox[0]["id"]])
        await eventually(lambda: _is(status(text_id), "read"), 30)
        history = next(m["statusHistory"] for m in await env.messages() if m["id"] == text_id)
        assert history == ["pending", "delivered", "read"]  # never "delivered" before WhatsApp said so
        await eventually(lambda: _is(status(media_id), "delivered"), 30)
        assert len(await env.inbox(ALICE)) == 2  # nothing sent twice


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)


@pytest.mark.asyncio
async def test_phone_sent_messages_are_mirrored_and_never_echoed() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        sent_id = await env.send_from_phone(ALICE, text="typed on the phone itself")

        async def mirrored() -> dict[str, Any] | None:
            return by_alt(await env.messages()).get(sent_id)

        message = await eventually(mirrored)
        assert message["direction"] == "outbound" and message["body"] == "typed on the phone itself"
        assert (await env.contact_for(phone=ALICE))["id"] == message["contactId"]
        # the customer got it once, from the phone; the bridge did not send it again
        inbox = await env.inbox(ALICE)
        assert [m["text"] for m in inbox] == ["typed on the phone itself"]
        assert env.app.db.jobs.count() == env.app.db.jobs.count("done")
        assert not [j for j in env.app.db.jobs.list(limit=500) if j.kind == OUTBOUND]


@pytest.mark.asyncio
async def test_lid_senders_with_and_without_a_known_phone() -> None:
    async with bridge_env() as env:
        await env.customer("+4915100000001", "Known Lid", lid="111111111111111")
        await env.customer("+4915100000002", "Hidden Lid", lid="222222222222222", lid_only=True)
        known = await env.send("+4915100000001", text="from a LID with SenderAlt")
        hidden = await env.send("+4915100000002", text="from a LID only")
        await env.send("+4915100000002", text="second from the LID only")

        async def both() -> bool:
            return {known, hidden} <= set(by_alt(await env.messages()))

        await eventually(both)
        state = await env.state()
        known_contact = await env.contact_for(phone="+4915100000001")
        assert by_alt(state["messages"])[known]["contactId"] == known_contact["id"]
        hidden_contact = next(c for c in state["contacts"] if c["id"] == by_alt(state["messages"])[hidden]["contactId"])
        assert hidden_contact["phone"] is None  # never an invented number
        assert hidden_contact["name"] == "Hidden Lid"
        await eventually(lambda: _count_lid_messages(env, hidden_contact["id"], 2))
        assert sum(1 for c in (await env.state())["contacts"] if c["name"] == "Hidden Lid") == 1  # one contact


async def _count_lid_messages(env: Env, contact_id: str, n: int) -> bool:
    return sum(1 for m in await env.messages() if m["contactId"] == contact_id) == n


@pytest.mark.asyncio
async def test_a_number_not_on_whatsapp_fails_with_that_reason() -> None:
    async with bridge_env() as env:
        contact = await env.add_contact("+4915177777777", "No WhatsApp")
        message_id = await env.reply(contact, "Are you there?")

        async def failed() -> dict[str, Any] | None:
            found = next(m for m in await env.messages() if m["id"] == message_id)
            return found if found["status"] == "failed" else None

        message = await eventually(failed, 30)
        assert "not on WhatsApp" in str(message.get("error"))
        row = env.app.db.messages.by_ghl_id(env.location_id, message_id)
        assert row is not None and row.status is MessageStatus.FAILED and "not on WhatsApp" in (row.error or "")


@pytest.mark.asyncio
async def test_duplicate_webhook_and_repeated_whatsapp_delivery_change_nothing() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        wa_id = await env.send(ALICE, text="only once please")
        await eventually(lambda: _has_alt(env, wa_id))
        # WhatsApp (the network) delivering the same message again is a no-op
        session = (await env.app.db.aio.sessions.list())[0]
        again = IncomingMessage(id=wa_id, chat="4915112345678@s.whatsapp.net", sender="4915112345678@s.whatsapp.net",
                                sender_phone=ALICE, sender_lid=None, push_name="Alice", timestamp=utcnow(),
                                kind=MessageKind.TEXT, text="only once please")
        await env.runtime.bridge.on_message(session, again)
        await env.runtime.runner.run_until_idle(10)
        assert sum(1 for m in await env.messages() if m.get("altId") == wa_id) == 1

        contact = await env.contact_for(phone=ALICE)
        reply_id = await env.reply(contact["id"], "answer once")
        await eventually(lambda: _inbox_len(env, ALICE, 1))
        # HighLevel retrying the same delivery (same messageId) stores nothing new
        _job_id, created = await env.app.db.aio.jobs.enqueue(
            NewJob(kind=OUTBOUND, payload={"event": {"messageId": reply_id}}, dedupe_key=f"ghl:msg:{reply_id}"))
        assert not created
        await env.runtime.runner.run_until_idle(10)
        assert len(await env.inbox(ALICE)) == 1


async def _has_alt(env: Env, alt: str) -> bool:
    return alt in by_alt(await env.messages())


async def _inbox_len(env: Env, phone: str, n: int) -> bool:
    return len(await env.inbox(phone)) == n


@pytest.mark.asyncio
async def test_a_merged_contact_is_resolved_again_and_the_message_lands_once() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        first = await env.send(ALICE, text="before the merge")
        await eventually(lambda: _has_alt(env, first))
        old = await env.contact_for(phone=ALICE)
        keep = await env.add_contact("+4915122222222", "Alice (office)")
        merged = await env.http.post(f"{env.url}/_sandbox/contacts/merge",
                                     json={"keepContactId": keep, "mergeContactId": old["id"]})
        merged.raise_for_status()

        second = await env.send(ALICE, text="after the merge")
        await eventually(lambda: _has_alt(env, second))
        messages = await env.messages()
        assert by_alt(messages)[second]["contactId"] == keep  # re-resolved by phone to the survivor
        assert sum(1 for m in messages if m.get("altId") == second) == 1
        link = env.app.db.contacts.find(env.location_id, phone=ALICE)
        assert link is not None and link.ghl_contact_id == keep


@pytest.mark.asyncio
async def test_an_existing_contact_keeps_the_agency_tags() -> None:
    async with bridge_env() as env:
        token = env.sandbox.location_token(env.location_id)["access_token"]
        created = await env.http.post(
            f"{env.url}/contacts/upsert", headers={"Authorization": f"Bearer {token}", "Version": "2021-07-28"},
            json={"locationId": env.location_id, "phone": ALICE, "name": "Alice VIP", "tags": ["vip", "2024"]})
        created.raise_for_status()
        await env.customer(ALICE, "Alice")
        wa_id = await env.send(ALICE, text="hi again")
        await eventually(lambda: _has_alt(env, wa_id))
        token_headers = {"Authorization": f"Bearer {token}", "Version": "2021-07-28"}
        contact_id = created.json()["contact"]["id"]
        contact = (await env.http.get(f"{env.url}/contacts/{contact_id}", headers=token_headers)).json()["contact"]
        assert contact["tags"] == ["vip", "2024"]
        assert by_alt(await env.messages())[wa_id]["contactId"] == contact_id


def _engine_ids_transport(fail_media_sends: set[int]) -> Callable[[str], Any]:
    """Transports that behave like neonize: the engine picks every message id (ours is ignored, so the
    network cannot deduplicate a resend), and the media sends numbered in ``fail_media_sends`` (1-based,
    across the run) fail once with a dropped connection."""
    calls = {"media": 0}

    class EngineIds(SimulatedTransport):
        async def send_text(self, chat: str, text: str, *, quoted_id: str | None = None,
                            message_id: str | None = None) -> SendResult:
            return await super().send_text(chat, text, quoted_id=quoted_id, message_id=None)

        async def send_media(self, chat: str, media: OutgoingMedia, *, quoted_id: str | None = None,
                             message_id: str | None = None) -> SendResult:
            calls["media"] += 1
            if calls["media"] in fail_media_sends:
                raise WhatsAppTransientError("connection dropped while sending")
            return await super().send_media(chat, media, quoted_id=quoted_id, message_id=None)

    return lambda url: _factory_of(EngineIds, url)


def _factory_of(cls: type[SimulatedTransport], url: str) -> Callable[..., SimulatedTransport]:
    def make(session: Any, handler: Any) -> SimulatedTransport:
        return cls(session.id, url, handler, Path(session.store_path), options=TransportOptions(proxy=session.proxy))

    return make


@pytest.mark.asyncio
async def test_a_multi_attachment_reply_failing_part_way_never_resends_the_earlier_parts() -> None:
    """Issue 11 item 3: the second and third attachments fail once each; the customer still gets each
    of the three exactly once (the engine ignores our ids, so only our records can prevent a resend)."""
    options = replace(FAST_RUNTIME, bridge=BridgeOptions(session_wait_seconds=0.05))
    async with bridge_env(options, transport_factory=_engine_ids_transport({2, 4})) as env:
        await env.customer(ALICE, "Alice")
        await env.send(ALICE, text="send me the photos")
        await eventually(lambda: env.app.db.contacts.find(env.location_id, phone=ALICE))
        contact = await env.contact_for(phone=ALICE)
        files = [PNG + bytes([n]) * (n + 1) for n in range(3)]  # three distinct sizes
        urls = [await env.upload_file(f"photo{n}.png", data, "image/png", contact["id"])
                for n, data in enumerate(files)]
        ghl_id = await env.reply(contact["id"], "three photos", attachments=urls)

        def sent() -> bool:
            # every part recorded as sent (the reply's own row can read "delivered" already after the
            # first part's receipt, while the later parts are still waiting for their retry)
            rows = [env.app.db.messages.by_ghl_id(env.location_id, key)
                    for key in (ghl_id, *(part_key(ghl_id, n) for n in range(3)))]
            return all(row is not None and row.status.rank >= MessageStatus.SENT.rank for row in rows)

        await eventually(sent, 30)
        inbox = [m for m in await env.inbox(ALICE) if m.get("media")]
        assert sorted(m["media"]["size"] for m in inbox) == sorted(len(f) for f in files), inbox
        assert inbox[0]["text"] == "three photos" and not any(m["text"] for m in inbox[1:])  # caption: 1st part
        row = env.app.db.messages.by_ghl_id(env.location_id, ghl_id)
        assert row is not None and row.wa_message_id == inbox[0]["id"]  # receipts match the first part
        for index in range(3):  # each part recorded as sent
            marker = env.app.db.messages.by_ghl_id(env.location_id, part_key(ghl_id, index))
            assert marker is not None and marker.status is MessageStatus.SENT and marker.wa_message_id is None


@pytest.mark.asyncio
async def test_concurrent_replies_from_one_number_never_overlap_and_keep_the_gap() -> None:
    """Issue 11 item 4: replies to three customers run as concurrent jobs; the first send is slow to
    leave. Every send still goes through the number's pacer: never two at once, and WhatsApp sees at
    least ``send_min_gap`` between two messages (counted from the end of the previous send)."""
    gap = 0.2
    state = {"in_flight": 0, "max_in_flight": 0}

    class SlowFirstSend(SimulatedTransport):
        async def send_text(self, chat: str, text: str, *, quoted_id: str | None = None,
                            message_id: str | None = None) -> SendResult:
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            try:
                if text == "reply 0":
                    await asyncio.sleep(3 * gap)  # a slow network for the first reply
                return await super().send_text(chat, text, quoted_id=quoted_id, message_id=message_id)
            finally:
                state["in_flight"] -= 1

    runner = replace(FAST_RUNTIME.runner, concurrency=8)
    options = replace(FAST_RUNTIME, runner=runner,
                      sessions=replace(FAST_RUNTIME.sessions, send_min_gap=gap, send_jitter=0.0))
    customers = ["+4915112345601", "+4915112345602", "+4915112345603"]
    async with bridge_env(options, transport_factory=lambda url: _factory_of(SlowFirstSend, url)) as env:
        contacts = []
        for phone in customers:
            await env.customer(phone, phone[-2:])
            await env.send(phone, text="hello")
            await eventually(lambda p=phone: env.app.db.contacts.find(env.location_id, phone=p))
            contacts.append((await env.contact_for(phone=phone))["id"])
        for n, contact in enumerate(contacts):
            await env.reply(contact, f"reply {n}")

        async def all_arrived() -> list[dict[str, Any]] | None:
            got = [m for phone in customers for m in await env.inbox(phone) if str(m.get("text")).startswith("reply")]
            return got if len(got) == len(customers) else None

        got = await eventually(all_arrived, 30)
        assert state["max_in_flight"] == 1  # never two sends on one number at once
        received = sorted(m["received_at"] for m in got)
        gaps = [b - a for a, b in itertools.pairwise(received)]
        assert min(gaps) >= gap, gaps  # as WhatsApp (the network) saw them



@pytest.mark.asyncio
async def test_stopping_with_a_job_stuck_in_http_meets_the_deadline_and_keeps_the_message() -> None:
    """Issue 11 item 6: HighLevel hangs (30 s per request); quitting still ends within the runtime's
    deadline, and the customer's message — acknowledged to WhatsApp — is stored with its job released."""
    options = replace(FAST_RUNTIME, stop_deadline=1.5, runner=replace(FAST_RUNTIME.runner, stop_grace_seconds=0.3))
    async with bridge_env(options) as env:
        await env.customer(ALICE, "Alice")
        await env.http.post(f"{env.url}/_sandbox/faults", json={"latency_ms": 30_000})
        wa_id = await env.send(ALICE, text="are you open?")

        await eventually(lambda: env.app.db.jobs.count("running") > 0)
        await asyncio.wait_for(env.runtime.stop(), 10)  # liveness bound; without a deadline: 30 s+ per retry
        stored = [m for m in env.app.db.messages.recent(50) if m.wa_message_id == wa_id]
        assert len(stored) == 1  # the message WhatsApp was told we have is in the database
        assert env.app.db.jobs.count("running") == 0 and env.app.db.jobs.count("pending") >= 1  # released
        await env.http.post(f"{env.url}/_sandbox/faults", json={"latency_ms": 0})


@pytest.mark.asyncio
async def test_the_whole_bridge_runs_against_retired_versions_with_one_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 item 10: the day HighLevel retires 2021-04-15 / 2021-07-28, GHL_API_VERSIONS=*=2023-02-21
    switches every call the running bridge makes (install, inbound, contacts, replies, statuses)."""
    monkeypatch.setenv("GHL_API_VERSIONS", "*=2023-02-21")
    async with bridge_env(strict_versions=True) as env:
        await env.customer(ALICE, "Alice")
        await env.send(ALICE, text="hello under the new version")
        await eventually(lambda: env.app.db.contacts.find(env.location_id, phone=ALICE))
        contact = await env.contact_for(phone=ALICE)
        await env.reply(contact["id"], "answered under the new version")
        await eventually(lambda: _inbox_has(env, ALICE, "answered under the new version"), 30)
        stats = (await env.state())["stats"]
        assert "retired_version_refused" not in stats
        used = {key.split(" ")[1] for key in stats if key.startswith("version ")}
        assert used == {"2023-02-21"}, used


async def _inbox_has(env: Env, phone: str, text: str) -> bool:
    return any(m.get("text") == text for m in await env.inbox(phone))
