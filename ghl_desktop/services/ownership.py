"""Number ownership in a cluster of workers (issue 14): which worker connects which WhatsApp number.

Several ``ghl-desktop headless --db-url postgresql+psycopg://…`` processes (and windows) share one
PostgreSQL. Each linked number is held by exactly one of them through a lease in ``number_leases``
(``adapters/storage/ownership.py``):

* every ``heartbeat_seconds`` the worker renews its worker row and its leases (to ``now +
  takeover_seconds``, database time) and computes its fair share, ``ceil(numbers / live workers)``:
  below it, it claims free or expired numbers (the epoch goes up) and connects them; above it (a
  worker joined), it disconnects the extra numbers FIRST and then releases them for the others;
* a lease the database did not renew (expired, or taken over: the epoch moved on) is dropped at once,
  and a lease this worker could not renew in time (the database unreachable) is dropped by a watchdog
  ``heartbeat_seconds`` before it can expire — so the number is disconnected here before another
  worker, which only claims after the expiry, connects it;
* jobs that need a number's connection carry its id in ``jobs.route``; :class:`RoutedQueue` leases
  only unrouted jobs and those of the numbers held here, and completes a routed job only under the
  epoch it was held with (``complete_fenced``): a stale worker's completion is refused and the job
  runs again on the new holder (handlers are idempotent).

On one desktop (SQLite) none of this runs: the process holds every number (``is_cluster``).
All database work goes through the storage executor (``run``); nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ghl_desktop.core.errors import SessionNotConnected
from ghl_desktop.core.models import Job
from ghl_desktop.services.jobs import JobHandler, RetryLater

log = logging.getLogger("ghl.ownership")

T = TypeVar("T")

#: GHL_DESKTOP_WORKER names this process in the cluster (``--worker NAME`` sets it); default host-pid
WORKER_ENV = "GHL_DESKTOP_WORKER"
HEARTBEAT_ENV = "GHL_DESKTOP_HEARTBEAT_SECONDS"
TAKEOVER_ENV = "GHL_DESKTOP_TAKEOVER_SECONDS"


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def worker_name(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (env.get(WORKER_ENV) or "").strip() or default_worker_name()


@dataclass(frozen=True)
class OwnershipOptions:
    #: how often a worker renews its leases and rebalances
    heartbeat_seconds: float = 5.0
    #: a lease not renewed for this long expires and may be taken over (the dead worker's numbers)
    takeover_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.heartbeat_seconds <= 0 or self.takeover_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("takeover_seconds must be at least twice heartbeat_seconds (both positive)")

    @property
    def margin(self) -> float:
        """A lease not renewed is let go this long before it can expire (time to disconnect)."""
        return self.heartbeat_seconds

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OwnershipOptions:
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for name, attr in ((HEARTBEAT_ENV, "heartbeat_seconds"), (TAKEOVER_ENV, "takeover_seconds")):
            raw = (env.get(name) or "").strip()
            if raw:
                try:
                    values[attr] = float(raw)
                except ValueError:
                    raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from None
        return cls(**values)


class Connector(Protocol):
    """The sessions service as ownership sees it."""

    async def connect_held(self) -> object: ...
    async def release(self, session_id: str) -> None: ...


class OwnershipService:
    def __init__(
        self,
        repo: Any,
        run: Callable[..., Awaitable[Any]],
        sessions: Connector,
        worker: str,
        options: OwnershipOptions | None = None,
    ) -> None:
        self.repo = repo
        self.run = run
        self.sessions = sessions
        self.worker = worker
        self.options = options or OwnershipOptions()
        self._held: dict[str, int] = {}
        self._deadline: dict[str, float] = {}
        #: connectable numbers NOT held here (another worker's, or waiting for a takeover): a job that
        #: needs one is handed to its holder (ClusterSessions)
        self.elsewhere: frozenset[str] = frozenset()
        #: job id -> (number, epoch) of the held connection the job used: its completion is fenced
        self.used: dict[int, tuple[str, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one tick / let-go sequence at a time
        self._stopping = False

    # --- what this worker holds ---------------------------------------------------------------------

    def holds(self, session_id: str) -> bool:
        deadline = self._deadline.get(session_id)
        return deadline is not None and asyncio.get_running_loop().time() < deadline

    def held_ids(self) -> list[str]:
        return sorted(sid for sid in self._held if self.holds(sid))

    def epoch(self, session_id: str) -> int | None:
        return self._held.get(session_id) if self.holds(session_id) else None

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """First heartbeat now (claims this worker's share and connects it), then every interval."""
        if self._task is not None:
            return
        self._stopping = False
        await self.tick()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._beat(), name="ownership-heartbeat")
        self._watchdog = loop.create_task(self._watch(), name="ownership-watchdog")

    async def stop(self) -> None:
        """A clean stop: disconnect every number, then release them all at once (the others take
        them at their next heartbeat, not after the expiry)."""
        self._stopping = True
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._watchdog = None
        async with self._lock:
            for sid in list(self._held):
                await self._disconnect(sid, "stopping")
            try:
                await self.run(self.repo.leave, self.worker)
            except Exception as exc:  # the leases then expire by themselves
                log.warning("could not release this worker's numbers (%s); they expire in %.0f s",
                            exc, self.options.takeover_seconds)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_seconds)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ownership heartbeat failed; trying again")

    async def _watch(self) -> None:
        """Let go of every lease whose renewal is overdue, even while a heartbeat hangs on the database."""
        step = min(1.0, self.options.heartbeat_seconds / 2)
        while True:
            await asyncio.sleep(step)
            now = asyncio.get_running_loop().time()
            for sid in [s for s, d in self._deadline.items() if now >= d]:
                log.warning("number %s: lease not renewed in time; disconnecting before it can be taken over", sid)
                await self._disconnect(sid, "lease not renewed in time")

    # --- one heartbeat ------------------------------------------------------------------------------

    async def tick(self) -> None:
        async with self._lock:
            if self._stopping:
                return
            o = self.options
            loop = asyncio.get_running_loop()
            sent = loop.time()
            view = await self.run(self.repo.tick, self.worker, o.takeover_seconds)
            for sid in [s for s in self._held if s not in view.held or view.held[s] != self._held[s]]:
                log.warning("number %s: lease lost (expired or taken over); disconnecting", sid)
                await self._disconnect(sid, "lease lost")
            adopted = False
            for sid, epoch in view.held.items():
                if sid not in self._held:  # held under this name by a previous process (killed, restarted)
                    log.info("number %s: still leased to %s (epoch %d) from before; connecting it", sid,
                             self.worker, epoch)
                    self._held[sid] = epoch
                    adopted = True
                self._deadline[sid] = sent + o.takeover_seconds - o.margin
            claimable = set(view.claimable)
            # logged out, banned...: nobody's (a number being linked stays with the process linking it)
            gone = sorted(s for s in self._held if s not in claimable and s not in view.linking)
            target = math.ceil(len(claimable) / max(1, view.live_workers)) if claimable else 0
            keep = sorted(s for s in self._held if s in claimable)
            extra = keep[target:] if len(keep) > target else []
            for sid in gone + extra:
                await self._disconnect(sid, "rebalancing" if sid in extra else "no longer connectable")
            if gone or extra:
                await self.run(self.repo.release, self.worker, gone + extra)
            if gone:  # their waiting jobs go back to any worker (which then fails or waits them visibly)
                await self.run(self.repo.unroute, gone)
                if extra:
                    log.info("released %d number(s) for other workers (share %d of %d over %d workers)",
                             len(extra), target, len(claimable), view.live_workers)
            want = target - len([sid for sid in self._held if sid in claimable])
            if want > 0:
                sent = loop.time()
                got = await self.run(self.repo.claim, self.worker, want, o.takeover_seconds)
                for sid, epoch in got.items():
                    self._held[sid] = epoch
                    self._deadline[sid] = sent + o.takeover_seconds - o.margin
                    log.info("number %s: held by %s (epoch %d)", sid, self.worker, epoch)
                    adopted = adopted or bool(got)
            self.elsewhere = frozenset(claimable - set(self._held))
            if adopted:
                await self.sessions.connect_held()

    async def hold_new(self, session_id: str) -> bool:
        """A number this process is linking: hold its lease from the start (renewed by the heartbeat
        if it runs; a linking-only process releases it when it stops), so no worker connects it while
        it pairs."""
        sent = asyncio.get_running_loop().time()
        epoch = await self.run(self.repo.claim_one, self.worker, session_id, self.options.takeover_seconds)
        if epoch is None:
            return False
        self._held[session_id] = epoch
        self._deadline[session_id] = sent + self.options.takeover_seconds - self.options.margin
        return True

    async def _disconnect(self, session_id: str, why: str) -> None:
        """Stop the number's connection here; it stops counting as held at once (sends, leases)."""
        self._held.pop(session_id, None)
        self._deadline.pop(session_id, None)
        try:
            await self.sessions.release(session_id)
        except Exception:
            log.exception("number %s: disconnecting (%s) failed", session_id, why)


class RoutedQueue:
    """The job queue as a cluster worker's runner sees it: leases only unrouted jobs and the jobs of the
    numbers held here; completes a routed job only under the epoch it is held with."""

    def __init__(self, queue: Any, ownership: OwnershipService) -> None:
        self._queue = queue
        self._own = ownership
        self._routes: dict[int, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    def _remember(self, jobs: list[Job]) -> list[Job]:
        for job in jobs:
            if job.route is not None:
                self._routes[job.id] = job.route
        return jobs

    async def lease(self, owner: str, *, now: datetime, lease_seconds: float, limit: int = 10,
                    kinds: Sequence[str] | None = None, routes: Sequence[str] | None = None,
                    prepare: Callable[[Sequence[Job]], object] | None = None,
                    follow: Mapping[str, int] | None = None) -> list[Job]:
        # ``follow`` is not passed on: a fenced job is completed on its own, so a worker runs no followers
        extra = {"prepare": prepare} if prepare is not None else {}
        return self._remember(await self._queue.lease(owner, now=now, lease_seconds=lease_seconds, limit=limit,
                                                      kinds=kinds, routes=self._own.held_ids(), **extra))

    def _fence_of(self, job_id: int) -> tuple[str, int] | None:
        """(number, epoch) a job's completion must be checked against: the held connection it used (at
        that epoch), else its route (at the epoch held now; -1 if not held: refused). None: not WhatsApp-side."""
        used = self._own.used.pop(job_id, None)
        route = self._routes.pop(job_id, None)
        if used is not None:
            return used
        if route is not None:
            epoch = self._own.epoch(route)
            return route, -1 if epoch is None else epoch
        return None

    async def _fenced(self, job_id: int, owner: str, fence: tuple[str, int]) -> bool:
        return bool(await self._own.run(self._own.repo.complete_fenced, job_id, owner, worker=self._own.worker,
                                        session_id=fence[0], epoch=fence[1]))

    async def complete(self, job_id: int, owner: str) -> None:
        fence = self._fence_of(job_id)
        if fence is None:
            await self._queue.complete(job_id, owner)
        else:
            await self._fenced(job_id, owner, fence)

    async def _split(self, job_ids: Sequence[int], owner: str) -> tuple[list[int], int]:
        plain: list[int] = []
        n = 0
        for job_id in job_ids:
            fence = self._fence_of(job_id)
            if fence is None:
                plain.append(job_id)
            else:
                n += int(await self._fenced(job_id, owner, fence))
        return plain, n

    async def complete_many(self, job_ids: Sequence[int], owner: str) -> int:
        plain, n = await self._split(job_ids, owner)
        return n + (int(await self._queue.complete_many(plain, owner)) if plain else 0)

    async def complete_and_lease(self, done: Sequence[int], owner: str, *, now: datetime, lease_seconds: float,
                                 limit: int = 10, kinds: Sequence[str] | None = None,
                                 routes: Sequence[str] | None = None,
                                 finish: Mapping[int, Callable[[], object]] | None = None,
                                 prepare: Callable[[Sequence[Job]], object] | None = None,
                                 follow: Mapping[str, int] | None = None) -> list[Job]:
        finish = dict(finish or {})  # ``follow``: not passed on (see lease)
        for job_id in done:  # a fenced job's last write goes first, on its own (then its fenced completion)
            if job_id in finish and (job_id in self._routes or job_id in self._own.used):
                await self._own.run(finish.pop(job_id))
        plain, _n = await self._split(done, owner)
        return self._remember(await self._queue.complete_and_lease(
            plain, owner, now=now, lease_seconds=lease_seconds, limit=limit, kinds=kinds,
            routes=self._own.held_ids(), **({"finish": finish} if finish else {}),
            **({"prepare": prepare} if prepare is not None else {})))

    async def release(self, job_ids: Sequence[int], owner: str) -> int:
        for job_id in job_ids:
            self._forget(job_id)
        return int(await self._queue.release(job_ids, owner))

    def _forget(self, job_id: int) -> None:
        self._routes.pop(job_id, None)
        self._own.used.pop(job_id, None)

    async def retry_later(self, job_id: int, owner: str, *, error: str, run_at: datetime) -> None:
        self._forget(job_id)
        await self._queue.retry_later(job_id, owner, error=error, run_at=run_at)

    async def dead_letter(self, job_id: int, owner: str, *, error: str) -> None:
        self._forget(job_id)
        await self._queue.dead_letter(job_id, owner, error=error)


#: the job the current task's handler runs (set by ``track_jobs``), for ClusterSessions
_current_job: ContextVar[Job | None] = ContextVar("ghl_current_job", default=None)


def track_jobs(handlers: dict[str, JobHandler]) -> dict[str, JobHandler]:
    """The runner's handlers, each running with its job known to :class:`ClusterSessions`."""

    def wrap(handler: JobHandler) -> JobHandler:
        async def run(job: Job) -> None:
            token = _current_job.set(job)
            try:
                await handler(job)
            finally:
                _current_job.reset(token)

        return run

    return {kind: wrap(handler) for kind, handler in handlers.items()}


class _Elsewhere:
    """The transport of a number another worker holds: whatever the job wants of it, the job is handed
    to that worker (its route is set and it goes back to the queue)."""

    def __init__(self, owner: ClusterSessions, session_id: str) -> None:
        self._owner = owner
        self._session_id = session_id

    def __getattr__(self, name: str) -> Any:
        async def hand_over(*_args: Any, **_kwargs: Any) -> Any:
            await self._owner.hand_over(self._session_id)

        return hand_over


class ClusterSessions:
    """The sessions service as a cluster worker's bridge sees it (``SessionAccess``): numbers held here
    behave as on a desktop (and the job's completion is fenced with their epoch); a number held by
    another worker looks connected, and the first thing a job does with it hands the job over."""

    def __init__(self, sessions: Any, ownership: OwnershipService, owner: Callable[[], str]) -> None:
        self._s = sessions
        self._own = ownership
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)

    def _note_use(self, session_id: str) -> None:
        job = _current_job.get()
        epoch = self._own.epoch(session_id)
        if job is not None and epoch is not None:
            self._own.used[job.id] = (session_id, epoch)

    def transport_for(self, session_id: str) -> Any:
        if self._own.holds(session_id):
            transport = self._s.transport_for(session_id)
            if transport is not None:
                self._note_use(session_id)
            return transport
        if session_id in self._own.elsewhere:
            return _Elsewhere(self, session_id)
        return None

    async def hand_over(self, session_id: str) -> None:
        """Route the running job to ``session_id``'s holder and give it back (RetryLater, no wait)."""
        job = _current_job.get()
        if job is None:
            raise SessionNotConnected("this WhatsApp number is connected on another worker")
        await self._own.run(self._own.repo.route_job, job.id, self._owner(), session_id)
        log.info("job %s (%s): handed to the worker holding number %s", job.id, job.kind, session_id)
        raise RetryLater(f"handed to the worker holding number {session_id}", 0.0)

    async def _guard(self, session_id: str) -> None:
        if self._own.holds(session_id):
            self._note_use(session_id)
        elif session_id in self._own.elsewhere:
            await self.hand_over(session_id)

    async def send(self, session_id: str, call: Any) -> Any:
        await self._guard(session_id)
        return await self._s.send(session_id, call)

    async def send_text(self, session_id: str, chat: str, text: str, **kw: Any) -> Any:
        await self._guard(session_id)
        return await self._s.send_text(session_id, chat, text, **kw)

    async def send_media(self, session_id: str, chat: str, media: Any, **kw: Any) -> Any:
        await self._guard(session_id)
        return await self._s.send_media(session_id, chat, media, **kw)

    async def send_reaction(self, session_id: str, *args: Any, **kw: Any) -> Any:
        await self._guard(session_id)
        return await self._s.send_reaction(session_id, *args, **kw)

    async def edit(self, session_id: str, *args: Any) -> Any:
        await self._guard(session_id)
        return await self._s.edit(session_id, *args)

    async def revoke(self, session_id: str, *args: Any) -> Any:
        await self._guard(session_id)
        return await self._s.revoke(session_id, *args)


__all__ = [
    "HEARTBEAT_ENV", "TAKEOVER_ENV", "WORKER_ENV", "ClusterSessions", "OwnershipOptions", "OwnershipService",
    "RoutedQueue", "default_worker_name", "track_jobs", "worker_name",
]
