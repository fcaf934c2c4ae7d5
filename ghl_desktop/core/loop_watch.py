"""A blocked-loop detector: a watchdog thread that notices when the asyncio loop stops answering.

Everything in the app (Qt, WhatsApp callbacks, HighLevel calls, webhooks) shares one loop thread, so
any blocking call on it (a database transaction, an fsync, a keyring D-Bus round trip, a
``time.sleep``) freezes all of them. The rule (docs/event-loop.md): nothing on the loop thread may
block longer than :data:`DEFAULT_THRESHOLD` (20 ms).

How it measures: the watchdog thread posts a no-op to the loop with ``call_soon_threadsafe`` and
waits for it to run. If it has not run within the threshold, the loop thread is busy with something
else; the watchdog then samples the loop thread's Python stack (``sys._current_frames()``) every few
milliseconds until the no-op runs, so the report names the code that held the loop, not the code
that happened to run after it.

On Linux the time the loop thread spent *runnable but waiting for a CPU* (``/proc/.../schedstat``,
other processes' fault, not ours) is taken off the measured stall, so a loaded machine does not make
the detector fire. The same goes for the GIL: a thread of ours that holds it and is then preempted by
the OS keeps the loop thread asleep until it gets a CPU back, so while the loop thread sleeps, the
time the process's other threads spent waiting for a CPU is taken off too (:func:`net_stall`). Time
spent waiting for a lock, the disk, a sleep or another thread's work still counts.

Pure standard library (core stays free of Qt and I/O libraries); any asyncio loop works (qasync's
too, whose ``set_debug`` slow-callback report is not available). The app turns it on with
``GHL_DESKTOP_LOOP_WATCH=<ms>`` (:func:`watch_from_env`): every stall is logged at WARNING on the
``ghl.loop`` logger with the stack; the tests use it through ``tests/fixtures/loop_watch.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

log = logging.getLogger("ghl.loop")

#: a loop thread that does not answer for longer than this is blocked (the project's loop rule)
DEFAULT_THRESHOLD = 0.020
#: the environment variable that turns the watch on in the app (milliseconds; empty or 0: off)
ENV = "GHL_DESKTOP_LOOP_WATCH"
#: stack samples kept per stall (the first ones; a long stall in one place repeats the same stack)
MAX_SAMPLES = 20

_THIS_FILE = os.path.normcase(os.path.abspath(__file__))


def _schedstat_path(native_id: int | None) -> str | None:
    if native_id is None or not sys.platform.startswith("linux"):
        return None
    path = f"/proc/self/task/{native_id}/schedstat"
    return path if os.path.exists(path) else None


def _schedstat(path: str | None) -> tuple[float, float]:
    """Seconds the thread has spent on a CPU and runnable but waiting for one ((0, 0) where unknown)."""
    if path is None:
        return 0.0, 0.0
    try:
        with open(path, "rb") as f:  # a procfs read: no disk, no fsync
            fields = f.read().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def _runqueue_wait(path: str | None) -> float:
    """Seconds the thread has spent runnable but waiting for a CPU (0 where unknown)."""
    return _schedstat(path)[1]


def _other_threads_waits(skip: Iterable[int | None]) -> dict[int, float]:
    """Runqueue waits (seconds) of this process's threads but ``skip`` (native ids); {} where unknown."""
    if not sys.platform.startswith("linux"):
        return {}
    skipped = set(skip)
    waits: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    for name in tids:
        if not name.isdigit() or int(name) in skipped:
            continue
        waits[int(name)] = _runqueue_wait(f"/proc/self/task/{name}/schedstat")
    return waits


def net_stall(duration: float, own_queue_wait: float, *, window: float = 0.0, own_cpu: float = 0.0,
              own_wait_in_window: float = 0.0, others_queue_wait: float = 0.0) -> float:
    """How long the loop's own code held it: ``duration`` less the time the loop thread waited for a
    CPU (``own_queue_wait``), less — within the ``window`` sampled after the threshold — the time the
    process's other threads waited for a CPU (``others_queue_wait``) while the loop thread slept
    (neither on a CPU nor queued for one): that is a GIL held by a preempted thread. What a lock, the
    disk or a sleep holds is not excused by it (a quiet machine has no such waits to credit)."""
    asleep = max(0.0, window - own_cpu - own_wait_in_window)
    return duration - max(0.0, own_queue_wait) - min(max(0.0, others_queue_wait), asleep)


@dataclass(frozen=True)
class Frame:
    filename: str
    lineno: int
    name: str
    line: str

    def where(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.name}"


@dataclass(frozen=True)
class Block:
    """One stall of the loop thread longer than the threshold."""

    #: wall-clock seconds the loop did not answer
    duration: float
    #: ``duration`` less the time the thread (or a preempted GIL holder) waited for a CPU: what the code
    #: itself held the loop (:func:`net_stall`)
    stalled: float
    #: the sampled stacks, innermost frame last, in sampling order (the first one at the threshold)
    samples: tuple[tuple[Frame, ...], ...] = field(default_factory=tuple)

    @property
    def stack(self) -> tuple[Frame, ...]:
        """The stack seen most often while the loop was blocked (ties: the earliest)."""
        if not self.samples:
            return ()
        counts = Counter(self.samples)
        best = max(counts.values())
        return next(s for s in self.samples if counts[s] == best)

    def culprit(self, roots: Iterable[str] = ()) -> Frame | None:
        """The innermost frame of the most frequent stack whose file is under one of ``roots``
        (the project's own code), else the innermost frame."""
        stack = self.stack
        wanted = tuple(os.path.normcase(os.path.abspath(r)) for r in roots)
        for frame in reversed(stack):
            if wanted and os.path.normcase(os.path.abspath(frame.filename)).startswith(wanted):
                return frame
        return stack[-1] if stack else None

    def matches(self, pattern: str) -> bool:
        """Whether any frame of any sample reads like ``pattern`` (a substring of
        ``<path>:<lineno> in <function>`` with ``/`` separators)."""
        pattern = pattern.replace(os.sep, "/")
        return any(pattern in frame.where().replace(os.sep, "/") for sample in self.samples for frame in sample)

    def describe(self, limit: int = 25) -> str:
        head = f"event loop blocked for {self.duration * 1000:.0f} ms"
        if abs(self.duration - self.stalled) >= 0.001:
            head += f" ({self.stalled * 1000:.0f} ms not counting waits for a CPU)"
        stack = self.stack
        if not stack:
            return head + " (no stack sampled)"
        lines = [head + "; the loop thread was in:"]
        for frame in stack[-limit:]:
            lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
            if frame.line:
                lines.append(f"    {frame.line}")
        others = len(set(self.samples)) - 1
        if others > 0:
            lines.append(f"  ({others} other stack(s) sampled during the same stall)")
        return "\n".join(lines)


def _extract(frame: object) -> tuple[Frame, ...]:
    frames = []
    for summary in traceback.extract_stack(frame):  # type: ignore[arg-type]
        if os.path.normcase(os.path.abspath(summary.filename)) == _THIS_FILE:
            continue
        frames.append(Frame(summary.filename, summary.lineno or 0, summary.name, (summary.line or "").strip()))
    return tuple(frames)


class LoopWatch:
    """Watches one running loop from a daemon thread and records every :class:`Block`.

    ``start()`` is called on the loop's thread (it records which thread to sample), or pass
    ``thread_id`` / ``native_id``. ``on_block(block)`` runs on the watchdog thread for every stall.
    Only a *running* loop is pinged: a loop stopped between two ``run_until_complete`` calls is not
    blocked. ``pause()`` as a context manager excludes a stretch the caller knows blocks on purpose.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float = DEFAULT_THRESHOLD, *,
                 on_block: Callable[[Block], None] | None = None, interval: float | None = None,
                 sample_interval: float | None = None, thread_id: int | None = None,
                 native_id: int | None = None) -> None:
        if threshold <= 0:
            raise ValueError("threshold must be positive")
        self.loop = loop
        self.threshold = threshold
        self.interval = interval if interval is not None else min(threshold / 2, 0.01)
        self.sample_interval = sample_interval if sample_interval is not None else min(threshold / 4, 0.005)
        self.on_block = on_block
        self._thread_id = thread_id
        self._native_id = native_id
        self._blocks: list[Block] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = 0
        #: pauses begun so far (a stall that saw one begin is not recorded)
        self._pauses = 0
        self._thread: threading.Thread | None = None
        self.pings = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LoopWatch:
        if self._thread is not None:
            return self
        if self._thread_id is None:
            self._thread_id = threading.get_ident()
            self._native_id = threading.get_native_id()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ghl-loop-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Block]:
        """Stop the watchdog (waits for it) and return every block recorded."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(5)
        return self.blocks

    def __enter__(self) -> LoopWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def blocks(self) -> list[Block]:
        with self._lock:
            return list(self._blocks)

    def clear(self) -> list[Block]:
        with self._lock:
            taken, self._blocks = self._blocks, []
        return taken

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Stalls that *start* while paused are not recorded (e.g. a test's deliberate setup), nor one
        whose ping was already on its way when the pause began: the loop thread can wake from a
        sleep, enter the pause and block before it runs a ping sent a moment earlier."""
        with self._lock:
            self._paused += 1
            self._pauses += 1
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1

    # -- the watchdog --------------------------------------------------------------------------
    def _sample(self) -> tuple[Frame, ...] | None:
        frame = sys._current_frames().get(self._thread_id or 0)
        return _extract(frame) if frame is not None else None

    def _run(self) -> None:
        loop = self.loop
        schedstat = _schedstat_path(self._native_id)
        me = threading.get_native_id()
        while not self._stop.is_set():
            if loop.is_closed() or not loop.is_running():
                self._stop.wait(self.interval)
                continue
            answered = threading.Event()
            acked: list[float] = []

            def ack(acked: list[float] = acked, answered: threading.Event = answered) -> None:
                acked.append(time.monotonic())  # measured on the loop thread: a late watchdog is no stall
                answered.set()

            paused = self._paused > 0
            pauses = self._pauses
            sent = time.monotonic()
            queued = _runqueue_wait(schedstat)
            try:
                loop.call_soon_threadsafe(ack)
            except RuntimeError:  # closed in between
                continue
            self.pings += 1
            if answered.wait(self.threshold):
                self._stop.wait(self.interval)
                continue
            # a stall: from here on, also what the loop thread and the other threads wait for (the GIL)
            window_start = time.monotonic()
            own_start = _schedstat(schedstat)
            others_start = _other_threads_waits((self._native_id, me)) if schedstat else {}
            samples: list[tuple[Frame, ...]] = []
            while True:
                if len(samples) < MAX_SAMPLES:
                    sample = self._sample()
                    if sample:
                        samples.append(sample)
                if answered.wait(self.sample_interval):
                    break
                if self._stop.is_set() or loop.is_closed() or not loop.is_running():
                    samples = []  # the loop stopped, or we did: not a stall we can measure
                    break
            if not samples or paused or self._pauses != pauses:
                continue
            duration = (acked[0] if acked else time.monotonic()) - sent
            if duration <= self.threshold:
                continue  # the watchdog itself woke late
            window = time.monotonic() - window_start
            own_end = _schedstat(schedstat)
            others = 0.0
            if schedstat:
                others_end = _other_threads_waits((self._native_id, me))
                # a thread started during the stall (e.g. by an executor's submit) waited all its life in it
                others = sum(max(0.0, w - others_start.get(t, 0.0)) for t, w in others_end.items())
            stalled = net_stall(duration, own_end[1] - queued, window=window, own_cpu=own_end[0] - own_start[0],
                                own_wait_in_window=own_end[1] - own_start[1], others_queue_wait=others)
            if stalled <= self.threshold:
                continue  # the machine was busy, not our loop
            block = Block(duration, stalled, tuple(samples))
            with self._lock:
                self._blocks.append(block)
            if self.on_block is not None:
                try:
                    self.on_block(block)
                except Exception:  # a reporter's bug must not stop the watch
                    log.exception("loop watch: the on_block handler failed")


def threshold_from_env(environ: Mapping[str, str] | None = None) -> float | None:
    """``GHL_DESKTOP_LOOP_WATCH`` in seconds (``"20"`` → 0.02), or None when unset, empty, 0 or invalid."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not raw:
        return None
    try:
        ms = float(raw)
    except ValueError:
        log.warning("%s=%r is not a number of milliseconds; the loop watch stays off", ENV, raw)
        return None
    return ms / 1000 if ms > 0 else None


def log_block(block: Block) -> None:
    log.warning("%s", block.describe())


def watch_from_env(loop: asyncio.AbstractEventLoop | None = None,
                   environ: Mapping[str, str] | None = None) -> LoopWatch | None:
    """The app's debug mode: with ``GHL_DESKTOP_LOOP_WATCH=<ms>`` set, start a :class:`LoopWatch` on
    ``loop`` (default: the running loop; call on the loop thread) that logs every stall; else None.
    The caller stops it when the loop ends."""
    threshold = threshold_from_env(environ)
    if threshold is None:
        return None
    watch = LoopWatch(loop or asyncio.get_running_loop(), threshold, on_block=log_block).start()
    log.info("loop watch on: stalls of the event loop over %.0f ms are logged with their stack", threshold * 1000)
    return watch


__all__ = ["DEFAULT_THRESHOLD", "ENV", "Block", "Frame", "LoopWatch", "log_block", "net_stall",
           "threshold_from_env", "watch_from_env"]
