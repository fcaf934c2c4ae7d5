"""The real WhatsApp engine (neonize 0.5.2 / whatsmeow) behind the ``WhatsAppTransport`` port.

This module owns every neonize quirk so nothing above it has to know them (see docs/neonize.md;
"trap N" below is item N of its §0): one ``NewAClient`` per number for the life of the process, a quoted
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

* a write-ahead journal (``neonize.ingress.EventJournal``): the raw bytes of every message and receipt event
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
channel) — hence daemon executor threads (``neonize.engine``) and our own ``Stop`` replacing
neonize's at-exit finalizer, so the app still quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ghl_desktop.adapters.whatsapp.neonize.engine import (
    CLIENT_STORES,
    CLIENTS,
    GO_LOCK,
    BotTagNotDisabled,
    EngineStatus,
    bot_tag_disabled,
    ensure_executor,
    map_error,
    neonize_modules,
    quote_store_path,
    set_exception,
    set_result,
)
from ghl_desktop.adapters.whatsapp.neonize.ingress import EventJournal, Ingress
from ghl_desktop.adapters.whatsapp.neonize.outbound import Outbound
from ghl_desktop.core.errors import SessionNotConnected, WhatsAppError
from ghl_desktop.core.whatsapp import ConnectFailed, EventHandler, LoggedOut, PairCode


class NeonizeTransport(Ingress, Outbound):
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
        store_address: str | None = None,
    ) -> None:
        self.session_id = session_id
        self.store_path = Path(store_path)
        #: a cluster (PostgreSQL): whatsmeow's store at this ``postgres://`` address instead of the SQLite
        #: file at ``store_path`` (adapters/storage/engine_store.py); the event journal stays a local file
        self.store_address = store_address
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
        client_mod, events_mod = neonize_modules()
        events_mod.event_global_loop = loop  # trap 4: one callback loop per process, ours
        if self._loop is loop and self._pump_task is not None and not self._pump_task.done():
            return  # already attached on this loop (start() after attach())
        self._loop = loop
        ensure_executor(loop, self._expected_numbers)  # trap 3
        client = CLIENTS.get(self.session_id)
        store = self.store_address or str(self.store_path)
        if client is None:
            self.store_path.parent.mkdir(parents=True, exist_ok=True)
            name = self.store_address or quote_store_path(store)
            client = client_mod.NewAClient(name, uuid=f"ghl-{self.session_id}")
            CLIENTS[self.session_id] = client
            CLIENT_STORES[self.session_id] = store
        elif CLIENT_STORES[self.session_id] != store:
            raise WhatsAppError(
                f"session {self.session_id} already runs on {CLIENT_STORES[self.session_id]}, not {store}"
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
        await self._replay_journal()

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
        if self.store_address is None:
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
                await asyncio.to_thread(self._journal.close)  # its lock may be held by an fsyncing append
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

        with GO_LOCK:
            gocode.Stop(self._client.uuid)

    def _go_disconnect(self) -> None:
        from neonize._binder import gocode

        with GO_LOCK:
            gocode.Disconnect(self._client.uuid)

    async def _go_call(self, fn: Callable[[], Any]) -> Any:
        """Run a blocking Go call on its own daemon thread (a Stop can block for a dial's minute)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:
                loop.call_soon_threadsafe(set_exception, future, exc)
            else:
                loop.call_soon_threadsafe(set_result, future, result)

        threading.Thread(target=run, name=f"wa-go-{self.session_id}", daemon=True).start()
        return await asyncio.shield(future)

    async def logout(self) -> None:
        client = self._require_logged_in("log out")
        try:
            await client.logout()
        except Exception as exc:
            raise map_error(exc, "log out") from exc
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
            raise map_error(exc, "pair by phone code") from exc
        await self._emit(PairCode(code=code))
        return code
