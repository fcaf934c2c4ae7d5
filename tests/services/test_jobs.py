"""The job runner over the real SQLite queue: what happens to work that fails in each way."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage import engine as storage_engine
from ghl_desktop.core.errors import GhlBadRequest, GhlRateLimited, GhlTransientError, StorageBusy
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import Job, JobState, NewJob
from ghl_desktop.services.events import RunnerProblem
from ghl_desktop.services.jobs import JobRunner, RetryLater, RunnerOptions, backoff_delay

FAST = RunnerOptions(concurrency=4, lease_seconds=5, poll_interval=0.01, max_attempts=3,
                     backoff_base=0.001, backoff_cap=0.005)


def test_backoff_is_capped_and_fully_jittered() -> None:
    for attempt in range(1, 12):
        ceiling = min(30.0, 2.0 ** (attempt - 1))
        sample = [backoff_delay(attempt, 1.0, 30.0) for _ in range(200)]
        assert all(0.1 * ceiling <= d <= ceiling for d in sample)
        if attempt >= 3:  # full jitter: the draws cover the lower half of the step too (equal jitter never did)
            assert min(sample) < ceiling / 2 and max(sample) > ceiling / 2
    assert max(backoff_delay(20, 1.0, 30.0) for _ in range(50)) <= 30.0
    assert backoff_delay(10_000, 1.0, 30.0) <= 30.0  # no overflow for a job retried for days


@pytest.mark.asyncio
async def test_success_transient_and_permanent_outcomes(db: Database) -> None:
    calls: dict[str, int] = {}

    async def handler(job: Job) -> None:
        name = str(job.payload["name"])
        calls[name] = calls.get(name, 0) + 1
        if name == "flaky" and calls[name] < 2:
            raise GhlTransientError("HighLevel 502")
        if name == "bad":
            raise GhlBadRequest("422 message must be a string")
        if name == "always-down":
            raise GhlTransientError("HighLevel 503")

    ids = {n: db.jobs.enqueue(NewJob(kind="k", payload={"name": n}))[0]
           for n in ("ok", "flaky", "bad", "always-down")}
    runner = JobRunner(db.aio.jobs, {"k": handler}, FAST)
    await runner.run_until_idle(10)

    assert db.jobs.get(ids["ok"]).state is JobState.DONE  # type: ignore[union-attr]
    flaky = db.jobs.get(ids["flaky"])
    assert flaky is not None and flaky.state is JobState.DONE and calls["flaky"] == 2
    bad = db.jobs.get(ids["bad"])
    assert bad is not None and bad.state is JobState.DEAD and calls["bad"] == 1
    assert "must be a string" in (bad.last_error or "")
    down = db.jobs.get(ids["always-down"])
    assert down is not None and down.state is JobState.DEAD and calls["always-down"] == FAST.max_attempts
    assert "gave up after 3 attempts" in (down.last_error or "")


@pytest.mark.asyncio
async def test_waiting_never_dead_letters_and_a_bug_is_kept_visible(db: Database) -> None:
    calls = {"wait": 0, "bug": 0}

    async def handler(job: Job) -> None:
        name = str(job.payload["name"])
        calls[name] += 1
        if name == "wait" and calls[name] < 6:  # more than max_attempts waits
            raise RetryLater("number reconnecting", delay=0.001)
        if name == "wait" and calls[name] == 6:
            raise GhlRateLimited(retry_after=0.001)
        if name == "bug":
            raise KeyError("oops")

    wait_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={"name": "wait"}))
    bug_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={"name": "bug"}))
    await JobRunner(db.aio.jobs, {"k": handler}, FAST).run_until_idle(10)
    assert db.jobs.get(wait_id).state is JobState.DONE  # type: ignore[union-attr]
    assert calls["wait"] == 7
    bug = db.jobs.get(bug_id)
    assert bug is not None and bug.state is JobState.DEAD and "internal error" in (bug.last_error or "")


@pytest.mark.asyncio
async def test_dead_job_can_be_retried_by_hand(db: Database) -> None:
    fixed = {"now": False}

    async def handler(job: Job) -> None:
        if not fixed["now"]:
            raise GhlBadRequest("contact has no phone")

    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
    runner = JobRunner(db.aio.jobs, {"k": handler}, FAST)
    await runner.run_until_idle(5)
    assert db.jobs.get(job_id).state is JobState.DEAD  # type: ignore[union-attr]
    fixed["now"] = True
    assert db.jobs.requeue_dead(job_id)
    await runner.run_until_idle(5)
    assert db.jobs.get(job_id).state is JobState.DONE  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_per_key_order_with_concurrency_across_keys(db: Database) -> None:
    seen: list[tuple[str, int]] = []
    active: set[str] = set()
    overlap = {"max": 0}

    async def handler(job: Job) -> None:
        key = str(job.payload["chat"])
        assert key not in active, "two jobs of one chat ran at once"
        active.add(key)
        overlap["max"] = max(overlap["max"], len(active))
        await asyncio.sleep(0.005)
        seen.append((key, int(job.payload["n"])))
        active.discard(key)

    for n in range(5):
        for chat in ("a", "b", "c"):
            db.jobs.enqueue(NewJob(kind="k", payload={"chat": chat, "n": n}, ordering_key=chat))
    runner = JobRunner(db.aio.jobs, {"k": handler}, FAST)
    runner.start()
    try:
        for _ in range(500):
            if len(seen) == 15:
                break
            await asyncio.sleep(0.01)
    finally:
        await runner.stop()
    for chat in ("a", "b", "c"):
        assert [n for c, n in seen if c == chat] == list(range(5))
    assert overlap["max"] > 1  # chats really ran concurrently


@pytest.mark.asyncio
async def test_a_long_job_keeps_its_lease_and_is_not_taken_over(db: Database) -> None:
    """A job running longer than its lease (a big upload) renews it, so no other worker runs it too."""
    started = asyncio.Event()
    release = asyncio.Event()
    runs = 0

    async def slow(job: Job) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    # the lease is renewed every third of it: 1.5 s leaves 1 s of slack for a loaded CI machine's loop
    # (0.3 s flaked under load), and the checks below still run twice past the lease
    options = RunnerOptions(concurrency=1, lease_seconds=1.5, poll_interval=0.01, max_attempts=3)
    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
    runner = JobRunner(db.aio.jobs, {"k": slow}, options, owner="first")
    runner.start()
    try:
        await asyncio.wait_for(started.wait(), 5)
        from ghl_desktop.core.models import utcnow

        for _ in range(12):  # twice past the 1.5 s lease
            await asyncio.sleep(0.25)
            assert db.jobs.lease("second", now=utcnow(), lease_seconds=1.5) == []
    finally:
        release.set()
        await runner.stop()
    job = db.jobs.get(job_id)
    assert job is not None and job.state is JobState.DONE and runs == 1


@pytest.mark.asyncio
async def test_the_runner_purges_old_finished_jobs_and_keeps_the_rest(db: Database) -> None:
    async def ok(job: Job) -> None:
        return None

    first, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
    await JobRunner(db.aio.jobs, {"k": ok}, FAST).run_until_idle(5)
    assert db.jobs.get(first).state is JobState.DONE  # type: ignore[union-attr]
    keep_forever = JobRunner(db.aio.jobs, {"k": ok}, RunnerOptions(keep_done_seconds=0))
    assert await keep_forever.purge() == 0 and db.jobs.get(first) is not None
    keep_a_week = JobRunner(db.aio.jobs, {"k": ok}, RunnerOptions())
    assert await keep_a_week.purge() == 0 and db.jobs.get(first) is not None  # finished moments ago
    tiny = JobRunner(db.aio.jobs, {"k": ok}, RunnerOptions(keep_done_seconds=1e-6))
    await asyncio.sleep(0.01)
    assert await tiny.purge() == 1 and db.jobs.get(first) is None


# --- issue 11 item 5: storage contention is transient; bookkeeping failures are surfaced ------------------


@pytest.fixture
def busy_db(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Database, sqlite3.Connection]]:
    """A real SQLite database whose writers give up after 50 ms on a lock, and a second connection
    (another process, say) that can hold the write lock: ``locker.execute("BEGIN IMMEDIATE")``."""
    monkeypatch.setattr(storage_engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
    database = open_database(sqlite_url, migrate=True)
    path = sqlite_url.removeprefix("sqlite:///")
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        yield database, locker
    finally:
        if locker.in_transaction:
            locker.execute("ROLLBACK")
        locker.close()
        database.close()


async def _until(predicate: Callable[[], object], limit: float = 20.0) -> None:
    """Liveness bound only (not a speed check)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_database_is_locked_is_a_transient_storage_busy(busy_db: tuple[Database, sqlite3.Connection]) -> None:
    db, locker = busy_db
    locker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StorageBusy, match="locked") as caught:
        db.jobs.enqueue(NewJob(kind="k", payload={}))
    assert caught.value.transient
    locker.execute("ROLLBACK")
    assert db.jobs.enqueue(NewJob(kind="k", payload={}))[0]  # and the same write works once the lock is gone


@pytest.mark.asyncio
async def test_a_locked_database_in_a_handler_retries_the_job_instead_of_dead_lettering(
        busy_db: tuple[Database, sqlite3.Connection]) -> None:
    db, locker = busy_db
    runs = {"n": 0}

    async def handler(job: Job) -> None:
        runs["n"] += 1
        if runs["n"] == 1:  # another writer holds the lock while this handler writes
            locker.execute("BEGIN IMMEDIATE")
            try:
                db.jobs.enqueue(NewJob(kind="follow-up", payload={"of": job.id}))
            finally:
                locker.execute("ROLLBACK")

    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
    await JobRunner(db.aio.jobs, {"k": handler}, replace(FAST, max_attempts=1)).run_until_idle(10)
    job = db.jobs.get(job_id)
    assert job is not None and job.state is JobState.DONE, job.last_error if job else None
    assert runs["n"] == 2


@pytest.mark.asyncio
async def test_a_bookkeeping_write_that_keeps_failing_is_surfaced_and_the_job_is_not_lost(
        busy_db: tuple[Database, sqlite3.Connection], caplog: pytest.LogCaptureFixture) -> None:
    db, locker = busy_db
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    bus = EventBus()
    problems: list[RunnerProblem] = []
    bus.subscribe(RunnerProblem, problems.append)
    runs = {"n": 0}

    async def handler(job: Job) -> None:
        runs["n"] += 1
        if runs["n"] == 1:
            locker.execute("BEGIN IMMEDIATE")  # held while the runner records the completion

    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
    runner = JobRunner(db.aio.jobs, {"k": handler}, replace(FAST, lease_seconds=0.5, bookkeeping_retry_delays=(0.01,)),
                       bus=bus)
    try:
        runner.start()
        await _until(lambda: any(p.action == "complete" for p in problems))
        [complete] = [p for p in problems if p.action == "complete"]
        assert complete.job_id == job_id and complete.kind == "k" and "StorageBusy" in complete.error
        assert "locked" in complete.error
        assert runner.problems >= 1
        assert any("could not record complete" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
        job = db.jobs.get(job_id)  # not lost, not dead: still leased, it runs again when the lease expires
        assert job is not None and job.state is JobState.RUNNING

        locker.execute("ROLLBACK")
        await _until(lambda: (j := db.jobs.get(job_id)) is not None and j.state is JobState.DONE)
        assert runs["n"] == 2  # ran again (handlers are idempotent), then recorded
    finally:
        await runner.stop()
        loop.set_exception_handler(previous_handler)
    gc.collect()
    await asyncio.sleep(0)
    assert not unhandled, unhandled  # no "Task exception was never retrieved"


# --- issue 11 item 6: shutdown has a deadline -------------------------------------------------------------


@pytest.mark.asyncio
async def test_stop_cancels_a_stuck_job_after_the_grace_and_releases_it_for_the_next_start(db: Database) -> None:
    started = asyncio.Event()
    runs = {"n": 0}

    async def handler(job: Job) -> None:
        runs["n"] += 1
        if runs["n"] == 1:
            started.set()
            await asyncio.Event().wait()  # stuck (HighLevel retries for minutes, say)

    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
    runner = JobRunner(db.aio.jobs, {"k": handler}, replace(FAST, lease_seconds=3600))
    runner.start()
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(runner.stop(grace=0.05), 10)  # liveness bound: without a deadline it never returns
    job = db.jobs.get(job_id)
    assert job is not None and job.state is JobState.PENDING  # released, not waiting an hour for its lease
    assert "interrupted by shutdown" in (job.last_error or "")

    await JobRunner(db.aio.jobs, {"k": handler}, FAST).run_until_idle(10)  # the next start runs it at once
    assert db.jobs.get(job_id).state is JobState.DONE  # type: ignore[union-attr]
    assert runs["n"] == 2


@pytest.mark.asyncio
async def test_stop_waits_for_jobs_that_finish_within_the_grace(db: Database) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await release.wait()

    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
    runner = JobRunner(db.aio.jobs, {"k": handler}, FAST)
    runner.start()
    await asyncio.wait_for(started.wait(), 10)
    stopping = asyncio.ensure_future(runner.stop(grace=30))
    await asyncio.sleep(0.05)
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert db.jobs.get(job_id).state is JobState.DONE  # type: ignore[union-attr]
