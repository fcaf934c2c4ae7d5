"""The sessions service: every linked WhatsApp number's life, from QR code to logout.

Why one service owns it: the UI, the tray and the bridge must agree on where each number stands, so
the state lives in one place (the repository), moves only along ``core.models.SESSION_TRANSITIONS``,
and every change is stored AND published as :class:`SessionChanged`. The transports only report
what happened; this service decides what to do about it:

* transient trouble (a drop, an unreachable network, keep-alives lost for too long) → RECONNECTING
  and a redial after a capped, jittered, growing delay; the delay resets once connected;
* final states (logged out, temporarily banned, replaced, client outdated, failed) → the transport
  is stopped and nothing redials until the user acts (Link again / Retry), or, for a ban, until a
  start-up after the ban expired;
* unpaired sessions show rotating QR codes (:class:`SessionQr`) or a phone pairing code
  (:class:`SessionPairCode`) and fail with "QR code expired — press Link again" after a timeout;
* every message a number sends waits for that number's pacing slot (minimum gap + jitter).

Incoming messages and receipts go to ``on_message`` / ``on_receipt`` and are awaited before the
transport acknowledges them to WhatsApp: when no sink is registered, or the sink fails, the message
stays unacknowledged and WhatsApp (or the simulated network) delivers it again on the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ghl_desktop.core.convert import phone_from_jid
from ghl_desktop.core.errors import (
    GhlDesktopError,
    SessionLoggedOut,
    SessionNotConnected,
    StorageError,
    WhatsAppError,
)
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import SessionState, WhatsAppSession, can_transition
from ghl_desktop.core.ports import AsyncSessionRepository, SessionRepository
from ghl_desktop.core.storage_health import StorageMonitor, is_disk_full
from ghl_desktop.core.tasks import BackgroundTasks
from ghl_desktop.core.whatsapp import (
    CallEvent,
    ClientOutdated,
    Connected,
    ConnectFailed,
    Disconnected,
    EventHandler,
    HistorySync,
    IncomingMessage,
    KeepAliveLost,
    KeepAliveRestored,
    LoggedOut,
    OutgoingMedia,
    PairCode,
    Paired,
    QrCode,
    Receipt,
    SendResult,
    StreamReplaced,
    TemporarilyBanned,
    TransportEvent,
    WhatsAppTransport,
)
from ghl_desktop.services.backoff import Backoff
from ghl_desktop.services.events import SessionChanged, SessionPairCode, SessionQr, SessionRemoved
from ghl_desktop.services.pacing import PacedSender

log = logging.getLogger("ghl.sessions")

T = TypeVar("T")

#: Builds the transport for a session (its store path and proxy are on the session row).
TransportFactory = Callable[[WhatsAppSession, EventHandler], WhatsAppTransport]
MessageSink = Callable[[WhatsAppSession, IncomingMessage], Awaitable[None]]
ReceiptSink = Callable[[WhatsAppSession, Receipt], Awaitable[None]]
CallSink = Callable[[WhatsAppSession, CallEvent], Awaitable[None]]
HistorySink = Callable[[WhatsAppSession, HistorySync], Awaitable[None]]

QR_EXPIRED = "QR code expired — press Link again"
LINK_INTERRUPTED = "Linking was interrupted — press Link again"
_LIVE = frozenset(
    {SessionState.CONNECTING, SessionState.CONNECTED, SessionState.RECONNECTING, SessionState.PHONE_OFFLINE}
)
#: states in which WhatsApp accepts our messages (keep-alive trouble does not stop the server)
_SENDABLE = frozenset({SessionState.CONNECTED, SessionState.PHONE_OFFLINE})


class NoMessageSink(WhatsAppError):
    """A message arrived before anything could store it; it stays unacknowledged on WhatsApp."""

    transient = True


@dataclass(frozen=True)
class SessionOptions:
    """Timings and pacing. Defaults follow WhatsApp's behaviour; tests shrink them."""

    qr_timeout: float = 180.0  # whatsmeow shows 6 codes: 60 s + 5 × 20 s
    pair_code_wait: float = 30.0  # how long a pairing-code request waits for the connection
    backoff_initial: float = 2.0
    backoff_max: float = 300.0
    backoff_multiplier: float = 2.0
    backoff_jitter: float = 0.2
    phone_offline_grace: float = 180.0  # keep-alives lost this long → drop and redial
    send_min_gap: float = 1.5
    send_jitter: float = 1.5
    store_suffix: str = ".db"
    logout_timeout: float = 10.0
    #: quitting: every number is stopped at once, and whatever is still stopping after this long is
    #: cancelled (neonize can take ~18 s to disconnect; its store is consistent at any point)
    close_timeout: float = 4.0


class _Runtime:
    """The live parts of one session: its transport and timers."""

    def __init__(self, session_id: str, backoff: Backoff) -> None:
        self.session_id = session_id
        self.transport: WhatsAppTransport | None = None
        self.backoff = backoff
        self.closed = False
        self.qr_task: asyncio.Task[None] | None = None
        self.reconnect_task: asyncio.Task[None] | None = None
        self.offline_task: asyncio.Task[None] | None = None
        self.first_qr = asyncio.Event()
        #: the session's state as this service last stored or read it (transport_for answers from it,
        #: without a database read per lookup: this service is the only writer of a live session's state)
        self.state: SessionState | None = None
        #: the session's row as this service last stored or read it: an incoming message needs the
        #: session's id and location (which never change), not a database read per message
        self.row: WhatsAppSession | None = None

    def cancel_timers(self) -> None:
        current = asyncio.current_task()
        for task in (self.qr_task, self.reconnect_task, self.offline_task):
            if task is not None and task is not current and not task.done():
                task.cancel()
        self.qr_task = self.reconnect_task = self.offline_task = None


class _InlineSessions:
    """A bare :class:`SessionRepository` as an :class:`AsyncSessionRepository` whose calls run inline
    (a service built without the storage executor: tests, tools)."""

    def __init__(self, repo: SessionRepository) -> None:
        self._repo = repo

    async def create(self, session: WhatsAppSession) -> WhatsAppSession:
        return self._repo.create(session)

    async def get(self, session_id: str) -> WhatsAppSession | None:
        return self._repo.get(session_id)

    async def list(self, location_id: str | None = None) -> list[WhatsAppSession]:
        return self._repo.list(location_id)

    async def set_state(self, session_id: str, state: SessionState, detail: str | None = None,
                        state_until: datetime | None = None) -> WhatsAppSession:
        return self._repo.set_state(session_id, state, detail, state_until)

    async def set_identity(self, session_id: str, phone: str | None, jid: str | None) -> WhatsAppSession:
        return self._repo.set_identity(session_id, phone, jid)

    async def delete(self, session_id: str) -> None:
        self._repo.delete(session_id)


class SessionService:
    def __init__(
        self,
        repo: SessionRepository,
        transport_factory: TransportFactory,
        bus: EventBus,
        *,
        sessions_dir: Path,
        options: SessionOptions | None = None,
        rng: random.Random | None = None,
        aio: AsyncSessionRepository | None = None,
    ) -> None:
        self.repo = repo
        #: the same repository as awaitable calls run off the loop (``db.aio.sessions``); the per-message
        #: lookups use it. Without one (tests over a bare repository) they call ``repo`` inline.
        self.aio: AsyncSessionRepository = aio if aio is not None else _InlineSessions(repo)
        self.transport_factory = transport_factory
        self.bus = bus
        #: durable-write health, shared with the webhook intake by the runtime (core.storage_health)
        self.storage = StorageMonitor(bus)
        self.sessions_dir = Path(sessions_dir)
        #: a number's engine store held outside its files (a cluster's PostgreSQL schema per number,
        #: adapters/storage/engine_store.py): forgotten with them on logout, link again and remove
        self.forget_store: Callable[[str], Awaitable[object]] | None = None
        self.options = options or SessionOptions()
        self.on_message: MessageSink | None = None
        self.on_receipt: ReceiptSink | None = None
        #: calls (several events per call id) and history-sync chunks; dropped when None
        self.on_call: CallSink | None = None
        self.on_history: HistorySink | None = None
        #: a cluster worker (services/ownership.py): connect only the numbers this says it holds; None: all
        self.may_connect: Callable[[str], bool] | None = None
        self.on_created: Callable[[str], Awaitable[object]] | None = None
        self._rng = rng or random.Random()
        self._runtimes: dict[str, _Runtime] = {}
        self._pacers: dict[str, PacedSender] = {}
        self._tasks = BackgroundTasks(log, "sessions background task")
        #: per session: a state change's read-check-write runs under it, so changes stay in the order
        #: they were asked for and none decides on a state another change is still writing
        self._locks: dict[str, asyncio.Lock] = {}

    # --- reading ------------------------------------------------------------------------------------

    def get(self, session_id: str) -> WhatsAppSession | None:
        """A synchronous read (the widgets' models); code on the loop awaits ``aio.get`` instead."""
        return self.repo.get(session_id)

    def list_sessions(self, location_id: str | None = None) -> list[WhatsAppSession]:
        """A synchronous read (the widgets' models); code on the loop awaits ``aio.list`` instead."""
        return self.repo.list(location_id)

    def transport_for(self, session_id: str) -> WhatsAppTransport | None:
        """The transport of a session WhatsApp accepts messages on right now, else None."""
        rt = self._runtimes.get(session_id)
        if rt is None or rt.closed or rt.state not in _SENDABLE:
            return None
        return rt.transport

    # --- lifecycle ----------------------------------------------------------------------------------

    async def create_session(
        self, location_id: str, *, proxy: str | None = None, pair_phone: str | None = None
    ) -> WhatsAppSession:
        """A new unpaired session for a location: QR codes start arriving as :class:`SessionQr`.
        With ``pair_phone`` a pairing code for that number is requested too (:class:`SessionPairCode`)."""
        session_id = uuid.uuid4().hex
        await asyncio.to_thread(self.sessions_dir.mkdir, parents=True, exist_ok=True)
        store = self.sessions_dir / f"{session_id}{self.options.store_suffix}"
        session = await self.aio.create(
            WhatsAppSession(
                id=session_id,
                location_id=location_id,
                state=SessionState.WAITING_FOR_SCAN,
                store_path=str(store),
                proxy=proxy,
                detail="Scan the QR code with WhatsApp on your phone",
            )
        )
        log.info("session %s created for location %s", session_id, location_id)
        if self.on_created is not None:  # a cluster: this process holds the new number while it links
            await self.on_created(session_id)
        self.bus.publish(SessionChanged(session))
        rt = self._new_runtime(session)
        self._start_qr_timer(rt)
        await self._start(rt)
        if pair_phone is not None:
            await self.pair_by_phone(session_id, pair_phone)
        return await self._require(session_id)

    async def pair_by_phone(self, session_id: str, phone: str) -> str:
        """Ask WhatsApp for a pairing code for ``phone`` (the alternative to scanning)."""
        session = await self._require(session_id)
        rt = self._runtimes.get(session_id)
        if session.state is not SessionState.WAITING_FOR_SCAN or rt is None or rt.transport is None:
            raise WhatsAppError(f"session is {session.state.value}; press Link again to get a new code")
        try:
            await asyncio.wait_for(rt.first_qr.wait(), self.options.pair_code_wait)
        except TimeoutError as exc:
            raise SessionNotConnected("WhatsApp is not reachable yet; try again in a moment") from exc
        code = await rt.transport.pair_phone(phone)
        await self._set_state(session_id, SessionState.WAITING_FOR_SCAN,
                              detail=f"Enter the pairing code on the phone {phone} "
                                     "(Linked devices → Link with phone number)")
        self.bus.publish(SessionPairCode(session_id, code))
        return code

    async def link_again(self, session_id: str) -> None:
        """Start over with a fresh device (after logout, QR timeout, failure): new QR codes."""
        session = await self._require(session_id)
        if not can_transition(session.state, SessionState.WAITING_FOR_SCAN):
            raise WhatsAppError(f"cannot link again while {session.state.value}; log out first")
        await self._retire(session_id)
        await self._delete_store(session)
        await self._set_state(session_id, SessionState.WAITING_FOR_SCAN,
                              detail="Scan the QR code with WhatsApp on your phone")
        rt = self._new_runtime(await self._require(session_id))
        self._start_qr_timer(rt)
        await self._start(rt)

    async def retry(self, session_id: str) -> None:
        """Connect a paired session again after a final state (ban expired, other client gone…)."""
        session = await self._require(session_id)
        if session.state in _LIVE:
            return
        if not can_transition(session.state, SessionState.CONNECTING):
            raise WhatsAppError(f"cannot retry from {session.state.value}")
        await self._retire(session_id)
        await self._set_state(session_id, SessionState.CONNECTING, detail="Connecting")
        await self._start(self._new_runtime(await self._require(session_id)))

    async def resume_all(self) -> list[WhatsAppSession]:
        """At start-up: reconnect every linked session; unfinished linking becomes FAILED."""
        resumed: list[WhatsAppSession] = []
        now = datetime.now(UTC)
        for session in await self.aio.list():
            if session.id in self._runtimes:
                continue
            if self.may_connect is not None and not self.may_connect(session.id):
                continue  # another worker's number (a cluster: services/ownership.py)
            ban_over = (session.state is SessionState.TEMPORARILY_BANNED and session.state_until is not None
                        and session.state_until <= now)
            if session.state in _LIVE or ban_over:
                await self._set_state(session.id, SessionState.CONNECTING, detail="Resuming")
                rt = self._new_runtime(await self._require(session.id))
                await self._start(rt)
                resumed.append(await self._require(session.id))
            elif session.state is SessionState.WAITING_FOR_SCAN:
                await self._set_state(session.id, SessionState.FAILED, detail=LINK_INTERRUPTED)
        return resumed

    async def connect_held(self) -> list[WhatsAppSession]:
        """A cluster worker got numbers (services/ownership.py): connect the ones it holds now."""
        return await self.resume_all()

    async def release(self, session_id: str) -> None:
        """Disconnect a number here without changing its stored state: another worker takes it over
        (its lease moved). Unacknowledged messages stay on WhatsApp for the next connection."""
        await self._retire(session_id)

    async def logout(self, session_id: str) -> None:
        """Unlink the number from this app (the phone's Linked devices list loses it)."""
        session = await self._require(session_id)
        rt = self._runtimes.get(session_id)
        if session.state is SessionState.WAITING_FOR_SCAN:
            await self._retire(session_id)
            await self._set_state(session_id, SessionState.FAILED, detail="Linking cancelled")
            return
        if rt is not None and rt.transport is not None and session.state in _LIVE:
            try:
                await asyncio.wait_for(rt.transport.logout(), self.options.logout_timeout)
            except (TimeoutError, GhlDesktopError) as exc:
                log.warning("session %s: logout on WhatsApp failed (%s); forgetting it locally", session_id, exc)
        await self._retire(session_id)
        await self._delete_store(session)
        if can_transition(session.state, SessionState.LOGGED_OUT):
            await self._set_state(session_id, SessionState.LOGGED_OUT, detail="Logged out from this app")

    async def remove(self, session_id: str) -> None:
        """Log out (when possible), delete the engine store and forget the session."""
        session = await self.aio.get(session_id)
        if session is None:
            return
        if session.state in _LIVE:
            with contextlib.suppress(GhlDesktopError):
                await self.logout(session_id)
        await self._retire(session_id)
        await self._delete_store(session)
        async with self._lock(session_id):  # after any state change still being written
            await self.aio.delete(session_id)
        self._locks.pop(session_id, None)
        self._pacers.pop(session_id, None)
        log.info("session %s removed", session_id)
        self.bus.publish(SessionRemoved(session_id))

    async def close(self, within: float | None = None) -> None:
        """Stop every transport and timer; used on quit. All numbers stop concurrently; what has not
        finished after ``within`` seconds (default ``options.close_timeout``) is cancelled, so quitting never
        waits on a slow engine. Nothing is lost by that: a message is acknowledged to WhatsApp only
        once stored, so an unacknowledged one is delivered again on the next start."""
        limit = self.options.close_timeout if within is None else within
        retiring = [asyncio.ensure_future(self._retire(session_id)) for session_id in list(self._runtimes)]
        pending = {*retiring, *self._tasks}  # plus transport stops / background work still running
        if not pending:
            return
        _done, late = await asyncio.wait(pending, timeout=max(0.0, limit))
        if late:
            log.warning("%d WhatsApp number(s) still stopping after %.1f s; cancelled", len(late), limit)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # --- sending ------------------------------------------------------------------------------------

    async def send(self, session_id: str, call: Callable[[WhatsAppTransport], Awaitable[T]]) -> T:
        """Run one send on the session's transport in its pacing slot."""
        session = await self._require(session_id)
        if session.state is SessionState.LOGGED_OUT:
            raise SessionLoggedOut("this WhatsApp number was logged out; link it again")
        transport = self.transport_for(session_id)
        if transport is None:
            raise SessionNotConnected(f"this WhatsApp number is {session.state.value.replace('_', ' ')}")
        return await self._pacer(session_id).run(lambda: call(transport))

    async def send_text(self, session_id: str, chat: str, text: str, *, quoted_id: str | None = None,
                        message_id: str | None = None) -> SendResult:
        return await self.send(session_id, lambda t: t.send_text(chat, text, quoted_id=quoted_id,
                                                                 message_id=message_id))

    async def send_media(self, session_id: str, chat: str, media: OutgoingMedia, *, quoted_id: str | None = None,
                         message_id: str | None = None) -> SendResult:
        return await self.send(session_id, lambda t: t.send_media(chat, media, quoted_id=quoted_id,
                                                                  message_id=message_id))

    async def send_reaction(self, session_id: str, chat: str, target_id: str, emoji: str, *,
                            from_me: bool) -> SendResult:
        return await self.send(session_id, lambda t: t.send_reaction(chat, target_id, emoji, from_me=from_me))

    async def edit(self, session_id: str, chat: str, target_id: str, text: str) -> SendResult:
        return await self.send(session_id, lambda t: t.edit(chat, target_id, text))

    async def revoke(self, session_id: str, chat: str, target_id: str) -> SendResult:
        return await self.send(session_id, lambda t: t.revoke(chat, target_id))

    def _pacer(self, session_id: str) -> PacedSender:
        pacer = self._pacers.get(session_id)
        if pacer is None:
            pacer = PacedSender(self.options.send_min_gap, self.options.send_jitter, rng=self._rng)
            self._pacers[session_id] = pacer
        return pacer

    # --- internals: runtime -------------------------------------------------------------------------

    async def _require(self, session_id: str) -> WhatsAppSession:
        session = await self.aio.get(session_id)
        if session is None:
            raise WhatsAppError(f"unknown session {session_id}")
        return session

    def _new_runtime(self, session: WhatsAppSession) -> _Runtime:
        o = self.options
        rt = _Runtime(
            session.id,
            Backoff(o.backoff_initial, o.backoff_max, o.backoff_multiplier, o.backoff_jitter, rng=self._rng),
        )

        async def handler(event: TransportEvent) -> None:
            await self._on_event(rt, event)

        rt.state = session.state
        rt.row = session
        rt.transport = self.transport_factory(session, handler)
        self._runtimes[session.id] = rt
        return rt

    async def _retire(self, session_id: str) -> None:
        """Stop and forget a session's transport and timers."""
        rt = self._runtimes.pop(session_id, None)
        if rt is None:
            return
        rt.closed = True
        rt.cancel_timers()
        if rt.transport is not None:
            with contextlib.suppress(Exception):
                await rt.transport.stop()

    async def _start(self, rt: _Runtime) -> None:
        assert rt.transport is not None
        try:
            await rt.transport.start()
        except GhlDesktopError as exc:
            if exc.transient:
                await self._schedule_reconnect(rt, f"could not connect: {exc}")
            else:
                await self._fail(rt, SessionState.FAILED, f"Could not start: {exc}")
        except Exception as exc:  # an engine error we have no type for: keep trying, visibly
            log.exception("session %s: transport start failed", rt.session_id)
            await self._schedule_reconnect(rt, f"could not connect: {exc}")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    @staticmethod
    def _unlink_store(store_path: str) -> None:
        base = Path(store_path)
        for path in (base, *(base.with_name(base.name + s) for s in ("-wal", "-shm", "-journal", ".tmp"))):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def _delete_store(self, session: WhatsAppSession) -> None:
        """The number's device forgotten here: its store files and, in a cluster, its store schema. A
        schema that cannot be dropped now is logged; the next link of the number starts a new device
        all the same (``link_again`` drops it first)."""
        await asyncio.to_thread(self._unlink_store, session.store_path)  # file system: off the loop
        if self.forget_store is None:
            return
        try:
            await self.forget_store(session.id)
        except Exception as exc:  # the database: logout / remove go on, the log says what is left
            log.warning("session %s: its engine store in the database could not be dropped (%s)", session.id, exc)

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        return lock

    def _change(self, session_id: str, state: SessionState, detail: str | None,
                state_until: datetime | None) -> asyncio.Task[WhatsAppSession | None]:
        """Start a state change now (its place in the session's order is taken at once); it runs to
        the end even if whoever asked for it is cancelled, so a half-done write never leaves the lock."""
        return self._spawn(self._apply(session_id, state, detail, state_until))

    async def _apply(self, session_id: str, state: SessionState, detail: str | None,
                     state_until: datetime | None) -> WhatsAppSession | None:
        async with self._lock(session_id):
            current = await self.aio.get(session_id)
            rt = self._runtimes.get(session_id)
            if current is None:
                return None
            if rt is not None:
                rt.state, rt.row = current.state, current
            if current.state is not state and not can_transition(current.state, state):
                log.warning("session %s: transition %s → %s not allowed; ignored", session_id, current.state, state)
                return current
            if (current.state, current.detail, current.state_until) == (state, detail, state_until):
                return current
            updated = await self.aio.set_state(session_id, state, detail, state_until)
            if rt is not None:
                rt.state, rt.row = updated.state, updated
            log.info("session %s: %s%s", session_id, state.value, f" ({detail})" if detail else "")
            self.bus.publish(SessionChanged(updated))
            return updated

    async def _set_state(self, session_id: str, state: SessionState, *, detail: str | None = None,
                         state_until: datetime | None = None) -> WhatsAppSession | None:
        """Store and publish a state change (read, transition check and write on the storage executor,
        in order with the session's other changes)."""
        return await asyncio.shield(self._change(session_id, state, detail, state_until))

    async def _state(self, rt: _Runtime) -> SessionState | None:
        async with self._lock(rt.session_id):  # after the changes already asked for
            session = await self.aio.get(rt.session_id)
        rt.state = None if session is None else session.state
        rt.row = session
        return rt.state

    def _stop_transport_later(self, rt: _Runtime) -> None:
        """Stop from outside the transport's own event handler (which must not stop itself)."""
        transport = rt.transport
        if transport is not None:
            self._spawn(transport.stop())

    async def _fail(self, rt: _Runtime, state: SessionState, detail: str, until: datetime | None = None) -> None:
        rt.cancel_timers()
        changed = self._change(rt.session_id, state, detail, until)
        self._stop_transport_later(rt)
        await asyncio.shield(changed)

    def _start_qr_timer(self, rt: _Runtime) -> None:
        async def expire() -> None:
            await asyncio.sleep(self.options.qr_timeout)
            rt.qr_task = None
            if rt.closed or self._runtimes.get(rt.session_id) is not rt:
                return
            state = await self._state(rt)
            if rt.closed:
                return
            if state is not None and not state.is_final and state is not SessionState.CONNECTED:
                log.info("session %s: no scan within %.0f s", rt.session_id, self.options.qr_timeout)
                await self._fail(rt, SessionState.FAILED, QR_EXPIRED)

        if rt.qr_task is None:
            rt.qr_task = self._spawn(expire())

    async def _schedule_reconnect(self, rt: _Runtime, reason: str) -> None:
        if rt.closed or (rt.reconnect_task is not None and not rt.reconnect_task.done()):
            return
        delay = rt.backoff.next_delay()
        attempt = rt.backoff.attempts
        changed = self._change(rt.session_id, SessionState.RECONNECTING,
                               f"{reason}; retrying in {delay:.3g} s (attempt {attempt})", None)

        async def redial() -> None:
            await asyncio.wait({changed})  # stored before the delay starts (not cancelled with this timer)
            await asyncio.sleep(delay)
            rt.reconnect_task = None
            if rt.closed or await self._state(rt) is not SessionState.RECONNECTING or rt.closed:
                return
            log.info("session %s: reconnect attempt %d", rt.session_id, attempt)
            await self._start(rt)

        rt.reconnect_task = self._spawn(redial())  # set before any await: a second call schedules nothing
        await asyncio.shield(changed)

    # --- internals: transport events ----------------------------------------------------------------

    async def _on_event(self, rt: _Runtime, event: TransportEvent) -> None:
        if isinstance(event, IncomingMessage):
            await self._deliver(rt, event)
            return
        if isinstance(event, Receipt):
            await self._deliver_receipt(rt, event)
            return
        if isinstance(event, (CallEvent, HistorySync)):
            await self._deliver_other(rt, event)
            return
        if rt.closed or self._runtimes.get(rt.session_id) is not rt:
            return  # a retired transport's late news
        state = await self._state(rt)
        if rt.closed or state is None or state.is_final:
            return  # retired meanwhile; final states wait for the user (Link again / Retry)
        await self._on_connection_event(rt, state, event)

    async def _on_connection_event(self, rt: _Runtime, state: SessionState, event: TransportEvent) -> None:
        sid = rt.session_id
        if isinstance(event, QrCode):
            detail = ((await self._require(sid)).detail if state is SessionState.WAITING_FOR_SCAN
                      else "Scan the QR code with WhatsApp on your phone")
            await self._set_state(sid, SessionState.WAITING_FOR_SCAN, detail=detail)
            self._start_qr_timer(rt)
            rt.first_qr.set()
            self.bus.publish(SessionQr(sid, event.code, event.expires_in))
        elif isinstance(event, PairCode):
            self.bus.publish(SessionPairCode(sid, event.code))
        elif isinstance(event, Paired):
            if rt.qr_task is not None:
                rt.qr_task.cancel()
                rt.qr_task = None
            updated = await self.aio.set_identity(sid, event.phone, event.jid)
            rt.row = updated
            self.bus.publish(SessionChanged(updated))
            await self._set_state(sid, SessionState.CONNECTING, detail="Paired — connecting")
        elif isinstance(event, Connected):
            if rt.qr_task is not None:
                rt.qr_task.cancel()
                rt.qr_task = None
            if rt.offline_task is not None:
                rt.offline_task.cancel()
                rt.offline_task = None
            rt.backoff.reset()
            session = await self._require(sid)
            if event.jid and session.jid != event.jid:
                updated = await self.aio.set_identity(sid, session.phone or phone_from_jid(event.jid), event.jid)
                rt.row = updated
                self.bus.publish(SessionChanged(updated))
            await self._set_state(sid, SessionState.CONNECTED, detail=None)
        elif isinstance(event, Disconnected):
            await self._schedule_reconnect(
                rt, f"connection lost ({event.reason})" if event.reason else "connection lost")
        elif isinstance(event, ConnectFailed):
            if not event.permanent:
                await self._schedule_reconnect(rt, event.reason)
            elif "QR" in event.reason:
                await self._fail(rt, SessionState.FAILED, QR_EXPIRED)
            else:
                await self._fail(rt, SessionState.FAILED, f"Could not connect: {event.reason}")
        elif isinstance(event, LoggedOut):
            await self._fail(rt, SessionState.LOGGED_OUT, "Unlinked on the phone — press Link again")
        elif isinstance(event, StreamReplaced):
            await self._fail(rt, SessionState.REPLACED,
                       "Another WhatsApp client took over this number — press Retry to take it back")
        elif isinstance(event, TemporarilyBanned):
            until = event.expires_at
            when = f" until {until:%Y-%m-%d %H:%M} UTC" if until else ""
            await self._fail(rt, SessionState.TEMPORARILY_BANNED,
                       f"WhatsApp temporarily banned this number (code {event.code}){when}", until)
        elif isinstance(event, ClientOutdated):
            await self._fail(rt, SessionState.CLIENT_OUTDATED, "WhatsApp refuses this app version — update the app")
        elif isinstance(event, KeepAliveLost):
            if state is SessionState.CONNECTED:
                await self._set_state(sid, SessionState.PHONE_OFFLINE, detail="WhatsApp is not answering keep-alives")
                self._start_offline_timer(rt)
        elif isinstance(event, KeepAliveRestored):
            if rt.offline_task is not None:
                rt.offline_task.cancel()
                rt.offline_task = None
            if state is SessionState.PHONE_OFFLINE:
                await self._set_state(sid, SessionState.CONNECTED, detail=None)

    def _start_offline_timer(self, rt: _Runtime) -> None:
        async def force_reconnect() -> None:
            await asyncio.sleep(self.options.phone_offline_grace)
            rt.offline_task = None
            if rt.closed or await self._state(rt) is not SessionState.PHONE_OFFLINE or rt.closed:
                return
            if rt.transport is not None:
                await rt.transport.stop()
            await self._schedule_reconnect(rt, "keep-alives lost for too long")

        if rt.offline_task is None:
            rt.offline_task = self._spawn(force_reconnect())

    async def _row(self, rt: _Runtime) -> WhatsAppSession | None:
        """The session's row for an incoming event: the one this service holds for a live session (it
        is the only writer of it), read again once the session is closed (removed: None, dropped)."""
        if rt.row is None or rt.closed:
            rt.row = await self.aio.get(rt.session_id)
        return rt.row

    async def _deliver(self, rt: _Runtime, message: IncomingMessage) -> None:
        session = await self._row(rt)
        if session is None:
            log.info("message %s for removed session %s dropped", message.id, rt.session_id)
            return
        if self.on_message is None:
            raise NoMessageSink("no message sink registered; leaving the message on WhatsApp")
        await self._store_retrying(rt, lambda: self.on_message(session, message))  # type: ignore[misc]

    async def _store_retrying(self, rt: _Runtime, store: Callable[[], Awaitable[None]]) -> None:
        """Storage failures (disk full, database unavailable) are retried until the write works — the
        message is held here, unacknowledged, meanwhile (issue 10.8) — instead of waiting for a restart.
        The problem is announced on the bus (core.storage_health)."""
        delay = 1.0
        while True:
            try:
                await store()
            except StorageError as exc:
                if rt.closed or not (exc.transient or is_disk_full(exc)):
                    raise
                self.storage.failed(exc)
                log.warning("session %s: storing an incoming event failed; retrying in %.0f s", rt.session_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.storage.ok()
            return

    async def _deliver_receipt(self, rt: _Runtime, receipt: Receipt) -> None:
        session = await self._row(rt)
        if session is None:
            return
        if self.on_receipt is None:
            raise NoMessageSink("no receipt sink registered; leaving the receipt on WhatsApp")
        await self._store_retrying(rt, lambda: self.on_receipt(session, receipt))  # type: ignore[misc]

    async def _deliver_other(self, rt: _Runtime, event: CallEvent | HistorySync) -> None:
        """Calls and history chunks: awaited (with the storage retry) before the transport acks them;
        without a sink they are dropped, not left on WhatsApp (nothing would ever take them)."""
        session = await self._row(rt)
        sink = self.on_call if isinstance(event, CallEvent) else self.on_history
        if session is None or sink is None:
            log.debug("session %s: %s dropped (no sink)", rt.session_id, type(event).__name__)
            return
        await self._store_retrying(rt, lambda: sink(session, event))  # type: ignore[arg-type]
