"""The job runner's batched bookkeeping over the real queue: finished jobs are completed together with
the lease of the slots they free (``complete_and_lease``), per-chat order and at-least-once unchanged."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.adapters.storage.offloop import THREAD_PREFIX
from ghl_desktop.core.errors import StorageBusy
from ghl_desktop.core.models import Job, JobState, NewJob
from ghl_desktop.core.ports import AsyncJobQueue
from ghl_desktop.services.jobs import JobRunner, RunnerOptions, finish_with_completion, prepared

FAST = RunnerOptions(concurrency=4, lease_seconds=5, poll_interval=0.01, max_attempts=3,
                     backoff_base=0.001, backoff_cap=0.005)


class SlowBatches:
    """The real async queue, with each ``complete_and_lease`` taking a while (a busy disk) and counted;
    ``fail`` makes the next ones refuse (database busy) before touching the database."""

    def __init__(self, queue: AsyncJobQueue, delay: float = 0.05) -> None:
        self._queue = queue
        self.delay = delay
        self.batches: list[int] = []
        self.leases = 0  # lease calls of their own (the runner's ticks)
        self.fail = 0
        #: (job id, step): the step runs once, right after the write that completed that job returned
        self.after: tuple[int, Callable[[], Awaitable[object]]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def lease(self, owner: str, **more: Any) -> list[Job]:
        self.leases += 1
        jobs: list[Job] = await self._queue.lease(owner, **more)
        return jobs

    async def complete_and_lease(self, done: Sequence[int], owner: str, *, now: datetime, lease_seconds: float,
                                 limit: int = 10, kinds: Sequence[str] | None = None,
                                 **more: Any) -> list[Job]:
        self.batches.append(len(done))
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise StorageBusy("database is locked")
        jobs: list[Job] = await self._queue.complete_and_lease(done, owner, now=now, lease_seconds=lease_seconds,
                                                               limit=limit, kinds=kinds, **more)
        if self.after is not None and self.after[0] in done:
            step, self.after = self.after[1], None
            await step()
        return jobs


@pytest.mark.asyncio
async def test_finished_jobs_are_completed_in_batches_in_chat_order(db: Database) -> None:
    seen: list[tuple[str, int]] = []
    active: set[str] = set()

    async def handler(job: Job) -> None:
        chat = str(job.payload["chat"])
        assert chat not in active, "two jobs of one chat ran at once"
        active.add(chat)
        await asyncio.sleep(0.001)
        seen.append((chat, int(job.payload["n"])))
        active.discard(chat)

    chats = [f"c{i}" for i in range(8)]
    for n in range(6):
        for chat in chats:
            db.jobs.enqueue(NewJob(kind="k", payload={"chat": chat, "n": n}, ordering_key=chat))
    queue = SlowBatches(db.aio.jobs)
    runner = JobRunner(queue, {"k": handler}, RunnerOptions(**{**FAST.__dict__, "concurrency": 8}))  # type: ignore[arg-type]
    await runner.run_until_idle(30)
    for chat in chats:
        assert [n for c, n in seen if c == chat] == list(range(6))
    assert db.jobs.count("done") == 48 and db.jobs.count("running") == 0 and db.jobs.count("pending") == 0
    # one write per batch, not per job: while a write is in flight, the chats finishing pile up
    assert sum(queue.batches) == 48
    assert len(queue.batches) < 48 and max(queue.batches) > 1, queue.batches


@pytest.mark.asyncio
async def test_a_failed_batch_is_recorded_job_by_job(db: Database) -> None:
    runs: list[int] = []

    async def handler(job: Job) -> None:
        runs.append(job.id)

    ids = [db.jobs.enqueue(NewJob(kind="k", payload={"n": i}, ordering_key="one"))[0] for i in range(3)]
    queue = SlowBatches(db.aio.jobs, delay=0.0)
    queue.fail = 1  # the first batch write is refused: the job is completed on its own instead
    await JobRunner(queue, {"k": handler}, FAST).run_until_idle(10)  # type: ignore[arg-type]
    assert runs == ids  # each ran once, in order; none was lost or repeated
    assert all(db.jobs.get(i).state is JobState.DONE for i in ids)  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_stop_waits_for_the_completion_write_in_flight(db: Database) -> None:
    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
    done = asyncio.Event()

    async def handler(job: Job) -> None:
        done.set()

    queue = SlowBatches(db.aio.jobs, delay=0.2)
    runner = JobRunner(queue, {"k": handler}, FAST)  # type: ignore[arg-type]
    runner.start()
    await asyncio.wait_for(done.wait(), 10)
    await runner.stop(grace=0.0)  # the job's task is cancelled at once; its completion write still lands
    assert db.jobs.get(job_id).state is JobState.DONE  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_handlers_last_write_is_committed_with_the_completion(db: Database) -> None:
    after: list[int] = []
    attempts = {"n": 0}

    def write(job_id: int) -> int:
        attempts["n"] += 1
        if job_id == flaky and attempts["n"] == 1:
            raise StorageBusy("database is locked")  # refused once: that job is then completed on its own
        return db.jobs.enqueue(NewJob(kind="note", payload={"of": job_id}, dedupe_key=f"note-{job_id}"))[0]

    async def handler(job: Job) -> None:
        assert finish_with_completion(lambda: write(job.id), after.append)

    flaky = db.jobs.enqueue(NewJob(kind="k", payload={}, ordering_key="x"))[0]
    other = db.jobs.enqueue(NewJob(kind="k", payload={}, ordering_key="x"))[0]
    queue = SlowBatches(db.aio.jobs, delay=0.0)
    async def noted(job: Job) -> None:
        pass

    await JobRunner(queue, {"k": handler, "note": noted}, FAST).run_until_idle(10)  # type: ignore[arg-type]
    assert db.jobs.get(flaky).state is JobState.DONE and db.jobs.get(other).state is JobState.DONE  # type: ignore[union-attr]
    notes = {j.payload["of"]: j.id for j in db.jobs.list() if j.kind == "note"}
    assert set(notes) == {flaky, other}
    assert sorted(after) == sorted(notes.values())  # ``then`` saw each write's result, once, after its commit
    assert attempts["n"] == 3
    # outside a runner there is nothing to hand over to
    assert not finish_with_completion(lambda: None)


@pytest.mark.asyncio
async def test_a_leased_job_finds_what_prepare_read_for_it(db: Database) -> None:
    """``prepare`` reads for each leased job on the storage thread, in the lease's own hop; the handler
    finds it with ``prepared()``. A read that fails leaves the handler to read for itself."""
    seen: dict[int, object] = {}

    def read(job: Job) -> object:
        if job.payload["n"] == 1:
            raise RuntimeError("this read fails")
        return (job.id, threading.current_thread().name)

    async def handler(job: Job) -> None:
        seen[job.id] = prepared()

    ids = [db.jobs.enqueue(NewJob(kind="k", payload={"n": n}))[0] for n in range(3)]
    await JobRunner(db.aio.jobs, {"k": handler}, FAST, prepare={"k": read}).run_until_idle(10)
    assert all(db.jobs.get(i).state is JobState.DONE for i in ids)  # type: ignore[union-attr]
    assert seen[ids[1]] is None  # its read failed: it ran all the same
    for job_id in (ids[0], ids[2]):
        read_id, thread = seen[job_id]  # type: ignore[misc]
        assert read_id == job_id and thread.startswith(THREAD_PREFIX)
    assert prepared() is None  # outside a job: nothing


@pytest.mark.asyncio
async def test_a_new_job_of_a_running_chat_waits_for_it_without_a_lease_of_its_own(db: Database) -> None:
    """``wake(key)`` while the key's job runs here leases nothing; the new job is leased by the write
    completing that one, or, when it committed after that write's lease, by the wake-up it kept."""
    started = {n: asyncio.Event() for n in range(3)}
    release = asyncio.Event()

    async def handler(job: Job) -> None:
        started[job.payload["n"]].set()
        if job.payload["n"] == 0:
            await release.wait()

    slow = RunnerOptions(**{**FAST.__dict__, "poll_interval": 3600.0})  # only wake-ups and batches lease
    queue = SlowBatches(db.aio.jobs, delay=0.0)
    runner = JobRunner(queue, {"k": handler}, slow)  # type: ignore[arg-type]

    async def enqueue(n: int) -> int:
        job_id, _ = await db.aio.jobs.enqueue(NewJob(kind="k", payload={"n": n}, ordering_key="chat"))
        runner.wake("chat")
        return job_id

    await enqueue(0)
    runner.start()
    try:
        await asyncio.wait_for(started[0].wait(), 10)
        writes = (len(queue.batches), queue.leases)
        second = await enqueue(1)  # its chat is busy here: no lease for it now
        await asyncio.sleep(0.1)
        assert (len(queue.batches), queue.leases) == writes and not started[1].is_set()
        # job 2 commits right after the write completing job 1, which found nothing more of the chat
        queue.after = (second, lambda: enqueue(2))
        release.set()
        await asyncio.wait_for(started[1].wait(), 10)  # leased by the write completing job 0
        await asyncio.wait_for(started[2].wait(), 10)  # by the wake-up kept until job 1 was done
        assert queue.after is None
    finally:
        await runner.stop()
