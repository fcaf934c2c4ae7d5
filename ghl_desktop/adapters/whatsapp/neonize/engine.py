"""Process-wide neonize engine state: the one client per number for the life of the process, the Go
lock, the bot-tag check, the lazy import, JID/error mapping, and the default executor.

A default executor big enough for many linked numbers, whose threads never hold the app open.

Why (docs/neonize.md §0.3 and §0.5): every live neonize session keeps one executor thread blocked in
the Go ``Neonize()`` call for as long as it runs, and neonize routes *every* engine call through
``asyncio.to_thread``. qasync's default ``QThreadExecutor(10)`` is therefore exhausted by ten numbers,
after which every ``to_thread`` in the app hangs. We size the pool ``numbers + 16``.

The threads are daemon threads, unlike ``ThreadPoolExecutor``'s (which the interpreter joins at
exit): a Go call can stay blocked after ``Stop`` — a websocket dial runs up to ~60 s, and a session
stopped while its QR code is showing leaves ``Neonize()`` waiting on whatsmeow's QR channel for ever
(whatsmeow ``qrchan.go``: on an expected disconnect the emitter returns without closing the
channel that neonize's ``main.go`` ranges over). A joined thread would turn that into an app that
never quits; ``shutdown`` here waits at most ``join_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import shutil
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from ghl_desktop.core import wa_normalize as wn
from ghl_desktop.core.errors import SessionNotConnected, WhatsAppError, WhatsAppTransientError

log = logging.getLogger("ghl.whatsapp")

T = TypeVar("T")

#: Threads kept in reserve for everything that is not a live session (sends, store calls, the app).
RESERVE_THREADS = 16

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPoolExecutor(ThreadPoolExecutor):
    """A bounded pool of daemon worker threads (started lazily, up to ``max_workers``).

    A ``ThreadPoolExecutor`` subclass only because asyncio's ``set_default_executor`` insists on one;
    the pool itself is ours (the base class's workers are non-daemon and joined at exit)."""

    def __init__(self, max_workers: int, *, name: str = "ghl-engine", join_timeout: float = 2.0) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        super().__init__(max_workers=1, thread_name_prefix=name)  # base attributes only; never used
        self.max_workers = max_workers
        self.join_timeout = join_timeout
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._pool_lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._pool_lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: Future[T] = Future()
            self._queue.put((future, fn, args, kwargs))
            if self._idle == 0 and len(self._workers) < self.max_workers:
                thread = threading.Thread(target=self._worker, name=f"{self._name}-{len(self._workers)}", daemon=True)
                self._workers.append(thread)
                thread.start()
            elif self._idle > 0:
                self._idle -= 1  # an idle worker will take it
            return future

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs
            with self._pool_lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._pool_lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._workers)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            deadline = time.monotonic() + self.join_timeout
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [t.name for t in threads if t.is_alive()]
            if stuck:
                log.warning("%d engine thread(s) still blocked in Go calls at shutdown: %s", len(stuck), stuck)

    @property
    def thread_count(self) -> int:
        return len(self._workers)


_SIZES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DaemonThreadPoolExecutor] = weakref.WeakKeyDictionary()


def ensure_executor(loop: asyncio.AbstractEventLoop, numbers: int) -> DaemonThreadPoolExecutor:
    """Make ``loop``'s default executor hold ``numbers`` live sessions plus a reserve (trap 3).

    Idempotent and only ever grows: asking for fewer numbers than already provisioned keeps the
    current pool (running sessions hold threads in it)."""
    wanted = max(1, numbers) + RESERVE_THREADS
    current = _SIZES.get(loop)
    if current is not None and current.max_workers >= wanted:
        return current
    if current is not None:
        current.max_workers = wanted  # grow in place: live sessions keep their threads
        return current
    executor = DaemonThreadPoolExecutor(wanted)
    loop.set_default_executor(executor)
    _SIZES[loop] = executor
    log.debug("default executor sized for %d numbers (%d threads)", numbers, wanted)
    return executor


BOT_TAG_ENV = ("NEONIZE_BOT_TAG", "off")

#: neonize event codes we journal (``neonize.events.EVENT_TO_INT``): MessageEv, ReceiptEv.
MESSAGE_CODE = 17
RECEIPT_CODE = 18

# --- process-wide engine state --------------------------------------------------------------------

#: session id -> NewAClient. Never dropped: a discarded client's finalizer calls Go ``Stop`` on the
#: same uuid and would kill the live session (docs/neonize.md §1).
CLIENTS: dict[str, Any] = {}
CLIENT_STORES: dict[str, str] = {}
#: Go's clients/eventChannel/StopSignal maps have no mutex: serialize our Stop and store calls.
GO_LOCK = threading.Lock()


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


def startup_environment() -> dict[str, str] | None:
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
    startup = startup_environment()
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


def neonize_modules() -> Any:
    """Lazy import: the engine loads a 48 MB shared library and reconfigures logging on import."""
    quiet_engine_logs()
    import neonize.aioze.client as client_mod
    import neonize.aioze.events as events_mod

    return client_mod, events_mod


def registered_client(session_id: str) -> Any | None:
    return CLIENTS.get(session_id)


def to_jid(value: str) -> Any:
    from neonize.proto.Neonize_pb2 import JID

    if "@" in value:
        user, server = value.rsplit("@", 1)
        user = user.split(":", 1)[0]
    else:
        user, server = "".join(ch for ch in value if ch.isdigit()), wn.PHONE_SERVER
    if not user:
        raise WhatsAppError(f"not a WhatsApp address: {value!r}")
    return JID(User=user, Server=server, Device=0, RawAgent=0, Integrator=0, IsEmpty=False)


def map_error(exc: BaseException, action: str) -> WhatsAppError:
    text = str(exc) or exc.__class__.__name__
    lowered = text.lower()
    if any(s in lowered for s in ("not connected", "client is nil", "websocket", "not logged in")):
        return SessionNotConnected(f"{action}: {text}")
    if any(s in lowered for s in ("timed out", "timeout", "deadline", "connection reset", "eof")):
        return WhatsAppTransientError(f"{action}: {text}")
    return WhatsAppError(f"{action}: {text}")



def set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
