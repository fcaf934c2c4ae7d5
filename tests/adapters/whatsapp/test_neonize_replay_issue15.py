"""Replay tests for issue 15: real neonize protobufs (history sync, call offer/terminate, poll creation
and vote, view-once, ephemeral) pushed through neonize's own dispatch from a foreign thread, each
asserting the core event the transport emits. No network: the engine client is never connected."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from neonize.events import EVENT_TO_INT, CallTerminateEv
from neonize.proto import Neonize_pb2 as N
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as E

from ghl_desktop.adapters.whatsapp.neonize import NeonizeTransport
from ghl_desktop.adapters.whatsapp.neonize.ingress import PollOptions
from ghl_desktop.core import wa_normalize as wn
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import CallEvent, CallOutcome, HistorySync, IncomingMessage, TransportEvent
from tests.adapters.whatsapp.test_neonize_replay import Recorder, _journal_rows, attached, from_go_thread
from tests.fakes import neonize_events as fx

ALICE = f"{fx.PHONE}@s.whatsapp.net"


def dispatch_all(transport: NeonizeTransport, *events: Any) -> None:
    def run() -> None:
        for ev in events:
            fx.dispatch(transport.client, ev)

    from_go_thread(run)


@pytest.mark.asyncio
async def test_call_offer_notice_accept_and_terminate_become_call_events(tmp_path: Path) -> None:
    handler = Recorder()
    transport = await attached(tmp_path, handler)
    try:
        notice = fx.fill_required(N.CallOfferNotice(basicCallMeta=fx.call_meta("C3"), media="video",
                                                       type="group", data=N.Node(Tag="offer_notice")))
        accept = fx.fill_required(N.CallAccept(basicCallMeta=fx.call_meta("C2"), data=N.Node(Tag="accept")))
        dispatch_all(transport, fx.call_offer("C1", video=True), fx.call_terminate("C1", "timeout"),
                     fx.call_offer("C2"), accept, fx.call_terminate("C2", "reject"), notice)
        events = await handler.wait_for(6)
        calls = [e for e in events if isinstance(e, CallEvent)]
        assert [(c.call_id, c.outcome, c.video) for c in calls] == [
            ("C1", CallOutcome.OFFERED, True),
            ("C1", CallOutcome.MISSED, False),  # a terminate carries no media: the bridge keeps the offer's
            ("C2", CallOutcome.OFFERED, False),
            ("C2", CallOutcome.ANSWERED, False),
            ("C2", CallOutcome.REJECTED, False),
            ("C3", CallOutcome.OFFERED, True),
        ]
        assert {(c.caller, c.caller_phone) for c in calls} == {(ALICE, "+" + fx.PHONE)}
        assert calls[0].timestamp == datetime.fromtimestamp(1_700_000_200, tz=UTC)
    finally:
        await transport.stop()


@pytest.mark.asyncio
async def test_history_sync_chunk_becomes_one_history_batch(tmp_path: Path) -> None:
    handler = Recorder()
    transport = await attached(tmp_path, handler)
    try:
        other = f"{fx.OTHER_PHONE}@s.whatsapp.net"
        ev = fx.history_sync({ALICE: [("H2", True, 1_690_000_100, "our answer"),
                                      ("H1", False, 1_690_000_000, "first question")],
                              other: [("H3", False, 1_690_000_050, "hi")]}, progress=70)
        dispatch_all(transport, ev)
        (batch,) = await handler.wait_for(1)
        assert isinstance(batch, HistorySync)
        assert (batch.sync_type, batch.chunk_order, batch.progress) == ("INITIAL_BOOTSTRAP", 1, 70)
        by_chat = {c.chat: c for c in batch.chats}
        alice = by_chat[ALICE]
        assert alice.phone == "+" + fx.PHONE and [m.id for m in alice.messages] == ["H1", "H2"]  # oldest first
        first, second = alice.messages
        assert (first.text, first.from_me, first.from_history, first.kind) == (
            "first question", False, True, MessageKind.TEXT)
        assert first.timestamp == datetime.fromtimestamp(1_690_000_000, tz=UTC)
        assert (second.from_me, second.from_history) == (True, True)
        assert [m.text for m in by_chat[other].messages] == ["hi"]
        assert not [e for e in handler.events if isinstance(e, IncomingMessage)]
    finally:
        await transport.stop()


@pytest.mark.asyncio
async def test_view_once_and_ephemeral_messages(tmp_path: Path) -> None:
    handler = Recorder()
    transport = await attached(tmp_path, handler)
    try:
        dispatch_all(transport, fx.message_event(fx.view_once_image("only once"), msg_id="V1"),
                     fx.message_event(fx.ephemeral_text("vanishing", 86400), msg_id="V2"),
                     fx.message_event(fx.text("plain"), msg_id="V3"))
        once, eph, plain = await handler.wait_for(3)
        assert isinstance(once, IncomingMessage) and isinstance(eph, IncomingMessage)
        assert isinstance(plain, IncomingMessage)
        assert (once.id, once.kind, once.text, once.view_once, once.ephemeral) == (
            "V1", MessageKind.IMAGE, "only once", True, False)
        assert once.media is not None and once.media.handle  # downloadable once through the engine
        assert (eph.id, eph.kind, eph.text, eph.ephemeral, eph.expiration, eph.view_once) == (
            "V2", MessageKind.TEXT, "vanishing", True, 86400, False)
        assert (plain.view_once, plain.ephemeral, plain.expiration) == (False, False, None)
    finally:
        await transport.stop()


@pytest.mark.asyncio
async def test_poll_creation_then_a_vote_decrypted_by_the_engine_names_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = Recorder()
    transport = await attached(tmp_path, handler)
    seen: list[Any] = []

    async def decrypt_poll_vote(message: Any) -> E.PollVoteMessage:
        # neonize's AClient.decrypt_poll_vote(Message) -> PollVoteMessage (whatsmeow DecryptPollVote)
        seen.append(message)
        return E.PollVoteMessage(selectedOptions=[wn.poll_option_hash("Monday 10am")])

    try:
        # the vote path needs a logged-in engine (a store call otherwise aborts Go): pretend only that
        monkeypatch.setattr(NeonizeTransport, "logged_in", property(lambda self: True))
        monkeypatch.setattr(transport.client, "decrypt_poll_vote", decrypt_poll_vote)
        dispatch_all(transport, fx.message_event(fx.poll_creation(), msg_id="POLL1"),
                     fx.message_event(fx.poll_update("POLL1"), msg_id="VOTE1"),
                     fx.message_event(fx.poll_update("UNSEEN"), msg_id="VOTE2"))
        poll, vote, blind = await handler.wait_for(3)
        assert isinstance(poll, IncomingMessage) and isinstance(vote, IncomingMessage)
        assert isinstance(blind, IncomingMessage)
        assert (poll.kind, poll.poll_name, poll.poll_options) == (
            MessageKind.POLL, "When can you come?", tuple(fx.POLL_OPTIONS))
        assert transport.poll_options.get("POLL1") == fx.POLL_OPTIONS  # cached from the POLL message
        assert (vote.kind, vote.target_id, vote.poll_selected) == (MessageKind.POLL_VOTE, "POLL1", ("Monday 10am",))
        # the engine got the very MessageEv neonize parsed (what whatsmeow decrypts)
        assert [m.Info.ID for m in seen] == ["VOTE1", "VOTE2"]
        # a poll this transport never saw: the option is named by its hash, never guessed
        assert blind.kind is MessageKind.POLL_VOTE and blind.poll_selected == (
            wn.poll_option_hash("Monday 10am").hex(),)
    finally:
        await transport.stop()


@pytest.mark.asyncio
async def test_a_vote_the_engine_cannot_decrypt_is_unsupported_not_guessed(tmp_path: Path) -> None:
    handler = Recorder()
    transport = await attached(tmp_path, handler)  # not logged in: no store call is made
    try:
        dispatch_all(transport, fx.message_event(fx.poll_creation(), msg_id="POLL1"),
                     fx.message_event(fx.poll_update("POLL1"), msg_id="VOTE1"))
        _, vote = await handler.wait_for(2)
        assert isinstance(vote, IncomingMessage)
        assert (vote.kind, vote.target_id, vote.poll_selected) == (MessageKind.UNSUPPORTED, "POLL1", ())
    finally:
        await transport.stop()


def test_poll_options_cache_is_bounded_least_recently_used_out() -> None:
    cache = PollOptions(limit=2)
    cache.remember("A", ["a"])
    cache.remember("B", ["b"])
    assert cache.get("A") == ["a"]  # A is now the most recently used
    cache.remember("C", ["c"])
    assert (cache.get("A"), cache.get("B"), cache.get("C"), len(cache)) == (["a"], None, ["c"], 2)


class FailFirstCall(Recorder):
    async def __call__(self, event: TransportEvent) -> None:
        if isinstance(event, CallEvent) and not getattr(self, "failed", False):
            self.failed = True
            raise RuntimeError("database unavailable")
        await super().__call__(event)


@pytest.mark.asyncio
async def test_calls_and_history_are_journaled_until_the_handler_stored_them(tmp_path: Path) -> None:
    session = f"journal15-{uuid.uuid4().hex[:8]}"
    handler = FailFirstCall()
    transport = await attached(tmp_path, handler, session=session)
    dispatch_all(transport, fx.call_terminate("C9", "timeout"),
                 fx.history_sync({ALICE: [("H1", False, 1_690_000_000, "old")]}))
    await handler.wait_for(1)
    await transport.stop()
    assert [code for _, code in _journal_rows(transport)] == [EVENT_TO_INT[CallTerminateEv]]

    again = Recorder()
    restarted = await attached(tmp_path, again, session=session)
    (event,) = await again.wait_for(1)
    assert isinstance(event, CallEvent) and (event.call_id, event.outcome) == ("C9", CallOutcome.MISSED)
    await restarted.stop()
    assert _journal_rows(restarted) == []
