"""The SQLite storage executor's group commit (``StorageExecutor._next`` with ``Transactions.grouped``):
the intake's record and the job runner's completion waiting at the same time share ONE commit, each
caller is answered after it, a call that fails leaves nothing behind and fails alone, a failed commit
fails every caller and stores nothing, and a call sees what an earlier call of its group wrote."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError

from ghl_desktop.adapters.storage import Database
from ghl_desktop.adapters.storage.tx import mergeable
from ghl_desktop.core.errors import StorageBusy
from ghl_desktop.core.models import Job, Location, NewJob, SessionState, WhatsAppSession
from tests.adapters.storage.test_repositories import inbound

OWNER = "runner-1"


@pytest.fixture
def linked(db: Database) -> Database:
    db.locations.upsert(Location(id="loc1", name="Clinic"))
    db.sessions.create(WhatsAppSession(id="s1", location_id="loc1", state=SessionState.CONNECTED,
                                       store_path="/tmp/s1.db"))
    return db


def _job(wa_id: str) -> NewJob:
    return NewJob(kind="inbound.post", payload={"wa": wa_id}, dedupe_key=f"in:s1:{wa_id}", ordering_key=f"chat:{wa_id}")


def _commits(db: Database) -> list[int]:
    seen: list[int] = []
    event.listen(db.engine, "commit", lambda conn: seen.append(1))
    return seen


async def _behind_a_busy_thread(db: Database, calls: Sequence[Callable[..., Any]]) -> list[Any]:
    """Submit ``calls`` while the storage thread is busy with another call, so they wait together;
    then let it go. Returns each call's result or exception, in order."""
    executor = db.aio.executor
    started, release = threading.Event(), threading.Event()

    def busy() -> None:
        started.set()
        release.wait(10)

    blocker = asyncio.ensure_future(executor.run(busy))
    await asyncio.to_thread(started.wait, 10)
    waiting = [asyncio.ensure_future(executor.run(call)) for call in calls]
    await asyncio.sleep(0)  # every call submitted before the thread is free
    release.set()
    await blocker
    return list(await asyncio.gather(*waiting, return_exceptions=True))


def _lease(db: Database, seen: list[Any]) -> Callable[[], list[Job]]:
    def prepare(jobs: Sequence[Job]) -> None:
        for job in jobs:
            seen.append(db.messages.get(int(job.payload["message_id"])))

    def lease() -> list[Job]:
        return db.jobs.complete_and_lease([], OWNER, now=datetime.now(UTC), lease_seconds=30, limit=10,
                                          prepare=prepare)

    return mergeable(lease)


@pytest.mark.asyncio
async def test_a_record_and_a_lease_waiting_together_share_one_commit(linked: Database) -> None:
    db = linked
    commits = _commits(db)
    prepared: list[Any] = []
    record = mergeable(lambda: db.messages.record_many([(inbound("WA1", body="hi"), _job("WA1"))]))
    [recorded, leased] = await _behind_a_busy_thread(db, [record, _lease(db, prepared)])
    assert db.aio.executor.groups == 1 and db.aio.executor.grouped_calls == 2
    assert len(commits) == 1  # the blocker wrote nothing; the two writes shared one commit
    [(message, created)] = recorded
    assert created and message.body == "hi"
    # the lease in the same transaction found the job recorded just before it, and its reads saw the row
    assert [job.payload["message_id"] for job in leased] == [message.id]
    assert prepared == [message]
    assert db.jobs.get(leased[0].id).lease_owner == OWNER  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_call_that_fails_in_a_group_leaves_nothing_and_fails_alone(linked: Database) -> None:
    db = linked

    @mergeable
    def half_then_fail() -> None:
        with db.tx.write() as s:
            s.execute(text("UPDATE locations SET name = 'half-done' WHERE id = 'loc1'"))
            raise ValueError("this call's own failure")

    first = mergeable(lambda: db.messages.record_many([(inbound("WA1"), _job("WA1"))]))
    last = mergeable(lambda: db.messages.record_many([(inbound("WA2"), _job("WA2"))]))
    results = await _behind_a_busy_thread(db, [first, half_then_fail, last])
    assert db.aio.executor.grouped_calls == 3
    assert isinstance(results[1], ValueError)
    assert db.locations.get("loc1").name == "Clinic"  # type: ignore[union-attr]  # rolled back to its savepoint
    assert sorted(m.wa_message_id or "" for m in db.messages.recent()) == ["WA1", "WA2"]
    assert db.jobs.count() == 2


@pytest.mark.asyncio
async def test_a_failed_group_commit_fails_every_caller_and_stores_nothing(linked: Database) -> None:
    db = linked

    def full_disk(conn: Any) -> None:
        raise OperationalError("COMMIT", {}, Exception("database or disk is full"))

    event.listen(db.engine, "commit", full_disk)
    try:
        calls = [mergeable(lambda i=i: db.messages.record_many([(inbound(f"WA{i}"), _job(f"WA{i}"))]))
                 for i in range(3)]
        results = await _behind_a_busy_thread(db, calls)
    finally:
        event.remove(db.engine, "commit", full_disk)
    assert all(isinstance(r, StorageBusy) for r in results), results  # each caller retries its own
    assert db.messages.recent() == [] and db.jobs.count() == 0


@pytest.mark.asyncio
async def test_a_lone_call_and_unmarked_calls_run_as_before(linked: Database) -> None:
    db = linked
    commits = _commits(db)
    unmarked = [lambda i=i: db.messages.record_many([(inbound(f"WA{i}"), _job(f"WA{i}"))]) for i in range(2)]
    await _behind_a_busy_thread(db, unmarked)
    assert db.aio.executor.groups == 0 and len(commits) == 2
    await db.aio.run(mergeable(lambda: db.messages.record_many([(inbound("WA9"), _job("WA9"))])))
    assert db.aio.executor.groups == 0 and len(commits) == 3


@pytest.mark.asyncio
async def test_the_repositories_mark_the_two_hot_writes(linked: Database) -> None:
    from ghl_desktop.adapters.storage.tx import is_mergeable

    assert is_mergeable(linked.messages.record_many) and is_mergeable(linked.jobs.complete_and_lease)
    assert not is_mergeable(linked.messages.update) and not is_mergeable(linked.jobs.enqueue)


@pytest.mark.asyncio
async def test_a_completion_whose_last_write_raises_behaves_in_a_group_as_alone(linked: Database) -> None:
    """complete_and_lease's own fallback (its batch again, savepoint by savepoint, when a last write
    raises) inside a group: the failed write is undone, the other job completes with its write, and
    the record beside it in the group is committed."""
    db = linked
    a, _ = db.jobs.enqueue(NewJob(kind="k", payload={}, ordering_key="a"))
    b, _ = db.jobs.enqueue(NewJob(kind="k", payload={}, ordering_key="b"))
    db.jobs.lease(OWNER, now=datetime.now(UTC), lease_seconds=30, limit=2)

    def good() -> object:
        return db.jobs.enqueue(NewJob(kind="follow-up", payload={"of": "a"}, dedupe_key="after-a"))

    def bad() -> object:
        db.jobs.enqueue(NewJob(kind="follow-up", payload={"of": "b"}, dedupe_key="after-b"))
        raise RuntimeError("the message vanished")

    complete = mergeable(lambda: db.jobs.complete_and_lease([a, b], OWNER, now=datetime.now(UTC), lease_seconds=30,
                                                            limit=0, finish={a: good, b: bad}))
    record = mergeable(lambda: db.messages.record_many([(inbound("WA1"), _job("WA1"))]))
    results = await _behind_a_busy_thread(db, [complete, record])
    assert db.aio.executor.grouped_calls == 2
    assert results[0] == []
    assert db.jobs.get(a).state.value == "done"  # type: ignore[union-attr]
    assert db.jobs.get(b).state.value == "running"  # type: ignore[union-attr]
    assert [j.payload for j in db.jobs.list("pending")] == [{"of": "a"}, {"wa": "WA1", "message_id": 1}]
