"""The queue's heads (``job_heads``, migration 0003) stay right for every writer of ``jobs``: the
queue's own calls, ``insert_job`` inside another repository's transaction, raw updates, deletes and
an upgrade of a 0002 database with work already queued (SQLite + PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import delete, insert, select, update

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage.jobs import insert_job
from ghl_desktop.adapters.storage.migrate import alembic_config, head_revision
from ghl_desktop.adapters.storage.orm import JobHeadRow, JobRow
from ghl_desktop.core.models import JobState, NewJob

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LEASE = 30.0


def _enqueue(db: Database, key: str | None, *, at: datetime = T0) -> int:
    job_id, created = db.jobs.enqueue(NewJob(kind="k", payload={}, ordering_key=key, run_at=at))
    assert created
    return job_id


def _heads(db: Database) -> dict[int, tuple[str | None, datetime]]:
    with db.jobs._tx.read() as s:  # test-only look at the heads table
        return {r.job_id: (r.ordering_key, r.due_at) for r in s.scalars(select(JobHeadRow))}


def _lease(db: Database, owner: str, now: datetime, limit: int = 10) -> list[int]:
    return [j.id for j in db.jobs.lease(owner, now=now, lease_seconds=LEASE, limit=limit)]


def test_heads_follow_retry_dead_letter_expiry_and_requeue_in_key_order(store: Database) -> None:
    a, b, c = (_enqueue(store, "chat") for _ in range(3))
    free = _enqueue(store, None)
    assert _heads(store) == {a: ("chat", T0), free: (None, T0)}

    assert _lease(store, "w1", T0) == [a, free]
    assert _heads(store) == {a: ("chat", T0 + timedelta(seconds=LEASE)), free: (None, T0 + timedelta(seconds=LEASE))}
    store.jobs.complete(free, "w1")
    assert free not in _heads(store)

    # a retry keeps the head on the same job: the newer ones of its key wait for it
    store.jobs.retry_later(a, "w1", error="boom", run_at=T0 + timedelta(seconds=10))
    assert _heads(store) == {a: ("chat", T0 + timedelta(seconds=10))}
    assert _lease(store, "w1", T0 + timedelta(seconds=5)) == []
    assert _lease(store, "w1", T0 + timedelta(seconds=10)) == [a]

    # dead-lettering the head hands the key to the next job
    store.jobs.dead_letter(a, "w1", error="gave up")
    assert _heads(store) == {b: ("chat", T0)}
    later = T0 + timedelta(seconds=20)
    assert _lease(store, "w1", later) == [b]

    # the worker dies: b is due again when its lease expires, and only b
    assert _lease(store, "w2", later + timedelta(seconds=LEASE - 1)) == []
    assert _lease(store, "w2", later + timedelta(seconds=LEASE)) == [b]
    store.jobs.complete(b, "w1")  # the old owner is ignored
    assert store.jobs.get(b).state is JobState.RUNNING  # type: ignore[union-attr]
    store.jobs.complete(b, "w2")
    assert _heads(store) == {c: ("chat", T0)}

    # a requeued dead job is older than c: it becomes the head again and runs first
    assert store.jobs.requeue_dead(a)
    assert set(_heads(store)) == {a}
    now = datetime.now(UTC) + timedelta(seconds=1)
    assert _lease(store, "w3", now) == [a]
    store.jobs.complete(a, "w3")
    assert _lease(store, "w3", now) == [c]
    store.jobs.complete(c, "w3")
    assert _heads(store) == {}
    assert store.jobs.lease("w3", now=now, lease_seconds=LEASE) == []


def test_a_dead_job_requeued_while_a_newer_one_of_its_key_runs_waits_for_it(store: Database) -> None:
    a, b = _enqueue(store, "chat"), _enqueue(store, "chat")
    assert _lease(store, "w1", T0) == [a]
    store.jobs.dead_letter(a, "w1", error="x")
    now = datetime.now(UTC)
    assert _lease(store, "w1", now) == [b]
    assert store.jobs.requeue_dead(a)
    now += timedelta(seconds=1)
    assert _lease(store, "w2", now) == []  # b holds a live lease on the key
    store.jobs.complete(b, "w1")
    assert _lease(store, "w2", now) == [a]


def test_insert_job_in_another_transaction_and_raw_writes_keep_heads(store: Database) -> None:
    tx = store.jobs._tx
    try:
        with tx.write() as s:
            insert_job(s, NewJob(kind="k", payload={}, ordering_key="chat", run_at=T0))
            raise RuntimeError("the caller's transaction fails")
    except RuntimeError:
        pass
    assert _heads(store) == {}
    with tx.write() as s:
        first, _ = insert_job(s, NewJob(kind="k", payload={}, ordering_key="chat", run_at=T0))
        second, _ = insert_job(s, NewJob(kind="k", payload={}, ordering_key="chat", run_at=T0))
    assert _heads(store) == {first: ("chat", T0)}
    later = T0 + timedelta(hours=1)
    with tx.write() as s:  # a raw update (as tests backdate jobs) moves the head's due time
        s.execute(update(JobRow).where(JobRow.id == first).values(next_attempt_at=later))
    assert _heads(store) == {first: ("chat", later)}
    assert _lease(store, "w", T0) == []
    with tx.write() as s:  # deleting an unfinished head hands the key on
        s.execute(delete(JobRow).where(JobRow.id == first))
    assert _heads(store) == {second: ("chat", T0)}
    assert _lease(store, "w", T0) == [second]


def test_migration_0003_builds_heads_for_a_0002_database_with_queued_work(backend_url: str) -> None:
    db = open_database(backend_url, migrate=False)
    try:
        config = alembic_config()
        with db.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0002")
        rows = [  # (ordering_key, state, lease_until)
            ("chat1", JobState.DONE.value, None),
            ("chat1", JobState.DEAD.value, None),
            ("chat1", JobState.RUNNING.value, T0 + timedelta(seconds=5)),
            ("chat1", JobState.PENDING.value, None),
            ("chat2", JobState.PENDING.value, None),
            ("chat2", JobState.PENDING.value, None),
            (None, JobState.PENDING.value, None),
            (None, JobState.DONE.value, None),
        ]
        with db.engine.begin() as conn:
            for key, state, until in rows:
                conn.execute(insert(JobRow).values(
                    kind="k", payload={}, state=state, attempts=0, next_attempt_at=T0, ordering_key=key,
                    lease_owner="old" if until else None, lease_until=until, created_at=T0, updated_at=T0))
            ids = list(conn.scalars(select(JobRow.id).order_by(JobRow.id)))
        assert db.migrate() == head_revision()  # 0003 and whatever follows it
        assert _heads(db) == {
            ids[2]: ("chat1", T0 + timedelta(seconds=5)),  # running: due when its lease expires
            ids[4]: ("chat2", T0),
            ids[6]: (None, T0),
        }
        assert _lease(db, "w", T0) == [ids[4], ids[6]]
        assert _lease(db, "w", T0 + timedelta(seconds=5)) == [ids[2]]  # expired lease taken over
        db.jobs.complete(ids[2], "w")
        assert _lease(db, "w", T0 + timedelta(seconds=5)) == [ids[3]]
    finally:
        db.close()
