"""The app's asyncio loop on Qt: ``qasync.QEventLoop`` with two defects of qasync 0.28 fixed.

1. **Callbacks run while the loop is not running.** qasync runs every ``call_soon``/``call_later``
   handle from a Qt timer (``_SimpleTimer.timerEvent``), whenever Qt happens to process events. Qt
   also processes events outside ``run_forever``: ``run_until_complete`` ends with one more
   ``eventDispatcher().processEvents(AllEvents)`` *after* ``run_forever`` has reset the running loop
   to ``None`` (qasync 0.28 ``__init__.py`` l. 410 and l. 431–433; ``timerEvent`` l. 307 runs the
   handle unconditionally), and so does any ``processEvents`` while the loop is stopped. A task
   step run there that calls ``asyncio.sleep``, ``get_running_loop`` or ``create_task`` fails with
   ``RuntimeError: no running event loop`` — the task dies. It hits a task whose wake-up was
   scheduled in the last Qt pass before the stop, which
   is exactly what a worker-thread completion (``run_in_executor``/``to_thread``, a Go callback via
   ``call_soon_threadsafe``) produces at a random moment; pytest-asyncio stops and restarts the loop
   around every fixture and test. Here ready handles wait in a FIFO queue that one zero-delay Qt
   timer drains only while this loop is the thread's running loop; outside, they stay queued until
   the loop runs again — as in asyncio, where a stopped loop runs no callbacks. (One queue also
   keeps ``call_soon`` order FIFO without relying on the order of many equal Qt timers.)
2. **call_soon_threadsafe** emitted a ``Signal(object, tuple)`` from the calling thread (a Go or
   executor thread), so PySide converted Python objects into a queued Qt event there, and it
   returned ``None``, ignored ``context=``. Here it does what asyncio's own loops do: append an
   ``asyncio.Handle`` to a deque (``append`` is atomic) and write a byte to the loop's self-pipe
   (``_write_to_self``; the pipe's read end is already watched by a ``QSocketNotifier`` that qasync
   created for asyncio's ``_make_self_pipe``). The foreign thread makes no Qt or PySide call at all.
   The handle is returned (``cancel()`` works). After ``close()`` the call is dropped, as with
   qasync (engine threads may outlive the loop; ``asyncio.wrap_future`` checks ``is_closed``).
3. **The default executor is a QThread pool.** ``run_in_executor(None, …)`` / ``asyncio.to_thread``
   on qasync run on ``QThreadExecutor`` threads; one still alive when Python exits makes Qt print
   "QThread: Destroyed while thread is still running" and abort the process. The default executor
   here is the standard library's ``ThreadPoolExecutor`` (plain Python threads, joined at exit and by
   ``close()``), so work sent off the loop never touches Qt's thread machinery.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import qasync
import shiboken6
from PySide6.QtCore import QObject, QTimerEvent


class _LoopTimer(QObject):
    """Replaces qasync's ``_SimpleTimer`` (the loop's ``_timer``): runs handles only on a running loop."""

    def __init__(self, loop: QEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._later: dict[int, asyncio.Handle] = {}
        self._pump = 0  # id of the zero-delay Qt timer that drains _ready; 0 when none
        self._stopped = False

    def add_callback(self, handle: asyncio.Handle, delay: float = 0) -> asyncio.Handle:
        if self._stopped:  # the loop is closed: no new Qt timer (this object may already be deleted)
            handle.cancel()
            return handle
        if delay <= 0:
            self._ready.append(handle)
            self._start_pump()
        else:
            self._later[self.startTimer(int(delay * 1000))] = handle
        return handle

    def _start_pump(self) -> None:
        if not self._pump and not self._stopped:
            self._pump = self.startTimer(0)

    def resume(self) -> None:
        """The loop is about to run: drain what was left while it was stopped."""
        if self._ready:
            self._start_pump()

    def timerEvent(self, event: QTimerEvent) -> None:  # Qt override
        timer_id = event.timerId()
        self.killTimer(timer_id)
        if timer_id == self._pump:
            self._pump = 0
        else:
            due = self._later.pop(timer_id, None)
            if due is not None and not due.cancelled():
                self._ready.append(due)
        if self._stopped or asyncio._get_running_loop() is not self._loop:
            return  # Qt spinning outside run_forever: keep them for resume()
        for _ in range(len(self._ready)):  # this batch only, as asyncio's _run_once
            if not self._ready:
                break  # a nested Qt loop inside a callback drained them
            handle = self._ready.popleft()
            if not handle.cancelled():
                handle._run()
        if self._ready:
            self._start_pump()

    def stop(self) -> None:
        self._stopped = True
        for timer_id in (*self._later, self._pump):
            if timer_id:
                self.killTimer(timer_id)
        self._later.clear()
        self._ready.clear()
        self._pump = 0

    def set_debug(self, enabled: bool) -> None:
        pass  # qasync's slow-callback report is not reproduced


class QEventLoop(qasync.QEventLoop):  # type: ignore[misc, valid-type]  # qasync is untyped
    """``qasync.QEventLoop`` whose callbacks only run while it is the running loop, and whose
    ``call_soon_threadsafe`` is a thread-safe queue drained on the loop thread."""

    def __init__(self, app: Any = None) -> None:
        super().__init__(app)
        self.set_default_executor(ThreadPoolExecutor(thread_name_prefix="ghl-loop-worker"))
        self._timer = _LoopTimer(self)
        self._threadsafe: collections.deque[asyncio.Handle] = collections.deque()

    def run_forever(self) -> None:
        self._timer.resume()
        super().run_forever()

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any,
                             context: contextvars.Context | None = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context=context)
        if self.is_closed():
            handle.cancel()
            return handle
        self._threadsafe.append(handle)  # atomic; then wake the loop thread through the self-pipe
        self._write_to_self()
        return handle

    def _read_from_self(self) -> None:
        super()._read_from_self()  # consume the wake-up bytes first: a later append writes a new one
        while self._threadsafe:
            handle = self._threadsafe.popleft()
            if not handle.cancelled():
                self._add_callback(handle)

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        self._threadsafe.clear()
        super().close()  # stops our timer object (qasync calls ``self._timer.stop()``)
        # Delete the timer object now, on the loop's thread: left to the garbage collector it may be
        # destroyed on whatever thread runs the collection (a Go callback thread, an executor) and Qt
        # warns "QObject::~QObject: Timers cannot be stopped from another thread".
        if shiboken6.isValid(self._timer):
            shiboken6.delete(self._timer)


__all__ = ["QEventLoop"]
