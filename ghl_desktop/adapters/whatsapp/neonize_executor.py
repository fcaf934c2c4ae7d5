"""A default executor big enough for many linked numbers, whose threads never hold the app open.

Why (neonize-notes §0.3 and §0.5): every live neonize session keeps one executor thread blocked in
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
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

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
