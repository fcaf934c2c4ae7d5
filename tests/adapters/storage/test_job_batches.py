"""Contract suite for the queue's batch calls (SQLite + PostgreSQL): ``complete_many`` and
``complete_and_lease`` (the job runner's one commit for a batch of finished jobs and the slots they free)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.core.errors import StorageError
from ghl_desktop.core.models import JobState, NewJob

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LEASE = 30.0


def enqueue(db: Database, name: str, **kw: object) -> int:
    job_id, created = db.jobs.enqueue(NewJob(kind="k", payload={"n": name}, run_at=T0, **kw))  # type: ignore[arg-type]
    assert created
    return job_id


def state(db: Database, job_id: int) -> JobState:
    job = db.jobs.get(job_id)
    assert job is not None
    return job.state


def test_complete_and_lease_hands_over_a_key_in_one_call(store: Database) -> None:
    a1 = enqueue(store, "a1", ordering_key="chat:A")
    a2 = enqueue(store, "a2", ordering_key="chat:A")
    b1 = enqueue(store, "b1", ordering_key="chat:B")
    b2 = enqueue(store, "b2", ordering_key="chat:B")
    free = enqueue(store, "free")
    first = store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=10)
    assert sorted(j.id for j in first) == sorted([a1, b1, free])

    # a1 finished: its successor a2 is leased by the same call (b2 still waits for b1)
    after = store.jobs.complete_and_lease([a1], "w1", now=T0 + timedelta(seconds=1), lease_seconds=LEASE, limit=5)
    assert [j.id for j in after] == [a2]
    assert after[0].state is JobState.RUNNING and after[0].lease_owner == "w1" and after[0].attempts == 1
    assert after[0].payload == {"n": "a2"} and after[0].ordering_key == "chat:A"
    assert state(store, a1) is JobState.DONE and state(store, b1) is JobState.RUNNING

    # limit 0: complete only; several at once
    assert store.jobs.complete_and_lease([b1, free], "w1", now=T0 + timedelta(seconds=2), lease_seconds=LEASE,
                                         limit=0) == []
    assert state(store, b1) is JobState.DONE and state(store, free) is JobState.DONE
    assert state(store, b2) is JobState.PENDING
    # the limit caps the lease, oldest due first
    rest = store.jobs.complete_and_lease([a2], "w1", now=T0 + timedelta(seconds=3), lease_seconds=LEASE, limit=1)
    assert [j.id for j in rest] == [b2]
    assert store.jobs.count("running") == 1 and store.jobs.count("done") == 4


def test_complete_and_lease_without_finished_jobs_is_a_lease(store: Database) -> None:
    jobs = [enqueue(store, f"j{i}") for i in range(3)]
    got = store.jobs.complete_and_lease([], "w1", now=T0, lease_seconds=LEASE, limit=2)
    assert [j.id for j in got] == jobs[:2]
    assert store.jobs.complete_and_lease([], "w1", now=T0, lease_seconds=LEASE, limit=5, kinds=[]) == []
    assert store.jobs.complete_and_lease([], "w1", now=T0, lease_seconds=LEASE, limit=5, kinds=["other"]) == []
    with pytest.raises(ValueError):
        store.jobs.complete_and_lease([], "", now=T0, lease_seconds=LEASE)
    with pytest.raises(ValueError):
        store.jobs.complete_and_lease([], "w1", now=T0, lease_seconds=0)


def test_complete_many_only_touches_jobs_the_owner_holds(store: Database, caplog: pytest.LogCaptureFixture) -> None:
    ids = [enqueue(store, f"j{i}") for i in range(4)]
    late, _ = store.jobs.enqueue(NewJob(kind="k", payload={}, run_at=T0 + timedelta(hours=1)))
    assert len(store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=10)) == 4  # ``late`` is not due
    # j0's lease expired and w2 took it over: w1's late completion must not finish w2's run
    taken = store.jobs.lease("w2", now=T0 + timedelta(seconds=LEASE + 1), lease_seconds=LEASE, limit=1)
    assert [j.id for j in taken] == [ids[0]]
    with caplog.at_level(logging.WARNING, logger="ghl.storage.jobs"):
        assert store.jobs.complete_many([*ids, late], "w1") == 3
    assert [state(store, i) for i in [*ids, late]] == [JobState.RUNNING, JobState.DONE, JobState.DONE,
                                                       JobState.DONE, JobState.PENDING]
    lost = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
    assert len(lost) == 2 and any(f"job {ids[0]}:" in m for m in lost) and any(f"job {late}:" in m for m in lost)
    assert store.jobs.complete_many([], "w1") == 0
    assert store.jobs.complete_many([ids[1]], "w1") == 0  # twice: stays done, nothing changed
    assert state(store, ids[1]) is JobState.DONE


def test_a_failed_complete_and_lease_changes_nothing(sqlite_url: str) -> None:
    """One transaction: when the lease half fails, the completions roll back with it (the runner then
    records them one by one)."""
    db = open_database(sqlite_url)
    try:
        a1 = enqueue(db, "a1", ordering_key="A")
        enqueue(db, "a2", ordering_key="A")
        db.jobs.lease("w1", now=T0, lease_seconds=LEASE)
        with pytest.raises(StorageError, match="naive datetime"):  # fails in the lease, after the update
            db.jobs.complete_and_lease([a1], "w1", now=T0.replace(tzinfo=None), lease_seconds=LEASE, limit=1)
        assert state(db, a1) is JobState.RUNNING and db.jobs.count("done") == 0
    finally:
        db.close()


def test_a_jobs_last_write_commits_with_its_completion(store: Database) -> None:
    a = enqueue(store, "a")
    b = enqueue(store, "b")
    store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=2)

    def good() -> object:  # any repository write of this database joins the completing transaction
        return store.jobs.enqueue(NewJob(kind="follow-up", payload={"of": "a"}, dedupe_key="after-a"))

    def bad() -> object:
        store.jobs.enqueue(NewJob(kind="follow-up", payload={"of": "b"}, dedupe_key="after-b"))
        raise RuntimeError("the message vanished")

    got = store.jobs.complete_and_lease([a, b], "w1", now=T0 + timedelta(seconds=1), lease_seconds=LEASE,
                                        limit=0, finish={a: good, b: bad})
    assert got == []
    assert state(store, a) is JobState.DONE  # with its write
    assert [j.payload for j in store.jobs.list("pending")] == [{"of": "a"}]
    assert state(store, b) is JobState.RUNNING  # not completed, and its write rolled back (savepoint)
    # alone again (the runner's fallback), now succeeding
    store.jobs.complete_and_lease([b], "w1", now=T0 + timedelta(seconds=2), lease_seconds=LEASE, limit=0,
                                  finish={b: lambda: store.jobs.enqueue(NewJob(kind="f", payload={"of": "b"}))})
    assert state(store, b) is JobState.DONE and store.jobs.count("pending") == 2


def test_a_last_write_is_undone_when_the_completing_transaction_fails(sqlite_url: str) -> None:
    db = open_database(sqlite_url)
    try:
        a1 = enqueue(db, "a1", ordering_key="A")
        db.jobs.lease("w1", now=T0, lease_seconds=LEASE)
        with pytest.raises(StorageError, match="naive datetime"):
            db.jobs.complete_and_lease([a1], "w1", now=T0.replace(tzinfo=None), lease_seconds=LEASE, limit=1,
                                       finish={a1: lambda: db.jobs.enqueue(NewJob(kind="f", payload={}))})
        assert state(db, a1) is JobState.RUNNING and db.jobs.count() == 1  # neither completion nor write
    finally:
        db.close()


def test_prepare_reads_for_the_leased_jobs_in_one_transaction_after_the_commit(store: Database) -> None:
    a = enqueue(store, "a")
    b = enqueue(store, "b", ordering_key="chat")
    seen: list[tuple[int, JobState]] = []
    checkouts: list[object] = []

    def checkout(*args: object) -> None:
        checkouts.append(args)

    def prepare(jobs: object) -> None:
        event.listen(store.engine, "checkout", checkout)
        try:
            for job in jobs:  # type: ignore[attr-defined]
                assert store.locations.get("no-such-location") is None  # a Core read of the message path
                assert store.messages.by_wa_id("no-session", f"wa-{job.id}") is None
                seen.append((job.id, state(store, job.id)))
        finally:
            event.remove(store.engine, "checkout", checkout)

    got = store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=5, prepare=prepare)
    assert sorted(j.id for j in got) == sorted([a, b])
    assert sorted(i for i, _ in seen) == sorted([a, b])
    assert all(s is JobState.RUNNING for _, s in seen)  # the lease was committed before
    # the four Core reads joined ONE connection (the block's); ``state`` reads through the ORM, 1 each
    assert len(checkouts) == len(seen), checkouts


def test_a_failing_prepare_leaves_the_lease_standing(store: Database, caplog: pytest.LogCaptureFixture) -> None:
    a = enqueue(store, "a")

    def prepare(jobs: object) -> None:
        raise RuntimeError("a read failed")

    with caplog.at_level(logging.ERROR, logger="ghl.storage.jobs"):
        got = store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=5, prepare=prepare)
    assert [j.id for j in got] == [a] and state(store, a) is JobState.RUNNING
    assert "their handlers read for themselves" in caplog.text
