"""An in-memory :class:`ghl_desktop.core.ports.JobQueue` for tests that need a queue but not SQL.

Implements the port's contract: dedupe on ``dedupe_key``, due-time and per-``ordering_key`` ordering
on lease, expired leases re-claimable. ``fail_writes`` simulates a database that refuses writes.

Tests inspect it synchronously (``queue.count()``); services get ``queue.aio``, the same queue as
:class:`ghl_desktop.core.ports.AsyncJobQueue` (its methods run inline: there is no disk to wait for).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from ghl_desktop.core.errors import StorageError
from ghl_desktop.core.models import Job, JobState, NewJob, utcnow
from ghl_desktop.core.ports import AsyncJobQueue


class MemoryJobQueue:
    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._by_dedupe: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.fail_writes = False
        self._aio: AsyncJobQueue | None = None

    @property
    def aio(self) -> AsyncJobQueue:
        """This queue as the services take it (awaitable methods)."""
        if self._aio is None:
            self._aio = cast(AsyncJobQueue, InlineAsync(self))
        return self._aio

    def enqueue(self, job: NewJob) -> tuple[int, bool]:
        if self.fail_writes:
            raise StorageError("database is locked")
        if job.dedupe_key is not None and job.dedupe_key in self._by_dedupe:
            return self._by_dedupe[job.dedupe_key], False
        job_id = next(self._ids)
        now = utcnow()
        self._jobs[job_id] = Job(
            id=job_id,
            kind=job.kind,
            payload=copy.deepcopy(job.payload),
            state=JobState.PENDING,
            attempts=0,
            next_attempt_at=job.run_at or now,
            dedupe_key=job.dedupe_key,
            ordering_key=job.ordering_key,
            created_at=now,
            updated_at=now,
        )
        if job.dedupe_key is not None:
            self._by_dedupe[job.dedupe_key] = job_id
        return job_id, True

    def lease(self, owner: str, *, now: datetime, lease_seconds: float, limit: int = 10,
              kinds: Sequence[str] | None = None,
              prepare: Callable[[Sequence[Job]], object] | None = None) -> list[Job]:
        taken: list[Job] = []
        blocked: set[str] = set()
        for job in sorted(self._jobs.values(), key=lambda j: j.id):
            if job.state in (JobState.DONE, JobState.DEAD):
                continue
            key = job.ordering_key
            if key is not None and key in blocked:
                continue
            if key is not None:
                blocked.add(key)
            if kinds is not None and job.kind not in kinds:
                continue
            due = (job.state is JobState.PENDING and job.next_attempt_at <= now) or (
                job.state is JobState.RUNNING and job.lease_until is not None and job.lease_until <= now
            )
            if not due or len(taken) >= limit:
                continue
            leased = replace(job, state=JobState.RUNNING, lease_owner=owner,
                             lease_until=now + timedelta(seconds=lease_seconds), attempts=job.attempts + 1)
            self._jobs[job.id] = leased
            taken.append(leased)
        if prepare is not None:
            prepare(taken)
        return taken

    def _own(self, job_id: int, owner: str) -> Job:
        job = self._jobs[job_id]
        if job.lease_owner != owner:
            raise StorageError(f"job {job_id} is not leased by {owner}")
        return job

    def extend_lease(self, job_id: int, owner: str, *, until: datetime) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.lease_owner != owner or job.state is not JobState.RUNNING:
            return False
        self._jobs[job_id] = replace(job, lease_until=until)
        return True

    def purge_done(self, *, finished_before: datetime) -> int:
        gone = [i for i, j in self._jobs.items() if j.state is JobState.DONE and j.updated_at < finished_before]
        for i in gone:
            job = self._jobs.pop(i)
            if job.dedupe_key is not None:
                self._by_dedupe.pop(job.dedupe_key, None)
        return len(gone)

    def complete(self, job_id: int, owner: str) -> None:
        self._jobs[job_id] = replace(self._own(job_id, owner), state=JobState.DONE, lease_owner=None,
                                     lease_until=None)

    def complete_many(self, job_ids: Sequence[int], owner: str) -> int:
        held = [i for i in job_ids if i in self._jobs and self._jobs[i].lease_owner == owner
                and self._jobs[i].state is JobState.RUNNING]
        for job_id in held:
            self.complete(job_id, owner)
        return len(held)

    def complete_and_lease(self, done: Sequence[int], owner: str, *, now: datetime, lease_seconds: float,
                           limit: int = 10, kinds: Sequence[str] | None = None,
                           routes: Sequence[str] | None = None,
                           finish: Mapping[int, Callable[[], object]] | None = None,
                           prepare: Callable[[Sequence[Job]], object] | None = None) -> list[Job]:
        finished = []
        for job_id in done:
            write = (finish or {}).get(job_id)
            try:
                if write is not None:
                    write()
            except Exception:
                continue
            finished.append(job_id)
        self.complete_many(finished, owner)
        return self.lease(owner, now=now, lease_seconds=lease_seconds, limit=limit, kinds=kinds, prepare=prepare)

    def retry_later(self, job_id: int, owner: str, *, error: str, run_at: datetime) -> None:
        self._jobs[job_id] = replace(self._own(job_id, owner), state=JobState.PENDING, lease_owner=None,
                                     lease_until=None, next_attempt_at=run_at, last_error=error)

    def dead_letter(self, job_id: int, owner: str, *, error: str) -> None:
        self._jobs[job_id] = replace(self._own(job_id, owner), state=JobState.DEAD, lease_owner=None,
                                     lease_until=None, last_error=error)

    def requeue_dead(self, job_id: int) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.DEAD:
            return False
        self._jobs[job_id] = replace(job, state=JobState.PENDING, attempts=0, next_attempt_at=utcnow())
        return True

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def count(self, state: str | None = None) -> int:
        return sum(1 for j in self._jobs.values() if state is None or j.state == state)

    def count_backlog(self) -> int:
        held = {j.ordering_key: j.id for j in sorted(self._jobs.values(), key=lambda j: -j.id)
                if j.waiting_reason is not None and j.ordering_key is not None}
        return sum(1 for j in self._jobs.values() if j.state is JobState.PENDING and j.waiting_reason is None
                   and not (j.ordering_key in held and held[j.ordering_key] < j.id))

    def list(self, state: str | None = None, limit: int = 100) -> list[Job]:
        jobs = [j for j in sorted(self._jobs.values(), key=lambda j: j.id) if state is None or j.state == state]
        return jobs[:limit]


class InlineAsync:
    """Awaitable facade over an in-memory fake: ``await facade.m(...)`` calls ``target.m(...)`` inline."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self.target, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call
