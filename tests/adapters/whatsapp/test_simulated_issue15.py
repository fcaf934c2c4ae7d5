"""SimulatedTransport: polls, votes, view-once, ephemeral, calls and history sync (issue 15) over loopback."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.models import MessageKind, WhatsAppSession
from ghl_desktop.core.whatsapp import CallEvent, CallOutcome, HistorySync, IncomingMessage
from tests.adapters.whatsapp.test_simulated import ALICE, LINKED, paired_transport
from tests.sandbox.wa_harness import running_network, wait_until
from tests.services.test_sessions import harness

BOB = "+4917099990000"


@pytest.mark.asyncio
async def test_poll_vote_view_once_and_ephemeral_arrive_as_incoming_messages(tmp_path: Path) -> None:
    async with running_network() as network:
        transport, rec = await paired_transport(network, tmp_path / "s.json")
        try:
            await network.add_phone(ALICE, "Alice")
            poll_id = await network.phone_send(ALICE, {"to": LINKED, "kind": "poll",
                                                       "poll": {"name": "Lunch?", "options": ["Pizza", "Sushi"]}})
            await network.phone_send(ALICE, {"to": LINKED, "kind": "poll_vote", "target_id": poll_id,
                                             "options": ["Sushi"]})
            gif = base64.b64encode(b"GIF89a").decode()
            await network.phone_send(ALICE, {"to": LINKED, "kind": "view_once",
                                             "media": {"data": gif, "mimetype": "image/gif"}})
            await network.phone_send(ALICE, {"to": LINKED, "text": "gone soon", "ephemeral": True})
            await network.phone_send(ALICE, {"to": LINKED, "text": "plain"})
            await rec.next(IncomingMessage, 5)
            poll, vote, once, eph, plain = rec.of(IncomingMessage)
            assert (poll.id, poll.kind, poll.poll_name, poll.poll_options) == (
                poll_id, MessageKind.POLL, "Lunch?", ("Pizza", "Sushi"))
            assert poll.sender_phone == ALICE and poll.push_name == "Alice"
            assert (vote.kind, vote.target_id, vote.poll_selected) == (MessageKind.POLL_VOTE, poll_id, ("Sushi",))
            assert (once.kind, once.view_once, once.ephemeral) == (MessageKind.IMAGE, True, False)
            assert once.media is not None and await transport.download(once.media) == b"GIF89a"
            assert (eph.text, eph.ephemeral, eph.expiration, eph.view_once) == ("gone soon", True, 604800, False)
            assert (plain.ephemeral, plain.expiration, plain.view_once, plain.from_history) == (
                False, None, False, False)
        finally:
            await transport.stop()


@pytest.mark.asyncio
async def test_a_call_is_offered_then_ends_once_and_can_be_rejected(tmp_path: Path) -> None:
    async with running_network() as network:
        transport, rec = await paired_transport(network, tmp_path / "s.json")
        try:
            await network.add_phone(ALICE, "Alice")
            missed = await network.post(f"/_sandbox/phones/{ALICE}/call",
                                        {"to": LINKED, "video": True, "outcome": "missed"}, expect=201)
            await rec.next(CallEvent, 2)
            offer, end = rec.of(CallEvent)
            assert (offer.call_id, offer.outcome, offer.video, offer.caller_phone, offer.push_name) == (
                missed["id"], CallOutcome.OFFERED, True, ALICE, "Alice")
            assert offer.caller == "4917011112222@s.whatsapp.net"
            # the terminate carries the offer's video flag, phone and push name
            assert (end.call_id, end.outcome, end.video, end.caller_phone, end.push_name) == (
                missed["id"], CallOutcome.MISSED, True, ALICE, "Alice")
            for outcome, expected in [("rejected", CallOutcome.REJECTED), ("answered", CallOutcome.ANSWERED)]:
                before = len(rec.of(CallEvent))
                data = await network.post(f"/_sandbox/phones/{ALICE}/call",
                                          {"to": LINKED, "outcome": outcome}, expect=201)
                await rec.next(CallEvent, before + 2)
                got = [(e.call_id, e.outcome, e.video) for e in rec.of(CallEvent)[before:]]
                assert got == [(data["id"], CallOutcome.OFFERED, False), (data["id"], expected, False)]
            await transport.reject_call(offer.caller, missed["id"])
            sent = await network.get(f"/_sandbox/phones/{ALICE}/sent")
            assert ("call", "rejected") in [(s["kind"], s["status"]) for s in sent]
        finally:
            await transport.stop()


@pytest.mark.asyncio
async def test_history_sync_chunks_arrive_as_history_with_original_dates(tmp_path: Path) -> None:
    messages = [{"from_me": i % 2 == 0, "text": f"m{i}", "timestamp": f"2026-01-01T10:{i:02d}:00Z"}
                for i in range(25)]
    async with running_network() as network:
        await network.post(f"/_sandbox/whatsapp/{LINKED}/history",
                           {"chats": [{"with": ALICE, "messages": messages},
                                      {"with": BOB, "messages": messages[:3]}]}, expect=201)
        transport, rec = await paired_transport(network, tmp_path / "s.json")
        try:
            await rec.next(HistorySync, 2)
            chunks = rec.of(HistorySync)
            assert [(c.chunk_order, c.progress) for c in chunks] == [(0, 50), (1, 100)]
            alice = [m for c in chunks for h in c.chats if h.phone == ALICE for m in h.messages]
            assert [m.text for m in alice] == [f"m{i}" for i in range(25)]
            first = alice[0]
            assert first.from_history and first.from_me and first.kind is MessageKind.TEXT
            assert first.timestamp == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
            assert first.chat == "4917011112222@s.whatsapp.net" and first.sender_phone == LINKED
            second = alice[1]
            assert not second.from_me and second.sender_phone == ALICE and second.sender == first.chat
            assert len({m.id for m in alice}) == 25
            bob = [m.text for c in chunks for h in c.chats if h.phone == BOB for m in h.messages]
            assert bob == ["m0", "m1", "m2"]
            assert not rec.of(IncomingMessage)  # history never arrives as live messages
        finally:
            await transport.stop()


@pytest.mark.asyncio
async def test_the_sessions_service_hands_calls_and_history_to_their_sinks_then_acks(
    db: Database, tmp_path: Path
) -> None:
    messages = [{"from_me": False, "text": "old", "timestamp": "2026-01-01T10:00:00Z"}]
    async with harness(db, tmp_path) as h:
        await h.network.post(f"/_sandbox/whatsapp/{LINKED}/history",
                             {"chats": [{"with": ALICE, "messages": messages}]}, expect=201)
        calls: list[CallEvent] = []
        batches: list[HistorySync] = []

        async def on_call(_session: WhatsAppSession, event: CallEvent) -> None:
            calls.append(event)

        async def on_history(_session: WhatsAppSession, batch: HistorySync) -> None:
            batches.append(batch)

        h.service.on_call = on_call
        h.service.on_history = on_history
        await h.linked_session()
        await wait_until(lambda: batches, what="history chunk")
        assert [m.text for c in batches[0].chats for m in c.messages] == ["old"] and h.inbox == []
        await h.network.add_phone(ALICE, "Alice")
        call = await h.network.post(f"/_sandbox/phones/{ALICE}/call", {"to": LINKED, "outcome": "rejected"},
                                    expect=201)
        await wait_until(lambda: len(calls) >= 2, what="offer and terminate")
        assert [(c.call_id, c.outcome) for c in calls] == [(call["id"], CallOutcome.OFFERED),
                                                            (call["id"], CallOutcome.REJECTED)]
        await wait_until(lambda: h.network.net.linked[LINKED].queue == [], what="acked")
        # without a sink a call is dropped, not left on the network forever
        h.service.on_call = None
        await h.network.post(f"/_sandbox/phones/{ALICE}/call", {"to": LINKED, "outcome": "missed"}, expect=201)
        await wait_until(lambda: h.network.net.linked[LINKED].queue == [], what="acked without a sink")
        assert len(calls) == 2
