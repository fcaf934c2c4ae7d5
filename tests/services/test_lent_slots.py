"""The job runner's slots are shared by every location: a job waiting for its location's HighLevel rate
window lends its slot out (core/slots.py), so one location out of budget does not stall another's jobs
(issue 12, ``budget_use``). Over the real SQLite queue and the client's own rate scheduler; the
scheduler's clock is the test's, so a window stays closed until the test opens it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import pytest

from ghl_desktop.adapters.ghl.rate import RateHeaders, RateLimitConfig, RateScheduler
from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.models import Job, JobState, NewJob
from ghl_desktop.services.jobs import JobRunner, RunnerOptions

OPTIONS = RunnerOptions(concurrency=2, lease_seconds=3600, poll_interval=0.01, max_attempts=3,
                        backoff_base=0.001, backoff_cap=0.005)


async def _until(predicate: Callable[[], object], limit: float = 20.0) -> None:
    """Liveness bound only (not a speed check)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_location_out_of_budget_does_not_stall_another_locations_jobs(db: Database) -> None:
    now = [0.0]
    scheduler = RateScheduler(RateLimitConfig(window_seconds=3600, max_per_window=1), clock=lambda: now[0])
    closed, other = scheduler.limiter("location:A"), scheduler.limiter("location:B")
    other.max = 1000
    async with closed.slot():  # location A's one request this (test-clock) hour: its window is closed
        pass

    done: list[str] = []
    active_seen: list[int] = []
    runner: JobRunner

    handlers = [0]

    async def handler(job: Job) -> None:
        handlers[0] += 1
        try:
            location = str(job.payload["location"])
            async with scheduler.limiter(f"location:{location}").slot():
                # handlers running that hold a slot (not waiting for a window outside it)
                active_seen.append(handlers[0] - runner.lent_slots)
                done.append(str(job.payload["name"]))
        finally:
            handlers[0] -= 1

    def enqueue(location: str, chat: str, name: str) -> int:
        return db.jobs.enqueue(NewJob(kind="k", payload={"location": location, "name": name},
                                      ordering_key=f"{location}:{chat}"))[0]

    # location A's jobs first (leased first): four chats, one with two messages; then B's two chats
    a_ids = [enqueue("A", f"a{k}", f"a{k}") for k in range(4)] + [enqueue("A", "a0", "a0-second")]
    b_names = [f"b0-{i}" for i in range(3)] + ["b1-0"]
    b_ids = [enqueue("B", name[:2], name) for name in b_names]

    runner = JobRunner(db.aio.jobs, {"k": handler}, OPTIONS)
    runner.start()
    try:
        # more of A's jobs wait for its window than the runner has slots, yet B's jobs all ran, in order
        await _until(lambda: len(done) == len(b_names) and runner.lent_slots == 4 and runner.active_jobs == 0)
        assert [name for name in done if name.startswith("b0")] == ["b0-0", "b0-1", "b0-2"]
        assert set(done) == set(b_names)
        for job_id in a_ids[:4]:  # still leased: their chats keep their place
            job = db.jobs.get(job_id)
            assert job is not None and job.state is JobState.RUNNING
        assert db.jobs.get(a_ids[4]).state is JobState.PENDING  # type: ignore[union-attr]  # behind a0

        # A's window opens: its waiting jobs take their slots back (never more than the runner has)
        closed.max = 1000
        now[0] += 3600
        await closed.observe(RateHeaders(), status=200)  # wakes the waiting requests
        await _until(lambda: len(done) == len(a_ids) + len(b_ids))
    finally:
        await runner.stop()

    assert len(done) == len(set(done))  # each job ran once
    assert done.index("a0") < done.index("a0-second")
    assert max(active_seen) <= OPTIONS.concurrency
    assert runner.lent_slots == 0 and runner.active_jobs == 0
    await _until(lambda: all(db.jobs.get(i).state is JobState.DONE for i in a_ids + b_ids))  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_with_no_slots_to_lend_a_waiting_job_keeps_its_slot(db: Database) -> None:
    """``max_lent=0``: the old behaviour (a waiting job holds its slot): B's job cannot start while
    both slots wait for A's window — the case the lending removes."""
    now = [0.0]
    scheduler = RateScheduler(RateLimitConfig(window_seconds=3600, max_per_window=1), clock=lambda: now[0])
    closed = scheduler.limiter("location:A")
    scheduler.limiter("location:B").max = 1000
    async with closed.slot():
        pass
    done: list[str] = []

    async def handler(job: Job) -> None:
        location = str(job.payload["location"])
        async with scheduler.limiter(f"location:{location}").slot():
            done.append(str(job.payload["name"]))

    for k in range(2):
        db.jobs.enqueue(NewJob(kind="k", payload={"location": "A", "name": f"a{k}"}, ordering_key=f"A:a{k}"))
    db.jobs.enqueue(NewJob(kind="k", payload={"location": "B", "name": "b0"}, ordering_key="B:b0"))
    runner = JobRunner(db.aio.jobs, {"k": handler}, replace(OPTIONS, max_lent=0))
    runner.start()
    try:
        await _until(lambda: closed.waiting == 2)
        for _ in range(20):  # let the runner tick a few times: it has no free slot for B's job
            await asyncio.sleep(0.01)
        assert done == [] and runner.lent_slots == 0 and runner.active_jobs == 2
        closed.max = 1000
        now[0] += 3600
        await closed.observe(RateHeaders(), status=200)
        await _until(lambda: len(done) == 3)
    finally:
        await runner.stop()
    assert set(done) == {"a0", "a1", "b0"}
