"""The real WhatsApp engine (neonize 0.5.2 / whatsmeow) behind the ``WhatsAppTransport`` port.

This module owns every neonize quirk so nothing above it has to know them (see
/work/shared/neonize-notes.md): one ``NewAClient`` per number for the life of the process, a quoted
0600 store path, handlers registered before ``connect`` and wrapped so failures are logged, Go
callbacks hopped onto the running (qasync) loop, store calls only while logged in, verbatim text
(no accidental mentions), a big default executor, ``stop()`` awaited (never a task cancel) and our
own retry loop for the first connect.

Durability at the WhatsApp edge — what the engine does. Read from source: neonize
``goneonize/main.go`` at krypton-byte/neonize@fcd96cb (the installed 0.5.2 ``.so`` is a different
build: its line numbers differ a little, e.g. ``GetMe`` panics at main.go:2345 there) and
whatsmeow at e277b766ab33, the version neonize's ``go.mod`` pins.

1. whatsmeow processes incoming stanzas one at a time (``client.go`` ``handlerQueueLoop`` l. 874).
   For a message, ``message.go`` ``decryptMessages`` (l. 316) decrypts and calls
   ``handleDecryptedMessage`` (l. 448 → l. 1140), which dispatches ``events.Message``
   synchronously to the Go event handlers (``client.go`` ``dispatchEvent`` l. 936). Only then, at
   l. 484–492, it sends the delivery receipt (``receipt.go`` ``sendMessageReceipt`` l. 278) — the
   acknowledgement after which the server drops the message. By default that runs in a new
   goroutine (``receipt.go`` ``backgroundIfAsyncAck`` l. 106: ``go fn()`` unless the client's
   ``SynchronousAck`` field is set). A handler registered with ``AddEventHandlerWithSuccessStatus``
   that returns false suppresses the ack (``message.go`` l. 454–457) so the server redelivers.
2. neonize uses plain ``AddEventHandler`` (``main.go`` l. 1097; whatsmeow wraps it to always report
   success, ``client.go`` l. 781–786). Its ``*events.Message`` case (l. 801–809) only pushes the
   encoded event into a 100-slot buffered Go channel (``eventChan``, l. 625) and returns. A separate
   loop, ``CallbackFunction`` (l. 2526–2550), drains that channel into the ctypes callback —
   Python's ``Event.execute`` (``neonize/aioze/events.py``) — which parses the bytes and only
   *schedules* our handler with ``asyncio.run_coroutine_threadsafe``, without waiting for it.
3. neonize 0.5.2 exposes neither ``SynchronousAck`` nor a success-status handler (``nm -D`` on the
   shipped ``.so`` lists no such export); and even with ``SynchronousAck`` the Go handler returns
   as soon as the event is in the channel, so the ack would still precede Python.

So **a message is acknowledged to WhatsApp before our Python handler has run, let alone stored
it.** The ack goroutine starts as soon as the event is buffered in Go; Python sees the event
later (channel, ctypes call, protobuf parse, loop hop, then the handler's database write). A crash,
kill or power loss in that window loses the message for good (the server dropped it, the Signal
ratchet advanced). On ``Stop`` Go also drops whatever is still buffered (``Stop`` l. 587–605
cancels the context ``CallbackFunction`` selects on and forgets the channel).
``test_engine_callback_returns_before_our_handler_ran_and_the_journal_has_it`` shows the Python
half: the engine's callback returns while our handler is still waiting.

What this transport does to shrink the window (closing it needs a change on the Go side:
``SynchronousAck`` plus a handler that blocks until Python confirms):

* a write-ahead journal (``neonize_journal``): the raw bytes of every message and receipt event
  are written and fsynced to a per-session SQLite file **on the Go callback thread**, before the
  event is handed to the loop; the row is deleted only after our handler (the durable database
  write) returned without error. ``attach()``/``start()`` replays rows left by a crash first.
  Delivery becomes at-least-once (the handler deduplicates by message id). What remains: a hard
  kill between whatsmeow buffering the event and our fsync (the channel hand-off plus one ctypes
  call — microseconds unless the 100-slot channel is backed up behind a slow callback);
* events are handled strictly in arrival order, one at a time, each handler awaited before the
  next; a failing handler leaves its journal row for the next start;
* ``stop()`` first disconnects (when logged in), lets the channel drain into Python until it has
  been quiet for ``drain_quiet`` seconds, waits for the handler in flight, and only then calls
  Go's ``Stop`` (which would drop the buffer).

Two more engine behaviours this adapter works around (same sources): a QR timeout only reaches
neonize's no-op login-status hook (we run our own timer), and a session stopped while its QR code
is showing leaves ``Neonize()`` blocked for ever in ``for evt := range qrChan`` (``main.go``
l. 1143; whatsmeow ``qrchan.go`` l. 112 returns on an expected disconnect without closing the
channel) — hence daemon executor threads (``neonize_executor``) and our own ``Stop`` replacing
neonize's at-exit finalizer, so the app still quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from ghl_desktop.adapters.whatsapp.neonize_executor import ensure_executor
from ghl_desktop.adapters.whatsapp.neonize_journal import EventJournal
from ghl_desktop.core import wa_normalize as wn
from ghl_desktop.core.convert import phone_from_jid
from ghl_desktop.core.errors import (
    NotOnWhatsApp,
    SessionLoggedOut,
    SessionNotConnected,
    WhatsAppError,
    WhatsAppTransientError,
)
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import (
    Connected,
    ConnectFailed,
    EventHandler,
    IncomingMessage,
    LoggedOut,
    MediaInfo,
    OutgoingMedia,
    PairCode,
    Paired,
    PresenceKind,
    QrCode,
    SendResult,
    StreamReplaced,
    TransportEvent,
)

log = logging.getLogger("ghl.whatsapp")

BOT_TAG_ENV = ("NEONIZE_BOT_TAG", "off")

#: neonize event codes we journal (``neonize.events.EVENT_TO_INT``): MessageEv, ReceiptEv.
MESSAGE_CODE = 17
RECEIPT_CODE = 18

# --- process-wide engine state --------------------------------------------------------------------

#: session id -> NewAClient. Never dropped: a discarded client's finalizer calls Go ``Stop`` on the
#: same uuid and would kill the live session (neonize-notes §1).
_CLIENTS: dict[str, Any] = {}
_CLIENT_STORES: dict[str, str] = {}
#: Go's clients/eventChannel/StopSignal maps have no mutex: serialize our Stop and store calls.
_GO_LOCK = threading.Lock()


class EngineStatus(StrEnum):
    """Where the engine connection of one transport stands (diagnostics; the service owns states)."""

    IDLE = "idle"  # never started
    CONNECTING = "connecting"  # a connect attempt is running (dialing / handshaking)
    WAITING_FOR_SCAN = "waiting_for_scan"  # QR codes are being shown
    CONNECTED = "connected"  # logged in and online
    RECONNECTING = "reconnecting"  # a connect failed or the link dropped; retrying with backoff
    LOGGED_OUT = "logged_out"  # unlinked; the store no longer has a device
    STOPPING = "stopping"
    STOPPED = "stopped"


class BotTagNotDisabled(WhatsAppError):
    """The process was started without NEONIZE_BOT_TAG=off: every 1:1 message would carry a bot tag."""


def quote_store_path(path: Path | str) -> str:
    """The store path as neonize needs it: it becomes part of a SQLite URI (``file:<name>?…``),
    where ``#`` truncates, ``?`` breaks and ``%xx`` is decoded."""
    return urllib.parse.quote(str(path), safe="/\\:")


def _startup_environment() -> dict[str, str] | None:
    """The environment this process was started with (what Go sees), where the OS tells us."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def bot_tag_disabled() -> bool:
    """True when NEONIZE_BOT_TAG=off is set now *and* was set at process start (Go reads the
    start-up environment; setting os.environ later has no effect on it)."""
    name, value = BOT_TAG_ENV
    if os.environ.get(name) != value:
        return False
    startup = _startup_environment()
    return startup is None or startup.get(name) == value


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def quiet_engine_logs() -> None:
    """neonize passes the level of ``neonize.utils.log`` to Go at connect; NOTSET forwards DEBUG."""
    logging.getLogger("neonize.utils.log").setLevel(logging.WARNING)
    for name in ("whatsmeow", "Whatsmeow"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


def _neonize() -> Any:
    """Lazy import: the engine loads a 48 MB shared library and reconfigures logging on import."""
    quiet_engine_logs()
    import neonize.aioze.client as client_mod
    import neonize.aioze.events as events_mod

    return client_mod, events_mod


def registered_client(session_id: str) -> Any | None:
    return _CLIENTS.get(session_id)


def _to_jid(value: str) -> Any:
    from neonize.proto.Neonize_pb2 import JID

    if "@" in value:
        user, server = value.rsplit("@", 1)
        user = user.split(":", 1)[0]
    else:
        user, server = "".join(ch for ch in value if ch.isdigit()), wn.PHONE_SERVER
    if not user:
        raise WhatsAppError(f"not a WhatsApp address: {value!r}")
    return JID(User=user, Server=server, Device=0, RawAgent=0, Integrator=0, IsEmpty=False)


def _map_error(exc: BaseException, action: str) -> WhatsAppError:
    text = str(exc) or exc.__class__.__name__
    lowered = text.lower()
    if any(s in lowered for s in ("not connected", "client is nil", "websocket", "not logged in")):
        return SessionNotConnected(f"{action}: {text}")
    if any(s in lowered for s in ("timed out", "timeout", "deadline", "connection reset", "eof")):
        return WhatsAppTransientError(f"{action}: {text}")
    return WhatsAppError(f"{action}: {text}")


class NeonizeTransport:
    """One linked WhatsApp number on the neonize engine."""

    def __init__(
        self,
        session_id: str,
        store_path: Path | str,
        handler: EventHandler,
        *,
        proxy: str | None = None,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        qr_timeout: float = 150.0,
        drain_quiet: float = 0.3,
        drain_max: float = 3.0,
        stop_timeout: float = 5.0,
        expected_numbers: int = 50,
        require_bot_tag_off: bool = True,
        journal: bool = True,
    ) -> None:
        self.session_id = session_id
        self.store_path = Path(store_path)
        self._handler = handler
        self._proxy = proxy
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._qr_timeout = qr_timeout
        self._drain_quiet = drain_quiet
        self._drain_max = drain_max
        self._stop_timeout = stop_timeout
        self._expected_numbers = expected_numbers
        self._require_bot_tag_off = require_bot_tag_off
        self._journal = EventJournal(self.store_path.with_name(self.store_path.name + ".journal")) if journal else None
        self.log = logging.getLogger(f"ghl.whatsapp.{session_id}")
        self.status = EngineStatus.IDLE
        self.attempts = 0
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[tuple[int, Any, int | None]] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._qr_timer: asyncio.TimerHandle | None = None
        self._qr_index = 0
        self._logged_in = False
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._last_event_at = 0.0
        self._stop_lock: asyncio.Lock | None = None
        self._busy = False
        self._pending_row = threading.local()
        self._qr_task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The engine client (for tests and diagnostics); None before :meth:`attach`."""
        return self._client

    @property
    def logged_in(self) -> bool:
        """Store calls are safe: Go has this client registered with a paired device. Needs both our
        ``Connected`` and neonize's device event (code 0, sent by Go only once ``Store.ID`` is set,
        which neonize keeps as ``client.me``)."""
        return (
            self._logged_in
            and not self._stopping
            and self._client is not None
            and getattr(self._client, "me", None) is not None
        )

    async def attach(self) -> None:
        """Create (or reuse) the engine client and register every handler; no network yet.

        Also replays journal entries a previous run left behind, before anything new arrives."""
        loop = asyncio.get_running_loop()
        client_mod, events_mod = _neonize()
        events_mod.event_global_loop = loop  # trap 4: one callback loop per process, ours
        if self._loop is loop and self._pump_task is not None and not self._pump_task.done():
            return  # already attached on this loop (start() after attach())
        self._loop = loop
        ensure_executor(loop, self._expected_numbers)  # trap 3
        client = _CLIENTS.get(self.session_id)
        store = str(self.store_path)
        if client is None:
            self.store_path.parent.mkdir(parents=True, exist_ok=True)
            client = client_mod.NewAClient(quote_store_path(store), uuid=f"ghl-{self.session_id}")
            _CLIENTS[self.session_id] = client
            _CLIENT_STORES[self.session_id] = store
        elif _CLIENT_STORES[self.session_id] != store:
            raise WhatsAppError(
                f"session {self.session_id} already runs on {_CLIENT_STORES[self.session_id]}, not {store}"
            )
        self._client = client
        self._install_journal_hook(client)
        self._register_handlers(client, events_mod)
        self._inbox = asyncio.Queue()
        self._stop_event = asyncio.Event()
        self._stop_lock = asyncio.Lock()
        self._stopping = False
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = loop.create_task(self._pump(), name=f"wa-pump-{self.session_id}")
        if self._journal is not None:
            for row_id, code, payload in self._journal.pending():
                self._enqueue_raw(code, payload, row_id)

    async def start(self) -> None:
        """Connect in the background (QR codes / events arrive through the handler); returns at once."""
        if self._require_bot_tag_off and not bot_tag_disabled():
            self.log.error(
                "NEONIZE_BOT_TAG=off is not in this process's start-up environment; refusing to connect "
                "(every 1:1 message would carry a bot tag). Start through the ghl-desktop launcher."
            )
            raise BotTagNotDisabled("start the app through ghl-desktop (NEONIZE_BOT_TAG=off missing)")
        if self._supervisor is not None and not self._supervisor.done():
            return
        await self.attach()
        self._client._stop_finalizer.atexit = True  # until our own stop() has run
        self._create_store_file()
        assert self._loop is not None
        self._supervisor = self._loop.create_task(self._run(), name=f"wa-connect-{self.session_id}")

    def _create_store_file(self) -> None:
        """Create the engine's SQLite file ourselves with mode 0600 (neonize makes it 0644, with
        plaintext keys); an empty file is a valid SQLite database."""
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.store_path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.store_path, 0o600)

    async def _run(self) -> None:
        """First connect with capped exponential backoff (neonize does not retry it); once a
        connection stands, whatsmeow reconnects dropped links by itself."""
        assert self._stop_event is not None
        delay = self._retry_initial
        proxy = None
        if self._proxy:
            from neonize._binder import ProxySettings

            proxy = ProxySettings(self._proxy)
        while not self._stopping:
            self.status = EngineStatus.CONNECTING
            self.attempts += 1
            try:
                task = await self._client.connect(proxy)
                # never cancel the engine task (trap 5): shield it from our own cancellation
                await asyncio.shield(task)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    break
                self.status = EngineStatus.RECONNECTING
                reason = str(exc) or exc.__class__.__name__
                self.log.warning("connect attempt %d failed: %s; retrying in %.1fs", self.attempts, reason, delay)
                await self._emit(ConnectFailed(reason=f"{reason} (retrying in {delay:.1f}s)", permanent=False))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                delay = min(delay * 2, self._retry_max)
                continue
            break  # Neonize() returned normally: only after Stop

    async def stop(self) -> None:
        """Disconnect, drain what the engine already delivered, then stop the Go client.

        Awaited by the app on quit; never cancels the engine task (that would run Go's ``Stop``
        synchronously on the loop thread and freeze the UI). Serialized per process."""
        if self._client is None or self._stop_lock is None:
            self.status = EngineStatus.STOPPED
            return
        async with self._stop_lock:
            if self.status is EngineStatus.STOPPED:
                return
            self.status = EngineStatus.STOPPING
            self._stopping = True
            if self._stop_event is not None:
                self._stop_event.set()
            self._cancel_qr_timer()
            was_logged_in = self._logged_in and getattr(self._client, "me", None) is not None
            if was_logged_in:
                # close the socket but keep the Go event loop running so buffered events reach us
                # (only while registered: Disconnect on an unknown uuid is a nil dereference in Go)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._go_call(self._go_disconnect), self._stop_timeout / 2)
            await self._drain()
            self._logged_in = False
            self._client.me = None  # set again by Go's device event on the next login
            # Our Stop replaces neonize's weakref finalizer, which would call Go's Stop again at
            # interpreter exit, synchronously, and block the exit behind a pending dial.
            self._client._stop_finalizer.atexit = False
            stopped = True
            try:
                await asyncio.wait_for(self._go_call(self._go_stop), self._stop_timeout)
            except TimeoutError:
                stopped = False
                self.log.warning("engine Stop still blocked after %.0fs (pending dial); leaving it", self._stop_timeout)
            supervisor = self._supervisor
            if stopped and supervisor is not None and not supervisor.done():
                # its engine task ends after Stop; wait briefly, the task itself is never cancelled
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(supervisor), self._stop_timeout / 2)
                if not supervisor.done():
                    # a retry may have entered Neonize() just after our Stop: stop that one too
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._go_call(self._go_stop), self._stop_timeout / 2)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(supervisor), self._stop_timeout / 2)
            await self._drain()
            if self._pump_task is not None and not self._pump_task.done():
                self._pump_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._pump_task
            if self._journal is not None:
                self._journal.close()
            self.status = EngineStatus.STOPPED

    async def _drain(self) -> None:
        """Wait until the inbox is empty and nothing new arrived for ``drain_quiet`` seconds."""
        if self._inbox is None or self._loop is None:
            return
        deadline = self._loop.time() + self._drain_max
        while self._loop.time() < deadline:
            quiet = self._loop.time() - self._last_event_at >= self._drain_quiet
            if self._inbox.empty() and quiet and not self._busy:
                return
            await asyncio.sleep(0.02)

    def _go_stop(self) -> None:
        from neonize._binder import gocode

        with _GO_LOCK:
            gocode.Stop(self._client.uuid)

    def _go_disconnect(self) -> None:
        from neonize._binder import gocode

        with _GO_LOCK:
            gocode.Disconnect(self._client.uuid)

    async def _go_call(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking Go call on its own daemon thread (a Stop can block for a dial's minute)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:
                loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                loop.call_soon_threadsafe(_set_result, future, result)

        threading.Thread(target=run, name=f"wa-go-{self.session_id}", daemon=True).start()
        return await asyncio.shield(future)

    async def logout(self) -> None:
        client = self._require_logged_in("log out")
        try:
            await client.logout()
        except Exception as exc:
            raise _map_error(exc, "log out") from exc
        self._logged_in = False
        self.status = EngineStatus.LOGGED_OUT
        await self._emit(LoggedOut(reason="logged out from this app"))

    async def pair_phone(self, phone: str) -> str:
        """Pairing code for ``phone`` (alternative to the QR); needs the QR stage's websocket up."""
        if self._client is None or self.status is not EngineStatus.WAITING_FOR_SCAN:
            # PairPhone needs the login websocket that exists only while QR codes are shown; before
            # that Go has no client for this uuid and the call would be a nil dereference.
            raise SessionNotConnected("pairing by code needs the QR stage: wait for the first QR code")
        digits = "".join(ch for ch in phone if ch.isdigit())
        try:
            code = str(await self._client.PairPhone(digits, show_push_notification=True))
        except Exception as exc:
            raise _map_error(exc, "pair by phone code") from exc
        await self._emit(PairCode(code=code))
        return code

    # --- engine → domain ---------------------------------------------------------------------

    def _install_journal_hook(self, client: Any) -> None:
        """Journal message/receipt bytes on the Go callback thread before neonize schedules them."""
        event = client.event
        original = type(event).execute.__get__(event)
        journal = self._journal
        transport = self

        def execute(uuid: int, binary: int, size: int, code: int) -> None:
            row_id: int | None = None
            if journal is not None and code in (MESSAGE_CODE, RECEIPT_CODE):
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

    def _enqueue_raw(self, code: int, payload: bytes, row_id: int) -> None:
        from neonize.events import INT_TO_EVENT

        try:
            event = INT_TO_EVENT[code].FromString(payload)
        except Exception:
            self.log.exception("journal entry %d is unreadable; dropping it", row_id)
            if self._journal is not None:
                self._journal.done(row_id)
            return
        self._enqueue(code, event, row_id)

    async def _pump(self) -> None:
        """One event at a time, in arrival order; the journal row is cleared after the handler."""
        assert self._inbox is not None
        inbox = self._inbox
        while True:
            code, event, row_id = await inbox.get()
            self._busy = True
            try:
                ok = await self._process(code, event)
            except Exception:
                self.log.exception("failed to process WhatsApp event code %s", code)
                ok = False
            finally:
                self._busy = False
            if row_id is not None and self._journal is not None and ok:
                self._journal.done(row_id)

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
        return wn.normalize_message(event, resolve_lid=lids.get)

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

    # --- store calls (trap 1) ---------------------------------------------------------------

    def _require_logged_in(self, action: str) -> Any:
        """Store-touching calls panic the Go runtime (SIGABRT) unless the device is registered and
        paired: refuse them instead."""
        if not self.logged_in:
            if self.status is EngineStatus.LOGGED_OUT:
                raise SessionLoggedOut(f"{action}: the number was unlinked")
            raise SessionNotConnected(f"{action}: session {self.session_id} is not logged in")
        return self._client

    async def get_me(self) -> str | None:
        """Our own JID, or None when not logged in (never touches the store then)."""
        try:
            client = self._require_logged_in("get own number")
        except WhatsAppError:
            return None
        device = await client.get_me()
        return wn.jid_to_str(getattr(device, "JID", None))

    async def resolve_lid(self, lid: str) -> str | None:
        try:
            client = self._require_logged_in("resolve LID")
        except WhatsAppError:
            return None
        try:
            pn = await client.get_pn_from_lid(_to_jid(lid))
        except Exception as exc:
            self.log.warning("LID lookup failed for %s: %s", lid, exc)
            return None
        return phone_from_jid(wn.jid_to_str(pn))

    # --- sending -----------------------------------------------------------------------------

    def _result(self, response: Any) -> SendResult:
        ts = int(getattr(response, "Timestamp", 0) or 0)
        moment = datetime.fromtimestamp(ts, tz=UTC) if ts > 0 else datetime.now(tz=UTC)
        return SendResult(message_id=str(response.ID), timestamp=moment)

    async def _send(self, chat: str, message: Any, action: str) -> SendResult:
        client = self._require_logged_in(action)
        try:
            response = await client.send_message(_to_jid(chat), message)
        except Exception as exc:
            raise _map_error(exc, action) from exc
        return self._result(response)

    async def send_text(
        self, chat: str, text: str, *, quoted_id: str | None = None, message_id: str | None = None
    ) -> SendResult:
        # ``message_id`` is ignored: neonize 0.5.2 cannot send with a caller-chosen id, so a crash
        # between WhatsApp accepting a message and the bridge recording its id can repeat that send.
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ContextInfo, ExtendedTextMessage, Message

        if quoted_id:
            msg = Message(
                extendedTextMessage=ExtendedTextMessage(
                    text=text, contextInfo=ContextInfo(stanzaID=quoted_id, participant=self._participant(chat))
                )
            )
        else:
            msg = Message(conversation=text)  # verbatim: a str would turn "@4917…" into mentions
        return await self._send(chat, msg, "send text")

    def _participant(self, chat: str) -> str:
        jid = _to_jid(chat)
        return f"{jid.User}@{jid.Server}"

    async def send_media(
        self, chat: str, media: OutgoingMedia, *, quoted_id: str | None = None, message_id: str | None = None
    ) -> SendResult:
        # ``message_id`` is ignored for the same reason as in send_text.
        client = self._require_logged_in("send media")
        kind = media.kind
        if kind in (MessageKind.AUDIO, MessageKind.VOICE, MessageKind.VIDEO) and not ffmpeg_available():
            self.log.warning(
                "ffmpeg/ffprobe not found: sending %s %r as a document instead", kind.value, media.file_name
            )
            kind = MessageKind.DOCUMENT
        try:
            if kind is MessageKind.IMAGE:
                msg = await client.build_image_message(media.data, caption=media.caption)
            elif kind is MessageKind.VIDEO:
                msg = await client.build_video_message(media.data, caption=media.caption)
            elif kind in (MessageKind.AUDIO, MessageKind.VOICE):
                msg = await client.build_audio_message(media.data, ptt=kind is MessageKind.VOICE)
            elif kind is MessageKind.STICKER:
                msg = await client.build_sticker_message(media.data, passthrough=True)
            else:
                msg = await client.build_document_message(
                    media.data,
                    caption=media.caption,
                    title=media.file_name,
                    filename=media.file_name,
                    mimetype=media.mimetype,
                )
        except Exception as exc:
            raise _map_error(exc, f"upload {kind.value}") from exc
        if quoted_id:
            for _descriptor, sub in msg.ListFields():
                if hasattr(sub, "contextInfo"):
                    sub.contextInfo.stanzaID = quoted_id
                    sub.contextInfo.participant = self._participant(chat)
                    break
        return await self._send(chat, msg, f"send {kind.value}")

    async def send_reaction(self, chat: str, target_id: str, emoji: str, *, from_me: bool) -> SendResult:
        from neonize.proto.waCommon.WACommon_pb2 import MessageKey
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ReactionMessage

        self._require_logged_in("react")
        key = MessageKey(remoteJID=self._participant(chat), fromMe=from_me, ID=target_id)
        now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
        msg = Message(reactionMessage=ReactionMessage(key=key, text=emoji, senderTimestampMS=now_ms))
        return await self._send(chat, msg, "react")

    async def edit(self, chat: str, target_id: str, text: str) -> SendResult:
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

        client = self._require_logged_in("edit")
        try:
            response = await client.edit_message(_to_jid(chat), target_id, Message(conversation=text))
        except Exception as exc:
            raise _map_error(exc, "edit") from exc
        return self._result(response)

    async def revoke(self, chat: str, target_id: str) -> SendResult:
        client = self._require_logged_in("revoke")
        me = await self.get_me()
        if me is None:
            raise SessionNotConnected("revoke: own number unknown")
        try:
            response = await client.revoke_message(_to_jid(chat), _to_jid(me), target_id)
        except Exception as exc:
            raise _map_error(exc, "revoke") from exc
        return self._result(response)

    async def mark_read(self, chat: str, sender: str, message_ids: list[str]) -> None:
        from neonize.utils.enum import ReceiptType

        client = self._require_logged_in("mark read")
        if not message_ids:
            return
        try:
            await client.mark_read(*message_ids, chat=_to_jid(chat), sender=_to_jid(sender), receipt=ReceiptType.READ)
        except Exception as exc:
            raise _map_error(exc, "mark read") from exc

    async def send_presence(self, chat: str, presence: PresenceKind) -> None:
        from neonize.utils.enum import ChatPresence, ChatPresenceMedia

        client = self._require_logged_in("send presence")
        state = (
            ChatPresence.CHAT_PRESENCE_PAUSED
            if presence is PresenceKind.PAUSED
            else ChatPresence.CHAT_PRESENCE_COMPOSING
        )
        media = (
            ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO
            if presence is PresenceKind.RECORDING
            else ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT
        )
        try:
            await client.send_chat_presence(_to_jid(chat), state, media)
        except Exception as exc:
            raise _map_error(exc, "send presence") from exc

    async def is_on_whatsapp(self, phone: str) -> str | None:
        client = self._require_logged_in("check number")
        digits = "".join(ch for ch in phone if ch.isdigit())
        try:
            answers = await client.is_on_whatsapp(digits)
        except Exception as exc:
            raise _map_error(exc, "check number") from exc
        for answer in answers:
            if getattr(answer, "IsIn", False):
                return wn.jid_to_str(answer.JID)
        return None

    async def require_on_whatsapp(self, phone: str) -> str:
        jid = await self.is_on_whatsapp(phone)
        if jid is None:
            raise NotOnWhatsApp(f"{phone} has no WhatsApp account")
        return jid

    async def download(self, media: MediaInfo) -> bytes:
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

        client = self._require_logged_in("download media")
        if not media.handle:
            raise WhatsAppError("download: this media has no engine handle")
        try:
            data = await client.download_any(Message.FromString(media.handle))
        except Exception as exc:
            raise _map_error(exc, "download media") from exc
        return bytes(data)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


__all__ = [
    "BotTagNotDisabled",
    "EngineStatus",
    "NeonizeTransport",
    "bot_tag_disabled",
    "ensure_executor",
    "quote_store_path",
    "registered_client",
]
