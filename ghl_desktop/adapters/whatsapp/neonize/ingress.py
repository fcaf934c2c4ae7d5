"""Incoming events: the engine's callbacks → journal (write-ahead, fsynced on the Go thread) → one
ordered pump → normalized domain events for the handler; QR codes and their timeout.

The journal: Write-ahead journal for incoming WhatsApp events (durability at the engine edge).

Why: whatsmeow acknowledges a message to WhatsApp's server before neonize hands it to Python (see
the module docstring of ``neonize.transport``). Writing the raw event bytes here, fsynced, on the
Go callback thread — before the event is scheduled on the event loop — means a crash anywhere
after this point is recovered on the next start: rows are deleted only after the app's handler
(the durable database write) returned, and leftover rows are replayed. Delivery becomes
at-least-once; the handler deduplicates by WhatsApp message id.

SQLite with ``synchronous=FULL`` (one fsync per append) in its own file, mode 0600 (message
content is personal data). Thread-safe: appends come from Go threads, deletes from the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghl_desktop.adapters.whatsapp.neonize.engine import MESSAGE_CODE, RECEIPT_CODE, EngineStatus
from ghl_desktop.core import wa_normalize as wn
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import (
    CallEvent,
    Connected,
    ConnectFailed,
    EventHandler,
    HistorySync,
    IncomingMessage,
    LoggedOut,
    Paired,
    QrCode,
    StreamReplaced,
    TransportEvent,
)


def journaled_codes() -> frozenset[int]:
    """Event codes written to the journal before dispatch: messages, receipts, calls and history
    sync chunks (whatsmeow does not send any of them again once the Go callback returned)."""
    from neonize.events import (
        EVENT_TO_INT,
        CallAcceptEv,
        CallOfferEv,
        CallOfferNoticeEv,
        CallTerminateEv,
        HistorySyncEv,
    )

    extra = (HistorySyncEv, CallOfferEv, CallOfferNoticeEv, CallAcceptEv, CallTerminateEv)
    return frozenset({MESSAGE_CODE, RECEIPT_CODE, *(EVENT_TO_INT[e] for e in extra)})


class EventJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        #: set by :meth:`close`, cleared by :meth:`reopen` (the transport's next attach): a ``done()``
        #: still on its way from a worker thread must not open the connection again after the close
        self._closed = False

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, (re)opened on first use (a stopped transport may be started again)."""
        if self._conn is None:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "code INTEGER NOT NULL, payload BLOB NOT NULL)"
            )
            self._conn = conn
        return self._conn

    def append(self, code: int, payload: bytes) -> int:
        with self._lock:
            cursor = self._db.execute("INSERT INTO pending (code, payload) VALUES (?, ?)", (code, payload))
            return int(cursor.lastrowid or 0)

    def done(self, row_id: int) -> None:
        """Clear a handled event's row. Runs on a worker thread (``asyncio.to_thread``): the lock may be
        held by the engine's thread while it fsyncs an append. After :meth:`close` it does nothing (the
        row stays and is replayed on the next start; the handler deduplicates by message id)."""
        with self._lock:
            if self._closed:
                return
            self._db.execute("DELETE FROM pending WHERE id = ?", (row_id,))

    def reopen(self) -> None:
        """Allow :meth:`done` again (a stopped transport is started again); the connection opens on use."""
        with self._lock:
            self._closed = False

    def pending(self) -> list[tuple[int, int, bytes]]:
        """Rows whose handler never finished, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, code, payload FROM pending ORDER BY id").fetchall()
        return [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


#: the engine events that are calls (normalized by ``wa_normalize.normalize_call``)
CALL_EVENTS = ("CallOffer", "CallOfferNotice", "CallAccept", "CallTerminate")
#: polls remembered for naming their votes (a vote names options only by SHA-256 hash)
POLLS_KEPT = 4096


class PollOptions:
    """Poll message id → option names, from the POLL messages seen (live and history); bounded,
    least recently used out first. In memory: a vote on a poll from before a restart names its
    options by hash (hex) unless history sync brought the poll again."""

    def __init__(self, limit: int = POLLS_KEPT) -> None:
        self.limit = limit
        self._polls: OrderedDict[str, list[str]] = OrderedDict()

    def remember(self, poll_id: str, options: tuple[str, ...] | list[str]) -> None:
        self._polls[poll_id] = list(options)
        self._polls.move_to_end(poll_id)
        while len(self._polls) > self.limit:
            self._polls.popitem(last=False)

    def get(self, poll_id: str) -> list[str] | None:
        options = self._polls.get(poll_id)
        if options is not None:
            self._polls.move_to_end(poll_id)
        return options

    def __len__(self) -> int:
        return len(self._polls)


class Ingress:
    """The transport's incoming side (mixed into ``NeonizeTransport``, which sets these attributes)."""

    session_id: str
    log: logging.Logger
    status: EngineStatus
    _handler: EventHandler
    _client: Any
    _journal: EventJournal | None
    _loop: asyncio.AbstractEventLoop | None
    _inbox: asyncio.Queue[tuple[int, Any, int | None]] | None
    _qr_timer: asyncio.TimerHandle | None
    _qr_timeout: float
    _qr_index: int
    _qr_task: asyncio.Task[None] | None
    _logged_in: bool
    _stopping: bool
    _last_event_at: float
    _busy: bool
    _pending_row: threading.local
    _polls: PollOptions | None = None

    if TYPE_CHECKING:
        @property
        def logged_in(self) -> bool: ...
        async def get_me(self) -> str | None: ...
        async def resolve_lid(self, lid: str) -> str | None: ...
        async def stop(self) -> None: ...

    @property
    def poll_options(self) -> PollOptions:
        """The poll-options cache (created on first use)."""
        if self._polls is None:
            self._polls = PollOptions()
        return self._polls

    def _install_journal_hook(self, client: Any) -> None:
        """Journal message/receipt bytes on the Go callback thread before neonize schedules them."""
        event = client.event
        original = type(event).execute.__get__(event)
        journal = self._journal
        transport = self
        journaled = journaled_codes()

        def execute(uuid: int, binary: int, size: int, code: int) -> None:
            row_id: int | None = None
            if journal is not None and code in journaled:
                import ctypes

                try:
                    row_id = journal.append(code, ctypes.string_at(binary, size))
                except Exception:
                    transport.log.exception("could not journal an incoming event")
            transport._pending_row.row_id = row_id
            try:
                original(uuid, binary, size, code)
            except Exception:
                transport.log.exception("neonize failed to dispatch event code %s", code)
                raise
            finally:
                transport._pending_row.row_id = None

        event.execute = execute

    def _register_handlers(self, client: Any, ev: Any) -> None:
        """Every handler before connect (the subscription mask goes to Go at connect)."""
        for ev_type in (
            ev.MessageEv,
            ev.ReceiptEv,
            ev.ConnectedEv,
            ev.DisconnectedEv,
            ev.LoggedOutEv,
            ev.StreamReplacedEv,
            ev.TemporaryBanEv,
            ev.ClientOutdatedEv,
            ev.ConnectFailureEv,
            ev.KeepAliveTimeoutEv,
            ev.KeepAliveRestoredEv,
            ev.PairStatusEv,
            ev.StreamErrorEv,
            ev.HistorySyncEv,
            ev.CallOfferEv,
            ev.CallOfferNoticeEv,
            ev.CallAcceptEv,
            ev.CallTerminateEv,
        ):
            client.event(ev_type)(self._make_handler(ev_type))
        client.event.qr(self._guard(self._on_qr))

    def _guard(self, fn: Callable[..., Awaitable[None]]) -> Callable[..., Coroutine[Any, Any, None]]:
        """Handler exceptions vanish inside neonize (nobody reads the future): log them."""

        async def guarded(*args: Any) -> None:
            try:
                await fn(*args)
            except Exception:
                self.log.exception("WhatsApp event handler failed")

        return guarded

    def _make_handler(self, ev_type: type) -> Callable[[Any, Any], Awaitable[None]]:
        from neonize.events import EVENT_TO_INT

        code = EVENT_TO_INT[ev_type]

        async def on_event(event: Any, row_id: int | None) -> None:
            # a task on our loop, started in Go's order; enqueueing before any await keeps that order
            self._enqueue(code, event, row_id)

        guarded = self._guard(on_event)

        def schedule(_client: Any, event: Any) -> Awaitable[None]:
            # called on the Go callback thread by neonize to build the coroutine it schedules:
            # pick up the journal row written for this very event on this thread
            return guarded(event, getattr(self._pending_row, "row_id", None))

        return schedule

    def _enqueue(self, code: int, event: Any, row_id: int | None) -> None:
        assert self._loop is not None
        self._last_event_at = self._loop.time()
        if self._inbox is None:
            self.log.warning("event code %s arrived before attach; dropped", code)
            return
        self._inbox.put_nowait((code, event, row_id))

    def _enqueue_raw(self, code: int, payload: bytes, row_id: int) -> bool:
        """Queue a journal row for replay; False when it is unreadable (the caller drops the row)."""
        from neonize.events import INT_TO_EVENT

        try:
            event = INT_TO_EVENT[code].FromString(payload)
        except Exception:
            self.log.exception("journal entry %d is unreadable; dropping it", row_id)
            return False
        self._enqueue(code, event, row_id)
        return True

    async def _replay_journal(self) -> None:
        """Queue the rows a previous run left behind (read on a worker thread: the file and its lock)."""
        journal = self._journal
        if journal is None:
            return
        journal.reopen()
        for row_id, code, payload in await asyncio.to_thread(journal.pending):
            if not self._enqueue_raw(code, payload, row_id):
                await asyncio.to_thread(journal.done, row_id)

    async def _pump(self) -> None:
        """One event at a time, in arrival order; the journal row is cleared after the handler."""
        assert self._inbox is not None
        inbox = self._inbox
        while True:
            code, event, row_id = await inbox.get()
            self._busy = True  # until the row is cleared too: stop() drains before it closes the journal
            try:
                try:
                    ok = await self._process(code, event)
                except Exception:
                    self.log.exception("failed to process WhatsApp event code %s", code)
                    ok = False
                if row_id is not None and self._journal is not None and ok:
                    # off the loop: the engine's thread may hold the journal's lock while it fsyncs an append
                    try:
                        await asyncio.to_thread(self._journal.done, row_id)
                    except sqlite3.Error:
                        self.log.exception("could not clear journal entry %d (it is replayed on the next start)",
                                           row_id)
            finally:
                self._busy = False

    async def _process(self, code: int, event: Any) -> bool:
        """Normalize and hand one event to the handler; False keeps its journal row for a replay."""
        name = event.DESCRIPTOR.name
        if code == MESSAGE_CODE:
            message = await self._normalize_message(event)
            if message is None:
                return True
            return await self._emit(message)
        if code == RECEIPT_CODE:
            receipt = wn.normalize_receipt(event)
            return True if receipt is None else await self._emit(receipt)
        if name == "HistorySync":
            return await self._emit(self._normalize_history(event, await self.get_me()))
        if name in CALL_EVENTS:
            call = await self._normalize_call(event)
            return True if call is None else await self._emit(call)
        if name == "StreamError":
            self.log.warning("stream error from WhatsApp: code %s", getattr(event, "Code", "?"))
            return True
        domain = wn.normalize_connection_event(event)
        if domain is None:
            return True
        self._track_state(domain)
        if isinstance(domain, Connected):
            # logged in now, so the store may be read: tell the service which number this is
            try:
                domain = Connected(jid=await self.get_me())
            except Exception:
                self.log.warning("could not read our own number after connecting", exc_info=True)
        return await self._emit(domain)

    def _track_state(self, event: TransportEvent) -> None:
        if isinstance(event, Connected):
            self._logged_in = True
            self._cancel_qr_timer()
            self.status = EngineStatus.CONNECTED
        elif isinstance(event, Paired):
            self._cancel_qr_timer()
        elif isinstance(event, LoggedOut):
            self._logged_in = False
            self.status = EngineStatus.LOGGED_OUT
        elif isinstance(event, StreamReplaced):
            self.status = EngineStatus.RECONNECTING
        elif type(event).__name__ in ("Disconnected", "KeepAliveLost"):
            if self.status is EngineStatus.CONNECTED:
                self.status = EngineStatus.RECONNECTING
        elif type(event).__name__ == "KeepAliveRestored" and self._logged_in:
            self.status = EngineStatus.CONNECTED

    async def _normalize_message(self, event: Any) -> IncomingMessage | None:
        source = event.Info.MessageSource
        lids: dict[str, str | None] = {}
        for jid in (source.Sender, source.Chat):
            text = wn.jid_to_str(jid)
            has_alt = wn.jid_to_str(source.SenderAlt) or wn.jid_to_str(source.RecipientAlt)
            if text and wn.is_lid(text) and not has_alt and text not in lids:
                lids[text] = await self.resolve_lid(text)
        hashes: list[bytes] | None = None
        if wn.is_poll_vote(event):
            hashes = await self._decrypt_poll_vote(event)
        message = wn.normalize_message(
            event, resolve_lid=lids.get, decrypt_poll_vote=lambda _ev: hashes, poll_options=self.poll_options.get
        )
        if message is not None and message.kind is MessageKind.POLL:
            self.poll_options.remember(message.id, message.poll_options)
        return message

    async def _decrypt_poll_vote(self, event: Any) -> list[bytes] | None:
        """The option hashes of a vote, decrypted by the engine (whatsmeow ``DecryptPollVote``, with
        the poll's message secret from its store; neonize runs it via ``asyncio.to_thread``, off
        the loop). None when it cannot: not logged in (a store call would abort Go) or the poll's
        secret is unknown."""
        if not self.logged_in:
            return None
        try:
            vote = await self._client.decrypt_poll_vote(event)
        except Exception as exc:
            self.log.info("could not decrypt a poll vote: %s", exc)
            return None
        return [bytes(h) for h in vote.selectedOptions]

    def _normalize_history(self, event: Any, own_jid: str | None) -> HistorySync:
        batch = wn.normalize_history_sync(event, own_jid=own_jid)
        for chat in batch.chats:
            for message in chat.messages:
                if message.kind is MessageKind.POLL:
                    self.poll_options.remember(message.id, message.poll_options)
        return batch

    async def _normalize_call(self, event: Any) -> CallEvent | None:
        meta = getattr(event, "basicCallMeta", None)
        caller = wn.jid_to_str(getattr(meta, "callCreator", None)) if meta is not None else None
        alt = wn.jid_to_str(getattr(meta, "callCreatorAlt", None)) if meta is not None else None
        resolved: dict[str, str | None] = {}
        if caller and wn.is_lid(caller) and not alt:
            resolved[caller] = await self.resolve_lid(caller)
        return wn.normalize_call(event, resolve_lid=resolved.get)

    async def _emit(self, event: TransportEvent) -> bool:
        try:
            await self._handler(event)
        except Exception:
            self.log.exception("handler failed for %s", type(event).__name__)
            return False
        return True

    async def _on_qr(self, _client: Any, data: bytes) -> None:
        code = data.decode() if isinstance(data, bytes) else str(data)
        lifetime = wn.qr_lifetime(self._qr_index)
        if self._qr_index == 0:
            self._arm_qr_timer()
        self._qr_index += 1
        self.status = EngineStatus.WAITING_FOR_SCAN
        await self._emit(QrCode(code=code, expires_in=lifetime))

    def _arm_qr_timer(self) -> None:
        """whatsmeow's own QR timeout only reaches neonize's no-op login-status hook: use ours."""
        assert self._loop is not None
        self._cancel_qr_timer()
        self._qr_timer = self._loop.call_later(self._qr_timeout, self._on_qr_timeout)

    def _cancel_qr_timer(self) -> None:
        if self._qr_timer is not None:
            self._qr_timer.cancel()
            self._qr_timer = None

    def _on_qr_timeout(self) -> None:
        self._qr_timer = None
        if self._logged_in or self._stopping:
            return
        self.log.info("QR code not scanned within %.0fs; stopping the session", self._qr_timeout)
        assert self._loop is not None

        async def timeout() -> None:
            await self._emit(ConnectFailed(reason="QR code not scanned in time", permanent=True))
            await self.stop()

        self._qr_task = self._loop.create_task(self._guard(timeout)())
