"""The job runner's runs (``follow``): a leased job brings its chat's next jobs along and runs them one
after another in its slot, each starting before the one before it has its completion written — over
the real SQLite queue. What must hold: each chat's order, each job once, nothing lost when a job in
the middle of a run fails or the runner stops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.errors import GhlTransientError
from ghl_desktop.core.models import Job, JobState, NewJob
from ghl_desktop.services.jobs import JobRunner, RunnerOptions

FAST = RunnerOptions(concurrency=2, lease_seconds=5, poll_interval=0.01, max_attempts=3,
                     backoff_base=0.001, backoff_cap=0.005)
FOLLOW = {"post": 7}


class CountingQueue:
    """The real async queue, counting the leases that brought jobs (and, when ``hold`` is set, holding
    every completion write until it is released)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.leases = 0
        self.hold: asyncio.Event | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def lease(self, *args: Any, **kwargs: Any) -> Sequence[Job]:
        jobs = await self._inner.lease(*args, **kwargs)
        self.leases += bool(jobs)
        return jobs  # type: ignore[no-any-return]

    async def complete_and_lease(self, *args: Any, **kwargs: Any) -> Sequence[Job]:
        if self.hold is not None:
            await self.hold.wait()
        jobs = await self._inner.complete_and_lease(*args, **kwargs)
        self.leases += bool(jobs)
        return jobs  # type: ignore[no-any-return]


def enqueue(db: Database, names: list[str], key: str) -> list[int]:
    return [db.jobs.enqueue(NewJob(kind="post", payload={"name": n}, ordering_key=key))[0] for n in names]


@pytest.mark.asyncio
async def test_a_chats_jobs_run_in_order_from_one_lease(db: Database) -> None:
    a = enqueue(db, [f"a{i}" for i in range(8)], "chat:A")
    b = enqueue(db, [f"b{i}" for i in range(3)], "chat:B")
    seen: list[str] = []

    async def post(job: Job) -> None:
        seen.append(str(job.payload["name"]))
        await asyncio.sleep(0)

    queue = CountingQueue(db.aio.jobs)
    runner = JobRunner(queue, {"post": post}, FAST, follow=FOLLOW)  # type: ignore[arg-type]
    await runner.run_until_idle(10)

    assert sorted(seen) == sorted([f"a{i}" for i in range(8)] + [f"b{i}" for i in range(3)])  # each once
    assert [n for n in seen if n.startswith("a")] == [f"a{i}" for i in range(8)]
    assert [n for n in seen if n.startswith("b")] == ["b0", "b1", "b2"]
    assert all(db.jobs.get(i).state is JobState.DONE for i in a + b)  # type: ignore[union-attr]
    # one lease brought both chats' runs (a0 + 7 followers, b0 + 2); one job per key per lease needs 8
    assert queue.leases == 1


@pytest.mark.asyncio
async def test_the_next_job_of_a_run_does_not_wait_for_the_one_before_to_be_written(db: Database) -> None:
    ids = enqueue(db, ["a0", "a1", "a2"], "chat:A")
    queue = CountingQueue(db.aio.jobs)
    queue.hold = asyncio.Event()  # no completion is written until a2 runs
    states_seen: list[JobState] = []

    async def post(job: Job) -> None:
        if job.payload["name"] == "a2":
            before = await db.aio.jobs.get(ids[1])
            assert before is not None
            states_seen.append(before.state)
            queue.hold.set()  # type: ignore[union-attr]

    runner = JobRunner(queue, {"post": post}, FAST, follow=FOLLOW)  # type: ignore[arg-type]
    await runner.run_until_idle(10)  # a run that waited for each write would never get to a2: timeout
    assert states_seen == [JobState.RUNNING]  # a1 finished, its completion not yet written
    assert all(db.jobs.get(i).state is JobState.DONE for i in ids)  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_retry_in_the_middle_gives_the_rest_back_unstarted_and_order_holds(db: Database) -> None:
    ids = enqueue(db, ["a0", "a1", "a2", "a3"], "chat:A")
    seen: list[str] = []

    async def post(job: Job) -> None:
        name = str(job.payload["name"])
        seen.append(name)
        if name == "a1" and seen.count("a1") == 1:
            raise GhlTransientError("HighLevel 502")

    runner = JobRunner(db.aio.jobs, {"post": post}, FAST, follow=FOLLOW)
    await runner.run_until_idle(10)

    assert seen == ["a0", "a1", "a1", "a2", "a3"]  # a2 and a3 waited for a1's retry
    jobs = [db.jobs.get(i) for i in ids]
    assert all(j is not None and j.state is JobState.DONE for j in jobs)
    # given back unstarted: their first lease's attempt was not counted
    assert [j.attempts for j in jobs if j is not None] == [1, 2, 1, 1]


@pytest.mark.asyncio
async def test_stopping_during_a_run_releases_the_job_and_its_waiting_followers(db: Database) -> None:
    ids = enqueue(db, ["a0", "a1", "a2"], "chat:A")
    started = asyncio.Event()
    seen: list[str] = []

    async def stuck(job: Job) -> None:
        seen.append(str(job.payload["name"]))
        started.set()
        await asyncio.Event().wait()  # an upload that never ends

    runner = JobRunner(db.aio.jobs, {"post": stuck}, FAST, follow=FOLLOW)
    runner.start()
    await asyncio.wait_for(started.wait(), 5)
    await runner.stop(grace=0)

    assert seen == ["a0"]
    jobs = [db.jobs.get(i) for i in ids]
    assert all(j is not None and j.state is JobState.PENDING and j.lease_owner is None for j in jobs)
    assert [j.attempts for j in jobs if j is not None][1:] == [0, 0]  # the followers never started

    seen.clear()

    async def post(job: Job) -> None:
        seen.append(str(job.payload["name"]))

    await JobRunner(db.aio.jobs, {"post": post}, FAST, follow=FOLLOW).run_until_idle(10)
    assert seen == ["a0", "a1", "a2"]
