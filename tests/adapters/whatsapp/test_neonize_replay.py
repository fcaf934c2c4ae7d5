"""Replay tests: real neonize event protobufs pushed through neonize's own dispatch
(``client.event.execute`` — what the Go callback calls) from a foreign thread, arriving as domain
events on the qasync loop. No network: the engine client is created and wired, never connected."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ghl_desktop.adapters.whatsapp.neonize import MESSAGE_CODE, NeonizeTransport
from ghl_desktop.adapters.whatsapp.neonize.ingress import EventJournal
from ghl_desktop.core.errors import SessionNotConnected, WhatsAppError
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import (
    ClientOutdated,
    Connected,
    ConnectFailed,
    Disconnected,
    IncomingMessage,
    KeepAliveLost,
    KeepAliveRestored,
    LoggedOut,
    Paired,
    QrCode,
    Receipt,
    ReceiptKind,
    StreamReplaced,
    TemporarilyBanned,
    TransportEvent,
)
from tests.fakes import neonize_events as fx


class Recorder:
    """The transport's handler: records events and the thread each ran on."""

    def __init__(self, fail_ids: set[str] | None = None) -> None:
        self.events: list[TransportEvent] = []
        self.threads: set[int] = set()
        self.fail_ids = fail_ids or set()
        self.changed = asyncio.Event()

    async def __call__(self, event: TransportEvent) -> None:
        self.threads.add(threading.get_ident())
        if isinstance(event, IncomingMessage) and event.id in self.fail_ids:
            self.fail_ids.discard(event.id)
            raise RuntimeError("database unavailable")
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, count: int) -> list[TransportEvent]:
        async with asyncio.timeout(10):
            while len(self.events) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.events


def from_go_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` on a foreign (non-loop) thread, like Go's callback thread, and wait for it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="go-callback")
    thread.start()
    thread.join(10)
    assert not errors, errors


async def attached(tmp_path: Path, handler: Recorder, session: str | None = None, **kw: Any) -> NeonizeTransport:
    transport = NeonizeTransport(
        session or f"replay-{uuid.uuid4().hex[:8]}", tmp_path / "wa" / "store.db", handler, drain_quiet=0.05, **kw
    )
    await transport.attach()
    return transport


def all_message_kinds() -> list[tuple[Any, MessageKind]]:
    lid = fx.jid(fx.LID_USER, "lid")
    group = fx.jid(fx.GROUP, "g.us")
    return [
        (fx.message_event(fx.text("hi"), msg_id="M1"), MessageKind.TEXT),
        (fx.message_event(fx.extended_text("re", quoted="M1"), msg_id="M2"), MessageKind.TEXT),
        (fx.message_event(fx.image(), msg_id="M3"), MessageKind.IMAGE),
        (fx.message_event(fx.video(), msg_id="M4"), MessageKind.VIDEO),
        (fx.message_event(fx.audio(ptt=False), msg_id="M5"), MessageKind.AUDIO),
        (fx.message_event(fx.audio(ptt=True), msg_id="M6"), MessageKind.VOICE),
        (fx.message_event(fx.document(), msg_id="M7"), MessageKind.DOCUMENT),
        (fx.message_event(fx.sticker(), msg_id="M8"), MessageKind.STICKER),
        (fx.message_event(fx.reaction("M1", "❤️"), msg_id="M9"), MessageKind.REACTION),
        (fx.message_event(fx.reaction("M1", ""), msg_id="M10"), MessageKind.REACTION),
        (fx.message_event(fx.edit("M1", "hi!"), msg_id="M11"), MessageKind.EDIT),
        (fx.message_event(fx.revoke("M2"), msg_id="M12"), MessageKind.REVOKE),
        (fx.message_event(fx.location(), msg_id="M13"), MessageKind.LOCATION),
        (fx.message_event(fx.contact(), msg_id="M14"), MessageKind.CONTACT),
        (fx.message_event(fx.text("mine"), msg_id="M15", from_me=True), MessageKind.TEXT),
        (
            fx.message_event(
                fx.text("group"), msg_id="M16", chat=group, sender=lid, sender_alt=fx.jid(fx.PHONE), is_group=True
            ),
            MessageKind.TEXT,
        ),
        (fx.message_event(fx.text("lid only"), msg_id="M17", chat=lid, sender=lid), MessageKind.TEXT),
    ]


@pytest.mark.asyncio
async def test_every_message_kind_arrives_in_order_on_the_loop_thread(tmp_path: Path) -> None:
    handler = Recorder()
    transport = await attached(tmp_path, handler)
    samples = all_message_kinds()
    from_go_thread(lambda: [fx.dispatch(transport.client, ev) for ev, _ in samples])  # type: ignore[func-returns-value]

    events = await handler.wait_for(len(samples))
    assert handler.threads == {threading.get_ident()}  # hopped onto the loop (main) thread
    assert all(isinstance(e, IncomingMessage) for e in events)
    messages = [e for e in events if isinstance(e, IncomingMessage)]
    assert [m.id for m in messages] == [f"M{i}" for i in range(1, 18)]  # Go's order kept
    assert [m.kind for m in messages] == [kind for _, kind in samples]
    by_id = {m.id: m for m in messages}
    assert by_id["M2"].quoted_id == "M1"
    assert by_id["M6"].media is not None and by_id["M6"].media.seconds == 7
    assert (by_id["M9"].reaction, by_id["M10"].reaction) == ("❤️", "")
    assert (by_id["M11"].target_id, by_id["M11"].text) == ("M1", "hi!")
    assert by_id["M12"].target_id == "M2"
    assert by_id["M14"].vcard == fx.VCARD
    assert by_id["M15"].from_me
    assert by_id["M16"].is_group and by_id["M16"].sender_phone == "+491701234567"
    # not logged in: the LID store lookup is refused (no Go panic) and the LID is kept, no fake phone
    assert by_id["M17"].sender_phone is None and by_id["M17"].sender_lid == f"{fx.LID_USER}@lid"
    await transport.stop()


@pytest.mark.asyncio
async def test_receipt_and_every_connection_event(tmp_path: Path) -> None:
    handler = Recorder()
    transport = await attached(tmp_path, handler)
    conn = fx.connection_events()
    ordered = [conn[name] for name in conn]
    ordered.append(fx.receipt_event(["M1", "M2"], "DELIVERED"))
    ordered.append(fx.receipt_event(["M1"], "READ_SELF"))  # ignored: our own other device
    from_go_thread(lambda: [fx.dispatch(transport.client, ev) for ev in ordered])  # type: ignore[func-returns-value]

    events = await handler.wait_for(len(conn) + 1)
    types = [type(e) for e in events]
    assert types == [
        Connected,
        Disconnected,
        LoggedOut,
        StreamReplaced,
        TemporarilyBanned,
        ClientOutdated,
        ConnectFailed,
        KeepAliveLost,
        KeepAliveRestored,
        Paired,
        Receipt,
    ]
    receipt = events[-1]
    assert isinstance(receipt, Receipt) and receipt.kind is ReceiptKind.DELIVERED
    assert receipt.message_ids == ("M1", "M2")
    ban = events[4]
    assert isinstance(ban, TemporarilyBanned) and ban.code == 2 and ban.expires_at is not None
    await asyncio.sleep(0.05)
    assert len(handler.events) == len(conn) + 1  # the READ_SELF receipt produced nothing
    await transport.stop()


@pytest.mark.asyncio
async def test_qr_codes_arrive_through_neonizes_qr_callback(tmp_path: Path) -> None:
    handler = Recorder()
    transport = await attached(tmp_path, handler, qr_timeout=30)
    codes = [b"2@first,abc", b"2@second,def"]
    bufs = [ctypes.create_string_buffer(c) for c in codes]
    on_qr = transport.client._NewAClient__onQr  # neonize's own QR entry point (the Go qrCb)
    from_go_thread(lambda: [on_qr(0, ctypes.addressof(b)) for b in bufs])  # type: ignore[func-returns-value]

    events = await handler.wait_for(2)
    assert events == [QrCode(code="2@first,abc", expires_in=60.0), QrCode(code="2@second,def", expires_in=20.0)]
    await transport.stop()


@pytest.mark.asyncio
async def test_handler_exception_is_logged_not_swallowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    handler = Recorder(fail_ids={"BAD"})
    transport = await attached(tmp_path, handler)
    with caplog.at_level(logging.ERROR, logger="ghl.whatsapp"):
        from_go_thread(lambda: fx.dispatch(transport.client, fx.message_event(fx.text("x"), msg_id="BAD")))
        from_go_thread(lambda: fx.dispatch(transport.client, fx.message_event(fx.text("y"), msg_id="GOOD")))
        events = await handler.wait_for(1)
    assert [e.id for e in events if isinstance(e, IncomingMessage)] == ["GOOD"]
    assert any("handler failed" in r.getMessage() and r.exc_info for r in caplog.records)
    await transport.stop()


def _journal_rows(transport: NeonizeTransport) -> list[tuple[int, int]]:
    path = transport.store_path.with_name(transport.store_path.name + ".journal")
    with sqlite3.connect(path) as db:
        return [(int(r[0]), int(r[1])) for r in db.execute("SELECT id, code FROM pending")]


@pytest.mark.asyncio
async def test_journal_keeps_a_message_whose_handler_failed_and_replays_it(tmp_path: Path) -> None:
    """Durability: the raw event is journaled on the Go thread; only a successful handler clears it,
    and the next attach (a restart) hands it to the handler again."""
    handler = Recorder(fail_ids={"LOST?"})
    session = f"journal-{uuid.uuid4().hex[:8]}"
    transport = await attached(tmp_path, handler, session=session)
    from_go_thread(lambda: fx.dispatch(transport.client, fx.message_event(fx.text("keep me"), msg_id="LOST?")))
    from_go_thread(lambda: fx.dispatch(transport.client, fx.message_event(fx.text("fine"), msg_id="OK")))
    await handler.wait_for(1)
    await transport.stop()
    assert [code for _, code in _journal_rows(transport)] == [MESSAGE_CODE]  # only the failed one

    again = Recorder()
    restarted = await attached(tmp_path, again, session=session)
    assert restarted.client is transport.client  # one NewAClient per number for the process's life
    events = await again.wait_for(1)
    assert isinstance(events[0], IncomingMessage) and (events[0].id, events[0].text) == ("LOST?", "keep me")
    await restarted.stop()
    assert _journal_rows(restarted) == []


def test_a_done_after_close_does_not_reopen_the_journal(tmp_path: Path) -> None:
    """done() runs on a worker thread (off the loop); one that arrives after stop() closed the journal
    leaves the row for the next start instead of opening a connection nobody closes."""
    journal = EventJournal(tmp_path / "j.journal")
    first, second = journal.append(MESSAGE_CODE, b"a"), journal.append(MESSAGE_CODE, b"b")
    journal.done(first)
    journal.close()
    journal.done(second)  # late: after the close
    assert journal._conn is None
    journal.reopen()  # the transport's next attach
    assert [row_id for row_id, _, _ in journal.pending()] == [second]
    journal.done(second)
    assert journal.pending() == []
    journal.close()
    assert journal._conn is None


@pytest.mark.asyncio
async def test_stop_waits_for_messages_already_delivered(tmp_path: Path) -> None:
    """stop() drains: messages the engine handed over are processed before it returns."""
    slow_done: list[str] = []

    async def slow(event: TransportEvent) -> None:
        if isinstance(event, IncomingMessage):
            await asyncio.sleep(0.05)
            slow_done.append(event.id)

    transport = NeonizeTransport(f"drain-{uuid.uuid4().hex[:8]}", tmp_path / "s.db", slow, drain_quiet=0.05)
    await transport.attach()
    from_go_thread(
        lambda: [fx.dispatch(transport.client, fx.message_event(fx.text(str(i)), msg_id=f"D{i}")) for i in range(5)]  # type: ignore[func-returns-value]
    )
    await transport.stop()
    assert slow_done == [f"D{i}" for i in range(5)]
    assert _journal_rows(transport) == []


@pytest.mark.asyncio
async def test_store_calls_refused_while_not_logged_in(tmp_path: Path) -> None:
    """Trap 1 (in-process half): nothing reaches the Go store before login; sends say why."""
    transport = await attached(tmp_path, Recorder())
    assert await transport.get_me() is None
    assert await transport.resolve_lid(f"{fx.LID_USER}@lid") is None
    with pytest.raises(SessionNotConnected):
        await transport.send_text(f"{fx.PHONE}@s.whatsapp.net", "hello")
    with pytest.raises(SessionNotConnected):
        await transport.mark_read(f"{fx.PHONE}@s.whatsapp.net", f"{fx.PHONE}@s.whatsapp.net", ["M1"])
    await transport.stop()


@pytest.mark.asyncio
async def test_engine_callback_returns_before_our_handler_ran_and_the_journal_has_it(tmp_path: Path) -> None:
    """The durability finding, observed: neonize's callback (what Go's CallbackFunction waits on)
    returns as soon as the handler is *scheduled*, so nothing on the engine side waits for our
    database write. The journal row exists before the callback returns."""
    gate = asyncio.Event()
    seen: list[str] = []

    async def slow_store(event: TransportEvent) -> None:
        await gate.wait()  # the "database write" has not happened yet
        if isinstance(event, IncomingMessage):
            seen.append(event.id)

    transport = NeonizeTransport(f"ack-{uuid.uuid4().hex[:6]}", tmp_path / "a.db", slow_store, drain_quiet=0.02)
    await transport.attach()
    from_go_thread(lambda: fx.dispatch(transport.client, fx.message_event(fx.text("x"), msg_id="EARLY")))
    # the Go-side callback has returned (the engine moves on / has acked) while our handler waits
    await asyncio.sleep(0.05)
    assert seen == []
    assert [code for _, code in _journal_rows(transport)] == [MESSAGE_CODE]
    gate.set()
    await transport.stop()
    assert seen == ["EARLY"] and _journal_rows(transport) == []


@pytest.mark.asyncio
async def test_engine_logging_is_not_at_debug(tmp_path: Path) -> None:
    from neonize.utils.enum import LogLevel

    logging.getLogger("neonize.utils.log").setLevel(logging.NOTSET)
    transport = await attached(tmp_path, Recorder())
    level = logging.getLogger("neonize.utils.log").level
    assert level == logging.WARNING
    assert LogLevel.from_logging(level).level == b"WARN"  # what neonize passes to Go at connect
    assert logging.getLogger("whatsmeow").getEffectiveLevel() >= logging.INFO
    await transport.stop()


@pytest.mark.asyncio
async def test_one_number_cannot_switch_engine_store_within_a_process(tmp_path: Path) -> None:
    session = f"store-{uuid.uuid4().hex[:6]}"
    first = await attached(tmp_path, Recorder(), session=session)
    other = NeonizeTransport(session, tmp_path / "elsewhere" / "store.db", Recorder())
    with pytest.raises(WhatsAppError, match="already runs on"):
        await other.attach()
    await first.stop()
