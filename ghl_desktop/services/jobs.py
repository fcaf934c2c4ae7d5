"""The job runner: leases durable jobs and runs their handlers, concurrently across ordering keys.

Why a runner of our own: every unit of bridge work (post an inbound message, send an agent's reply,
push a status) is a row in the ``jobs`` table first. The runner leases rows (so a crashed process's
work is picked up again when the lease expires), runs the handler for the row's kind, and then
completes, reschedules (transient failures, capped jittered backoff) or dead-letters it (permanent
failures, or too many attempts) with a readable reason the user can see and retry by hand.

Bookkeeping is batched (group commit): jobs that finish while a completion write is in flight wait for
the next one, and that one write completes them all AND leases due jobs for the slots they free
(``complete_and_lease``: one transaction). A chat's next message is leased in the same commit that
completes the previous one, so the runner does not pay a lease round trip per finished job. A job
counts as done only once that write committed; a crash before it runs the job again (at-least-once,
handlers are idempotent), and per-``ordering_key`` order is the queue's, unchanged. A handler may hand
its last write to that transaction (:func:`finish_with_completion`): one commit for both. A runner with
``prepare`` (per kind, a blocking read) runs it for each job it leases in the same hop to the storage
thread as the lease; the handler finds the result with :func:`prepared` instead of reading again.

Wake-ups: a new job wakes the runner for a lease at once, unless a job of its ``ordering_key`` is running
here (``wake(key)``): it cannot be leased before that one is done, and the write completing that one
leases it. Such a wake-up is kept until the key has no job running here, and fires then (the new job may
have committed after that write's lease). A job completed by the batched write needs no wake-up of its
own: that write already leased for the slot it freed.

Slots are lent while a job waits for its location's HighLevel rate window (core/slots.py): such a job
keeps its lease and its chat's place, but its slot runs another job meanwhile (another location's, with
budget), and it takes a slot back, before any newly leased job, when the window opens. One location out
of budget therefore does not stall the others (bench/budget.py). At most ``max_lent`` jobs wait so at
once; past that a waiting job keeps its slot. A runner with a ``gate`` (the history import's, behind live
work) never lends: more of its jobs waiting for a window would go ahead of the live ones when it opens.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ghl_desktop.core.backoff import backoff_delay as core_backoff_delay
from ghl_desktop.core.errors import GhlDesktopError, GhlRateLimited, StorageBusy
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import WAITING_PREFIX, Job, utcnow
from ghl_desktop.core.ports import AsyncJobQueue
from ghl_desktop.core.slots import SLOT_LENDER
from ghl_desktop.core.storage_lane import BACKGROUND
from ghl_desktop.services.events import RunnerProblem

log = logging.getLogger("ghl.jobs")

JobHandler = Callable[[Job], Awaitable[None]]

#: what the runner's ``prepare`` read for the running job when it was leased (set per job task)
_prepared: contextvars.ContextVar[object | None] = contextvars.ContextVar("ghl_job_prepared", default=None)

#: the last writes the running job's handler handed to its completion (set per job task by the runner)
_last_writes: contextvars.ContextVar[list[tuple[Callable[[], object], Callable[[Any], None] | None]] | None] = (
    contextvars.ContextVar("ghl_job_last_writes", default=None))


def finish_with_completion(write: Callable[[], object], then: Callable[[Any], None] | None = None) -> bool:
    """For a handler's LAST step: run ``write`` (a blocking function over the repositories of the queue's
    database) in the transaction that completes the job, so the job's result and its completion are one
    commit; ``then(result)`` runs on the loop once it committed. Nothing may come after it in the handler
    (a handler that raises afterwards has it discarded). False when the handler does not run under a
    :class:`JobRunner` (a direct call): then the caller writes itself."""
    pending = _last_writes.get()
    if pending is None:
        return False
    pending.append((write, then))
    return True


def prepared() -> object | None:
    """In a handler: what the runner's ``prepare`` for its kind read when the job was leased (right
    before it started), or None (no ``prepare``, it failed, or a direct call): then read yourself."""
    return _prepared.get()


class _LastWrites:
    """A job's handed-over last writes: run together on the storage thread, results kept for ``then``."""

    def __init__(self, items: list[tuple[Callable[[], object], Callable[[Any], None] | None]]) -> None:
        self.items = list(items)
        self.results: list[object] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        self.results, self.error = [], None
        try:
            for write, _then in self.items:
                self.results.append(write())
        except BaseException as exc:
            self.error = exc
            raise

    def deliver(self, job: Job) -> None:
        for (_write, then), result in zip(self.items, self.results, strict=True):
            if then is None:
                continue
            try:
                then(result)
            except Exception:
                log.exception("job %s (%s): the after-commit step of its last write failed", job.id, job.kind)


class RetryLater(Exception):
    """Raised by a handler that cannot make progress yet (e.g. the number is reconnecting).

    ``blocked=True``: held up by something only a person or time fixes (the location needs reconnecting
    or was uninstalled, the number is banned). The job then carries the reason visibly
    (``Job.waiting_reason``), does not count toward the webhook backlog, and is dead-lettered with the
    reason once it has waited ``RunnerOptions.max_wait_seconds``."""

    def __init__(self, reason: str, delay: float | None = None, *, blocked: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.blocked = blocked


#: how long a blocked job (see RetryLater) waits before it is dead-lettered with its reason
DEFAULT_MAX_WAIT_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class RunnerOptions:
    concurrency: int = 8
    lease_seconds: float = 60.0
    poll_interval: float = 0.5
    max_attempts: int = 8
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    #: a job failing with a *transient* error (HighLevel 5xx, a timeout) keeps being retried, every
    #: ``backoff_cap`` at most, until it is at least this old, even past ``max_attempts``: an outage of
    #: an hour must not dead-letter an hour of messages. 0: ``max_attempts`` alone decides (tests).
    transient_retry_seconds: float = 0.0
    #: finished jobs are deleted this long after they finished (the messages they carried stay; every
    #: handler is idempotent on the messages' unique keys). 0: keep them forever.
    keep_done_seconds: float = 7 * 24 * 3600.0
    purge_interval: float = 3600.0
    #: waits before re-trying a bookkeeping write (complete / retry / dead-letter) the database refused
    #: as busy; after the last one the job is left to its lease (RunnerProblem published)
    bookkeeping_retry_delays: tuple[float, ...] = (0.05, 0.2, 1.0)
    #: quitting: jobs in flight get this long to finish; the rest are cancelled and released to run
    #: again at the next start (handlers are idempotent; a release that fails leaves the lease to expire)
    stop_grace_seconds: float = 4.0
    #: a job blocked on a person or time (RetryLater(blocked=True)) is dead-lettered with its reason once
    #: it is this old; 0: waits forever. None: DEFAULT_MAX_WAIT_SECONDS (the runtime passes the
    #: setting ``max_wait_seconds`` / GHL_DESKTOP_MAX_WAIT_SECONDS)
    max_wait_seconds: float | None = None
    #: jobs that may wait for a location's rate window outside their slots at once (core/slots.py),
    #: each still leased; past that a waiting job keeps its slot. 0: never lend a slot
    max_lent: int = 64


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """A job's retry wait (attempt counts from 1): the product's backoff (core.backoff), full jitter
    with a floor of a tenth of the step so a failing job never spins."""
    return core_backoff_delay(attempt - 1, base, cap, min_fraction=0.1)


def _duration(seconds: float) -> str:
    """``25 h``, ``90 min``, ``40 s``: a wait as a person reads it."""
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


class JobRunner:
    def __init__(
        self,
        queue: AsyncJobQueue,
        handlers: dict[str, JobHandler],
        options: RunnerOptions = RunnerOptions(),
        *,
        owner: str | None = None,
        bus: EventBus | None = None,
        gate: Callable[[], Awaitable[bool]] | None = None,
        prepare: Mapping[str, Callable[[Job], object]] | None = None,
        follow: Mapping[str, int] | None = None,
    ) -> None:
        self._queue = queue
        #: per kind, how many of a leased job's next jobs on its key come along (a run, see _run_chain)
        self._follow = {kind: n for kind, n in (follow or {}).items() if n > 0}
        #: chained jobs handed to the batched completion while their run goes on (see _settle)
        self._settling: set[asyncio.Task[None]] = set()
        #: per kind, a blocking read run on the storage thread for each leased job (see :func:`prepared`)
        self._prepare = dict(prepare or {})
        self._prepared: dict[int, object] = {}
        #: ordering keys of the jobs running here (how many each), and keys whose wake-up waits for them
        self._keys: dict[str, int] = {}
        self._deferred: set[str] = set()
        self._bus = bus
        #: asked before each lease; False: lease nothing this tick (the history import's runner leases
        #: only while live work is idle, services/bridge/history.py)
        self._gate = gate
        #: bookkeeping / lease failures so far (each also logged and, with a bus, published)
        self.problems = 0
        self._handlers = handlers
        self._options = options
        self._owner = owner or f"runner-{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._main: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._in_flight: set[int] = set()
        self._paused = False
        #: finished jobs waiting for the next completion write (and whether each frees its slot), and the
        #: task doing that write
        self._finished: list[tuple[Job, _LastWrites | None, asyncio.Future[bool], bool]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: slots promised to a lease in flight (a tick's lease and a flush's lease may overlap)
        self._reserved = 0
        #: jobs running without a slot (waiting for a rate window, core/slots.py); of them, those whose
        #: wait is over and that wait for a slot back (they come before new leases)
        self._lent = 0
        self._returning = 0
        self._slot_freed = asyncio.Event()

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def active_jobs(self) -> int:
        """Jobs holding a slot (running, not waiting outside their slot for a rate window)."""
        return len(self._running) - self._lent

    @property
    def lent_slots(self) -> int:
        """Jobs waiting for a rate window without holding a slot."""
        return self._lent

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Lease no new jobs (the user paused bridging); jobs in flight finish normally."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    def wake(self, key: str | None = None) -> None:
        """New work was enqueued: look now instead of at the next poll. ``key``: the new job's ordering
        key; while a job of that key runs here the wake-up waits until none does (see the module doc)."""
        if key is not None and self._keys.get(key):
            self._deferred.add(key)
            return
        self._wake.set()

    def _lease_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"prepare": self._prepare_leased} if self._prepare else {}
        if self._follow:
            options["follow"] = self._follow
        return options

    def _prepare_leased(self, jobs: Sequence[Job]) -> None:
        """(storage thread, right after the lease) Each leased job's ``prepare`` read, kept for its task."""
        for job in jobs:
            read = self._prepare.get(job.kind)
            if read is None:
                continue
            try:
                self._prepared[job.id] = read(job)
            except Exception as exc:  # its handler reads for itself (and meets the error there, if it lasts)
                self._prepared.pop(job.id, None)  # never an earlier lease's reads
                log.info("job %s (%s): reading ahead failed (%s); its handler reads itself", job.id, job.kind, exc)

    def start(self) -> None:
        if self._main is None:
            self._stopping = False
            context = contextvars.copy_context()
            context.run(BACKGROUND.set, True)  # leases and purges wait while the intake's calls do
            self._main = asyncio.get_running_loop().create_task(self._loop(), name="job-runner", context=context)

    async def stop(self, grace: float | None = None) -> None:
        """Stop leasing; give the jobs in flight ``grace`` seconds (default ``stop_grace_seconds``) to
        finish, then cancel the rest. A cancelled job is released to run again right away at the next
        start (its handler is idempotent), so a job stuck in HTTP retries cannot hold up quitting."""
        limit = self._options.stop_grace_seconds if grace is None else grace
        self._stopping = True
        self._wake.set()
        if self._main is not None:
            await self._main
            self._main = None
        if not self._running:
            await self._flushed()
            return
        _done, late = await asyncio.wait(set(self._running), timeout=max(0.0, limit))
        if late:
            log.warning("stopping: %d job(s) still running after %.1f s; cancelled, they run again next start",
                        len(late), limit)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._flushed()

    async def _flushed(self) -> None:
        """Wait until the completion writes in flight are done (they outlive a cancelled job's task)."""
        while (self._flusher is not None and not self._flusher.done()) or self._settling:
            pending = [t for t in (self._flusher, *self._settling) if t is not None and not t.done()]
            if not pending:
                break
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_until_idle(self, limit_seconds: float = 30.0) -> None:
        """Process due jobs until none is left pending or running (used by tests and shutdown)."""
        deadline = asyncio.get_running_loop().time() + limit_seconds
        while asyncio.get_running_loop().time() < deadline:
            await self._tick()
            if self._running:
                await asyncio.wait(list(self._running), return_when=asyncio.FIRST_COMPLETED)
                continue
            if await self._queue.count("pending") == 0 and await self._queue.count("running") == 0:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("jobs still pending")

    async def purge(self) -> int:
        """Delete jobs that finished more than ``keep_done_seconds`` ago (0: never)."""
        if self._options.keep_done_seconds <= 0:
            return 0
        purged = await self._queue.purge_done(
            finished_before=utcnow() - timedelta(seconds=self._options.keep_done_seconds))
        if purged:
            log.info("purged %d finished jobs", purged)
        return purged

    async def _loop(self) -> None:
        next_purge = 0.0
        while not self._stopping:
            # cleared BEFORE the tick: a wake-up (enqueue, finished job) during the tick is not lost
            self._wake.clear()
            try:
                if asyncio.get_running_loop().time() >= next_purge:
                    next_purge = asyncio.get_running_loop().time() + self._options.purge_interval
                    await self.purge()
                await self._tick()
            except Exception as exc:
                log.exception("job runner tick failed; retrying")
                self._problem("lease", exc)
            try:
                await asyncio.wait_for(self._wake.wait(), self._options.poll_interval)
            except TimeoutError:
                pass

    def _free_slots(self, finishing: int = 0) -> int:
        """Slots a lease may fill now: ``finishing`` jobs (still counted as running) are being completed
        by the same write; leases in flight have their slots reserved."""
        if self._stopping or self._paused:
            return 0
        return max(0, self._options.concurrency - self.active_jobs - self._returning + finishing - self._reserved)

    def _lender(self) -> Callable[[], AbstractAsyncContextManager[None]]:
        """One job's :data:`core.slots.SLOT_LENDER`: while its context is open the job holds no slot
        (nested or concurrent waits of the same job lend its one slot once)."""
        depth = 0

        @asynccontextmanager
        async def lend() -> AsyncIterator[None]:
            nonlocal depth
            if depth == 0 and self._lent >= self._options.max_lent:
                yield  # enough jobs wait without a slot: this one waits in its own
                return
            depth += 1
            if depth == 1:
                self._lent += 1
                self._slot_freed.set()  # a job waiting for a slot back takes it, else a lease fills it
                self._wake.set()
            try:
                yield
            except BaseException:
                depth -= 1
                if depth == 0:
                    self._lent -= 1
                raise
            depth -= 1
            if depth > 0:
                return
            self._returning += 1
            try:
                # a slot back, before any newly leased job (_free_slots keeps one for each returning job)
                while self.active_jobs >= self._options.concurrency:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
            finally:
                self._returning -= 1
                self._lent -= 1
        return lend

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        self._slot_freed.set()

    async def _tick(self) -> None:
        free = self._free_slots()
        if free <= 0:
            return
        if self._gate is not None and not await self._gate():
            return
        self._reserved += free
        try:
            jobs = await self._queue.lease(
                self._owner,
                now=utcnow(),
                lease_seconds=self._options.lease_seconds,
                limit=free,
                kinds=list(self._handlers),
                **self._lease_options(),
            )
        finally:
            self._reserved -= free
        self._start(jobs)

    def _start(self, jobs: list[Job]) -> None:
        runs: list[list[tuple[Job, contextvars.Context]]] = []
        by_key: dict[str, list[tuple[Job, contextvars.Context]]] = {}
        for job in jobs:
            ready = self._prepared.pop(job.id, None)
            if job.id in self._in_flight:
                continue
            self._in_flight.add(job.id)
            if job.ordering_key is not None:
                self._keys[job.ordering_key] = self._keys.get(job.ordering_key, 0) + 1
            context = self._job_context(ready)
            run = by_key.get(job.ordering_key) if job.ordering_key is not None and self._follow else None
            if run is not None:  # a follower: after the jobs before it on its key, in the same slot
                run.append((job, context))
                continue
            runs.append([(job, context)])
            if job.ordering_key is not None and self._follow:
                by_key[job.ordering_key] = runs[-1]
        for run in runs:
            first = run[0][0]
            task: asyncio.Task[Any]
            if len(run) == 1:
                task = asyncio.get_running_loop().create_task(self._run(first), name=f"job-{first.id}-{first.kind}",
                                                              context=run[0][1])
            else:  # the run's own calls (renewals, give-backs) on the background lane too
                task = asyncio.get_running_loop().create_task(self._run_chain(run), name=f"run-{first.id}-{len(run)}",
                                                              context=self._job_context(None))
            self._running.add(task)
            task.add_done_callback(self._task_done)

    def _job_context(self, ready: object | None) -> contextvars.Context:
        """A job's task context: its read-ahead, its own last-writes list, its storage lane, its lender."""
        context = contextvars.copy_context()
        context.run(_prepared.set, ready)
        context.run(_last_writes.set, [])  # this job's own list (finish_with_completion)
        context.run(BACKGROUND.set, True)  # its storage calls wait while the intake's do (core.storage_lane)
        # a wait for a rate window frees its slot (core.slots); not in a gated runner (the history
        # import's): it runs behind live work, so never more than its slots' jobs wait ahead of it
        context.run(SLOT_LENDER.set, self._lender() if self._gate is None else None)
        return context

    async def _run_chain(self, run: list[tuple[Job, contextvars.Context]]) -> None:
        """One key's leased job and its followers, one after another in this one slot. Each job but the
        last is handed to the batched completion and the next one starts at once (its completion is
        written while the next job runs, see :meth:`_settle`); the last one completes as a single job
        does, freeing the slot. A job that does not complete (retry, dead letter, cancelled) ends the
        run: the followers after it go back to the queue unstarted (``release``), behind it."""
        waiting = [job for job, _ in run]
        beat = asyncio.get_running_loop().create_task(self._heartbeat_waiting(waiting),
                                                      name=f"lease-run-{run[0][0].id}")
        try:
            for i, (job, context) in enumerate(run):
                waiting.remove(job)  # its own heartbeat renews it from now on
                chained = i < len(run) - 1
                step = asyncio.get_running_loop().create_task(self._run(job, chained=chained),
                                                              name=f"job-{job.id}-{job.kind}", context=context)
                if await step != "complete":
                    break
        finally:
            beat.cancel()
            if waiting:
                await self._give_back(waiting)

    async def _give_back(self, jobs: list[Job]) -> None:
        """A run's followers that never started: pending again (their attempt not counted), no longer ours."""
        try:
            await self._queue.release([job.id for job in jobs], self._owner)
        except Exception as exc:  # their leases expire and they run then, in order
            log.warning("could not give back %d job(s) of a run (%s); their leases will expire", len(jobs), exc)
        for job in jobs:
            self._in_flight.discard(job.id)
            self._key_done(job.ordering_key)
        self._wake.set()

    async def _heartbeat_waiting(self, jobs: list[Job]) -> None:
        """Renew the leases of a run's followers while they wait for their turn (``jobs`` shrinks as each
        one starts and renews its own)."""
        interval = max(self._options.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            until = utcnow() + timedelta(seconds=self._options.lease_seconds)
            for job in list(jobs):
                try:
                    await self._queue.extend_lease(job.id, self._owner, until=until)
                except Exception as exc:
                    log.warning("job %s (%s): could not renew the lease (%s); trying again", job.id, job.kind, exc)

    async def _heartbeat(self, job: Job) -> None:
        """Renew the lease while a long job runs (a 100 MB upload), so it is not taken over as crashed.
        A renewal the database refuses (busy) is tried again at the next beat, not raised."""
        interval = max(self._options.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            until = utcnow() + timedelta(seconds=self._options.lease_seconds)
            try:
                renewed = await self._queue.extend_lease(job.id, self._owner, until=until)
            except Exception as exc:
                log.warning("job %s (%s): could not renew the lease (%s); trying again", job.id, job.kind, exc)
                self._problem("renew", exc, job)
                continue
            if not renewed:
                log.warning("job %s (%s): lease lost while running", job.id, job.kind)
                return

    async def _run(self, job: Job, *, chained: bool = False) -> str:
        """Run one job and record its outcome; returns the action ("complete", "retry", "dead-letter").
        ``chained`` (a run's job with followers): a completion is handed to the batched write and this
        returns at once, the write finishing in :meth:`_settle` while the next job runs."""
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(job), name=f"lease-{job.id}")
        batched = False  # completed by the batched write, which leased for its slot already
        settling = False  # handed to _settle, which does the bookkeeping below when it is written
        try:
            try:
                action, write = await self._outcome(job)
            except asyncio.CancelledError:
                await self._release(job)
                raise
            handed = _last_writes.get()
            last = _LastWrites(handed) if handed else None
            if action == "complete":
                if chained:
                    settle = asyncio.get_running_loop().create_task(self._settle(job, last, write),
                                                                    name=f"complete-{job.id}")
                    self._settling.add(settle)
                    settle.add_done_callback(self._settling.discard)
                    settling = True
                    return action
                if await self._complete(job, last):
                    batched = True
                    return action
                if last is not None:
                    write = self._complete_alone(job, last)
            elif last is not None:
                log.warning("job %s (%s): its handler failed after handing over its last write; not written",
                            job.id, job.kind)
            await self._record(job, action, write)
            return action
        finally:
            heartbeat.cancel()
            if not settling:
                self._in_flight.discard(job.id)
                if self._key_done(job.ordering_key) or not batched:
                    self._wake.set()

    async def _settle(self, job: Job, last: _LastWrites | None, write: Callable[[], Awaitable[object]]) -> None:
        """A chained job's completion: in the next batched write (it frees no slot: its run goes on), else
        recorded alone with the bookkeeping retries. A crash before it committed runs the job again
        (at-least-once, as for any job; its handler is idempotent)."""
        try:
            if not await self._complete(job, last, frees_slot=False):
                await self._record(job, "complete", self._complete_alone(job, last) if last is not None else write)
        finally:
            self._in_flight.discard(job.id)
            if self._key_done(job.ordering_key):
                self._wake.set()

    def _key_done(self, key: str | None) -> bool:
        """One job of ``key`` no longer runs here; True when a wake-up waited for its key to be free."""
        if key is None:
            return False
        left = self._keys.get(key, 0) - 1
        if left > 0:
            self._keys[key] = left
            return False
        self._keys.pop(key, None)
        if key in self._deferred:
            self._deferred.discard(key)
            return True
        return False

    async def _outcome(self, job: Job) -> tuple[str, Callable[[], Awaitable[object]]]:
        """Run the handler; return the bookkeeping write its result calls for (not yet done)."""
        opts = self._options
        try:
            await self._handlers[job.kind](job)
        except RetryLater as later:
            delay = later.delay if later.delay is not None else backoff_delay(
                job.attempts, opts.backoff_base, opts.backoff_cap)
            reason = later.reason
            if later.blocked:
                limit = DEFAULT_MAX_WAIT_SECONDS if opts.max_wait_seconds is None else opts.max_wait_seconds
                waited = (utcnow() - job.created_at).total_seconds()
                if limit > 0 and waited >= limit:
                    reason = f"gave up after waiting {_duration(waited)} — {reason}"
                    log.warning("job %s (%s) dead-lettered: %s", job.id, job.kind, reason)
                    return "dead-letter", lambda: self._queue.dead_letter(job.id, self._owner, error=reason)
                reason = WAITING_PREFIX + reason
            return "retry", lambda: self._reschedule(job, reason, delay, counted=False)
        except GhlRateLimited as limited:
            reason, delay = str(limited), max(limited.retry_after, 0.1)
            return "retry", lambda: self._reschedule(job, reason, delay, counted=False)
        except StorageBusy as busy:
            # our own database was locked / full: says nothing about the job, so it never uses up
            # attempts nor dead-letters; retried with backoff until the database takes writes again
            reason = f"{type(busy).__name__}: {busy}"
            delay = backoff_delay(job.attempts, opts.backoff_base, opts.backoff_cap)
            return "retry", lambda: self._reschedule(job, reason, delay, counted=False)
        except GhlDesktopError as error:
            reason = f"{type(error).__name__}: {error}"
            if error.transient and self._keeps_trying(job):
                delay = backoff_delay(job.attempts, opts.backoff_base, opts.backoff_cap)
                return "retry", lambda: self._reschedule(job, reason, delay, counted=False)
            if error.transient:
                reason = f"gave up after {job.attempts} attempts — {reason}"
            log.warning("job %s (%s) dead-lettered: %s", job.id, job.kind, reason)
            return "dead-letter", lambda: self._queue.dead_letter(job.id, self._owner, error=reason)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug: keep the job, visible, not lost
            log.exception("job %s (%s) crashed", job.id, job.kind)
            reason = f"internal error: {error!r}"
            if job.attempts < opts.max_attempts:
                delay = backoff_delay(job.attempts, opts.backoff_base, opts.backoff_cap)
                return "retry", lambda: self._reschedule(job, reason, delay)
            return "dead-letter", lambda: self._queue.dead_letter(job.id, self._owner, error=reason)
        return "complete", lambda: self._queue.complete(job.id, self._owner)

    def _complete_alone(self, job: Job, last: _LastWrites) -> Callable[[], Awaitable[object]]:
        """The bookkeeping write of a job whose batch failed: its last writes and its completion, alone."""
        async def write() -> None:
            await self._queue.complete_and_lease([job.id], self._owner, now=utcnow(),
                                                 lease_seconds=self._options.lease_seconds, limit=0,
                                                 finish={job.id: last.run})
            if last.error is not None:
                raise last.error
            last.deliver(job)
        return write

    async def _complete(self, job: Job, last: _LastWrites | None = None, *, frees_slot: bool = True) -> bool:
        """Have ``job`` completed by the next batched write (with its handler's ``last`` writes); True
        once it committed, False when that write failed (the caller then records it alone, with the
        bookkeeping retries). ``frees_slot``: that write leases for the slot this job frees."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._finished.append((job, last, done, frees_slot))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="job-completions")
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        """Complete every finished job in one write, leasing due jobs for the slots they free; repeat
        while jobs finished during the write (group commit: the batch is whatever piled up)."""
        while self._finished:
            batch, self._finished = self._finished, []
            free = self._free_slots(finishing=sum(1 for *_, frees in batch if frees))
            self._reserved += free
            try:
                if free and self._gate is not None and not await self._gate():
                    self._reserved -= free
                    free = 0
                finish = {job.id: last.run for job, last, _, _ in batch if last is not None}
                extra: dict[str, Any] = {"finish": finish} if finish else {}
                jobs = await self._queue.complete_and_lease(
                    [job.id for job, *_ in batch], self._owner, now=utcnow(),
                    lease_seconds=self._options.lease_seconds, limit=free, kinds=list(self._handlers), **extra,
                    **self._lease_options())
            except Exception as exc:
                log.info("completing %d job(s) together failed (%s); recording them one by one", len(batch), exc)
                jobs, ok = [], False
            else:
                ok = True
            finally:
                self._reserved -= free
            for job, last, done, _ in batch:
                written = ok and (last is None or last.error is None)
                if written and last is not None:
                    last.deliver(job)
                if not done.done():
                    done.set_result(written)
            self._start(jobs)

    async def _release(self, job: Job) -> None:
        """A job cancelled mid-run (shutdown): due again now, not after its lease expires; not an attempt
        that failed. If the database refuses, the lease expiring does the same, later."""
        try:
            await self._queue.retry_later(job.id, self._owner, error="interrupted by shutdown; runs again",
                                    run_at=utcnow())
        except Exception as exc:
            log.warning("job %s (%s): could not release it at shutdown (%s); its lease will expire",
                        job.id, job.kind, exc)

    async def _record(self, job: Job, action: str, write: Callable[[], Awaitable[object]]) -> bool:
        """Run one bookkeeping write (complete / retry / dead-letter), retrying storage contention a
        few times. A write that still fails is logged and published as ``RunnerProblem``, never left
        to "Task exception was never retrieved": the job stays leased to us and runs again when the
        lease expires (handlers are idempotent), so nothing is lost."""
        delays = self._options.bookkeeping_retry_delays
        for attempt in range(len(delays) + 1):
            try:
                await write()
                return True
            except Exception as exc:
                transient = isinstance(exc, GhlDesktopError) and exc.transient
                if transient and attempt < len(delays):
                    log.info("job %s (%s): %s deferred, database busy (%s)", job.id, job.kind, action, exc)
                    await asyncio.sleep(delays[attempt])
                    continue
                log.error("job %s (%s): could not record %s (%s); it runs again when its lease expires",
                          job.id, job.kind, action, exc, exc_info=not transient)
                self._problem(action, exc, job)
                return False
        return False  # pragma: no cover - the loop always returns

    def _problem(self, action: str, exc: BaseException, job: Job | None = None) -> None:
        self.problems += 1
        if self._bus is None:
            return
        self._bus.publish(RunnerProblem(action=action, error=f"{type(exc).__name__}: {exc}",
                                        job_id=job.id if job else None, kind=job.kind if job else None))

    def _keeps_trying(self, job: Job) -> bool:
        """A transient failure is retried while attempts remain or the job is younger than the window."""
        if job.attempts < self._options.max_attempts:
            return True
        age = (utcnow() - job.created_at).total_seconds()
        return age < self._options.transient_retry_seconds

    async def _reschedule(self, job: Job, reason: str, delay: float, *, counted: bool = True) -> None:
        """``counted=False``: waiting is not failing (a number reconnecting, a rate limit), so it never
        dead-letters the job."""
        if counted and job.attempts >= self._options.max_attempts:
            await self._queue.dead_letter(job.id, self._owner,
                                          error=f"gave up after {job.attempts} attempts — {reason}")
            return
        log.info("job %s (%s) retry in %.1fs: %s", job.id, job.kind, delay, reason)
        await self._queue.retry_later(job.id, self._owner, error=reason, run_at=utcnow() + timedelta(seconds=delay))
