"""The runner's side of "stuck forever, silently" (issue 11 item 2), over the real SQLite queue: a job
blocked on a person or time carries its reason, leaves the webhook backlog, and dead-letters after the
maximum wait (a setting)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from ghl_desktop.adapters.storage import Database
from ghl_desktop.adapters.storage.orm import JobRow
from ghl_desktop.config import load_settings
from ghl_desktop.core.models import WAITING_PREFIX, Job, JobState, NewJob, utcnow
from ghl_desktop.services.jobs import DEFAULT_MAX_WAIT_SECONDS, JobRunner, RetryLater, RunnerOptions
from tests.fakes.job_queue import MemoryJobQueue

FAST = RunnerOptions(concurrency=4, lease_seconds=5, poll_interval=0.01, max_attempts=3,
                     backoff_base=0.001, backoff_cap=0.005, max_wait_seconds=600.0)


def _created(db: Database, job_id: int, seconds_ago: float) -> None:
    with db.jobs._tx.write() as s:  # test-only: backdate the job
        s.execute(update(JobRow).where(JobRow.id == job_id).values(
            created_at=utcnow() - timedelta(seconds=seconds_ago), next_attempt_at=utcnow()))


@pytest.mark.asyncio
async def test_a_blocked_job_waits_with_its_reason_and_dead_letters_after_the_maximum_wait(db: Database) -> None:
    async def blocked(job: Job) -> None:
        raise RetryLater("location needs reconnect", delay=3600, blocked=True)

    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={"session_id": "s1"}, ordering_key="chat"))
    behind, _ = db.jobs.enqueue(NewJob(kind="k", payload={"session_id": "s1"}, ordering_key="chat"))
    other, _ = db.jobs.enqueue(NewJob(kind="other", payload={}))
    runner = JobRunner(db.aio.jobs, {"k": blocked}, FAST)
    await runner._tick()
    for task in list(runner._running):
        await task

    job = db.jobs.get(job_id)
    assert job is not None and job.state is JobState.PENDING
    assert job.last_error == WAITING_PREFIX + "location needs reconnect"
    assert job.waiting_reason == "location needs reconnect"
    assert db.jobs.get(behind).waiting_reason is None  # type: ignore[union-attr]  # never ran: queued behind
    # backlog: only ``other`` runs by itself; the blocked job and the one behind it do not count
    assert db.jobs.count("pending") == 3 and db.jobs.count_backlog() == 1
    assert db.jobs.waiting_by_payload("k", ("session_id",)) == {"s1": {"location needs reconnect": 1}}

    _created(db, job_id, 601)
    await runner._tick()
    for task in list(runner._running):
        await task
    dead = db.jobs.get(job_id)
    assert dead is not None and dead.state is JobState.DEAD and dead.waiting_reason is None
    assert dead.last_error == "gave up after waiting 10 min — location needs reconnect"
    assert db.jobs.get(other).state is JobState.PENDING  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_zero_waits_forever_and_a_plain_retry_later_is_not_blocked(db: Database) -> None:
    async def handler(job: Job) -> None:
        raise RetryLater("number reconnecting", delay=3600, blocked=bool(job.payload["blocked"]))

    blocked, _ = db.jobs.enqueue(NewJob(kind="k", payload={"blocked": True}))
    plain, _ = db.jobs.enqueue(NewJob(kind="k", payload={"blocked": False}))
    _created(db, blocked, 10 * DEFAULT_MAX_WAIT_SECONDS)
    _created(db, plain, 10 * DEFAULT_MAX_WAIT_SECONDS)
    runner = JobRunner(db.aio.jobs, {"k": handler}, RunnerOptions(**{**FAST.__dict__, "max_wait_seconds": 0.0}))
    await runner._tick()
    for task in list(runner._running):
        await task
    assert db.jobs.get(blocked).waiting_reason == "number reconnecting"  # type: ignore[union-attr]
    assert db.jobs.get(plain).last_error == "number reconnecting"  # type: ignore[union-attr]
    assert db.jobs.get(plain).waiting_reason is None  # type: ignore[union-attr]
    assert db.jobs.count_backlog() == 1  # the plain wait (a reconnect WhatsApp does by itself) is backlog


def test_the_memory_queue_counts_the_backlog_like_sql() -> None:
    queue = MemoryJobQueue()
    first, _ = queue.enqueue(NewJob(kind="k", payload={}, ordering_key="a"))
    queue.enqueue(NewJob(kind="k", payload={}, ordering_key="a"))
    queue.enqueue(NewJob(kind="k", payload={}))
    [leased] = queue.lease("me", now=utcnow(), lease_seconds=5, limit=1)
    assert leased.id == first
    queue.retry_later(first, "me", error=WAITING_PREFIX + "banned", run_at=utcnow() + timedelta(hours=1))
    assert queue.count("pending") == 3 and queue.count_backlog() == 1


def test_the_maximum_wait_is_a_setting() -> None:
    assert load_settings({}).max_wait_seconds == 24 * 3600.0
    assert load_settings({"GHL_DESKTOP_MAX_WAIT_SECONDS": "3600"}).max_wait_seconds == 3600.0
