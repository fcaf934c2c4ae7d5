"""Contract suite for the durable job queue (SQLite + PostgreSQL)."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.models import Direction, JobState, Location, Message, MessageKind, NewJob

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LEASE = 30.0


def enqueue(db: Database, kind: str = "k", *, at: datetime = T0, **kw: object) -> int:
    job_id, created = db.jobs.enqueue(NewJob(kind=kind, payload={"n": kind}, run_at=at, **kw))  # type: ignore[arg-type]
    assert created
    return job_id


def test_enqueue_is_idempotent_on_dedupe_key(store: Database) -> None:
    first, created = store.jobs.enqueue(NewJob(kind="post", payload={"a": 1}, dedupe_key="d1"))
    again, created_again = store.jobs.enqueue(NewJob(kind="post", payload={"a": 2}, dedupe_key="d1"))
    assert created and not created_again and again == first
    other, created_other = store.jobs.enqueue(NewJob(kind="post", payload={"a": 3}))
    assert created_other and other != first
    job = store.jobs.get(first)
    assert job is not None and job.payload == {"a": 1} and job.state is JobState.PENDING and job.attempts == 0
    assert store.jobs.count() == 2 and store.jobs.count("pending") == 2 and store.jobs.count("done") == 0
    assert store.jobs.get(99_999) is None


def test_enqueue_refuses_bad_payload_and_writes_nothing(store: Database) -> None:
    with pytest.raises(ValueError, match="JSON"):
        store.jobs.enqueue(NewJob(kind="x", payload={"when": datetime.now(UTC)}))
    with pytest.raises(ValueError, match="not a valid JobState"):
        store.jobs.count("bogus")
    assert store.jobs.count() == 0


def test_concurrent_enqueue_with_one_dedupe_key(store: Database) -> None:
    n = 6
    barrier = threading.Barrier(n)
    out: list[tuple[int, bool]] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        out.append(store.jobs.enqueue(NewJob(kind="k", payload={}, dedupe_key="same")))

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(out) == n and sum(c for _, c in out) == 1 and len({i for i, _ in out}) == 1
    assert store.jobs.count() == 1


def test_record_with_an_already_queued_dedupe_key_keeps_one_job(store: Database) -> None:
    store.locations.upsert(Location(id="loc1", name="Clinic"))
    job_id, _ = store.jobs.enqueue(NewJob(kind="post", payload={}, dedupe_key="post:g1"))
    msg, created = store.messages.record(
        Message(location_id="loc1", direction=Direction.OUTBOUND, kind=MessageKind.TEXT, chat_jid="1@s.whatsapp.net",
                ghl_message_id="g1"),
        NewJob(kind="post", payload={}, dedupe_key="post:g1"),
    )
    assert created and msg.id is not None
    assert [j.id for j in store.jobs.list()] == [job_id]


def test_lease_takes_due_jobs_and_counts_attempts(store: Database) -> None:
    a = enqueue(store, "a", at=T0)
    b = enqueue(store, "b", at=T0 + timedelta(seconds=5))
    later = enqueue(store, "later", at=T0 + timedelta(hours=1))
    leased = store.jobs.lease("w1", now=T0 + timedelta(seconds=10), lease_seconds=LEASE)
    assert [j.id for j in leased] == [a, b]
    for j in leased:
        assert j.state is JobState.RUNNING and j.attempts == 1 and j.lease_owner == "w1"
        assert j.lease_until == T0 + timedelta(seconds=10 + LEASE)
    assert store.jobs.lease("w2", now=T0 + timedelta(seconds=10), lease_seconds=LEASE) == []  # nothing left due
    for j in leased:
        store.jobs.complete(j.id, "w1")
    assert [j.id for j in store.jobs.lease("w2", now=T0 + timedelta(hours=1), lease_seconds=LEASE)] == [later]


def test_lease_limit_and_kinds(store: Database) -> None:
    ids = [enqueue(store, "send") for _ in range(3)] + [enqueue(store, "post")]
    assert [j.id for j in store.jobs.lease("w", now=T0, lease_seconds=LEASE, kinds=["post"])] == [ids[3]]
    assert [j.id for j in store.jobs.lease("w", now=T0, lease_seconds=LEASE, limit=2)] == ids[:2]
    assert store.jobs.lease("w", now=T0, lease_seconds=LEASE, kinds=[]) == []
    assert store.jobs.lease("w", now=T0, lease_seconds=LEASE, limit=0) == []
    with pytest.raises(ValueError):
        store.jobs.lease("", now=T0, lease_seconds=LEASE)


def test_complete_retry_and_dead_letter(store: Database) -> None:
    a, b, c = enqueue(store, "a"), enqueue(store, "b"), enqueue(store, "c")
    store.jobs.lease("w1", now=T0, lease_seconds=LEASE)
    store.jobs.complete(a, "w1")
    store.jobs.retry_later(b, "w1", error="HTTP 503", run_at=T0 + timedelta(minutes=1))
    store.jobs.dead_letter(c, "w1", error="contact blocked")
    ja, jb, jc = store.jobs.get(a), store.jobs.get(b), store.jobs.get(c)
    assert ja is not None and jb is not None and jc is not None
    assert (ja.state, ja.lease_owner, ja.lease_until) == (JobState.DONE, None, None)
    assert (jb.state, jb.last_error, jb.next_attempt_at, jb.attempts) == (
        JobState.PENDING, "HTTP 503", T0 + timedelta(minutes=1), 1)
    assert (jc.state, jc.last_error) == (JobState.DEAD, "contact blocked")
    assert store.jobs.lease("w1", now=T0 + timedelta(seconds=59), lease_seconds=LEASE) == []
    again = store.jobs.lease("w1", now=T0 + timedelta(minutes=1), lease_seconds=LEASE)
    assert [(j.id, j.attempts) for j in again] == [(b, 2)]
    assert {s: store.jobs.count(s) for s in ("pending", "running", "done", "dead")} == {
        "pending": 0, "running": 1, "done": 1, "dead": 1}
    assert [j.id for j in store.jobs.list("dead")] == [c]
    assert [j.id for j in store.jobs.list(limit=2)] == [a, b]


def test_dead_letter_then_requeue_resets_attempts(store: Database) -> None:
    j = enqueue(store)
    for i in range(3):
        store.jobs.lease("w", now=T0 + timedelta(minutes=i), lease_seconds=LEASE)
        store.jobs.retry_later(j, "w", error=f"try {i}", run_at=T0 + timedelta(minutes=i + 1))
    store.jobs.lease("w", now=T0 + timedelta(minutes=3), lease_seconds=LEASE)
    store.jobs.dead_letter(j, "w", error="gave up after 4 attempts")
    assert store.jobs.get(j).attempts == 4  # type: ignore[union-attr]
    assert store.jobs.requeue_dead(j) is True
    assert store.jobs.requeue_dead(j) is False  # no longer dead
    job = store.jobs.get(j)
    assert job is not None and (job.state, job.attempts, job.lease_owner) == (JobState.PENDING, 0, None)
    leased = store.jobs.lease("w", now=datetime.now(UTC) + timedelta(seconds=1), lease_seconds=LEASE)
    assert [(x.id, x.attempts) for x in leased] == [(j, 1)]
    assert store.jobs.requeue_dead(99_999) is False


def test_expired_lease_is_recovered_and_the_old_owner_is_ignored(
    store: Database, caplog: pytest.LogCaptureFixture
) -> None:
    j = enqueue(store)
    assert [x.id for x in store.jobs.lease("crashed", now=T0, lease_seconds=LEASE)] == [j]
    # lease still live: nobody else gets it
    assert store.jobs.lease("w2", now=T0 + timedelta(seconds=LEASE - 1), lease_seconds=LEASE) == []
    # the worker died; its lease expires and another worker takes the job over
    taken = store.jobs.lease("w2", now=T0 + timedelta(seconds=LEASE), lease_seconds=LEASE)
    assert [(x.id, x.lease_owner, x.attempts) for x in taken] == [(j, "w2", 2)]
    with caplog.at_level(logging.WARNING, logger="ghl.storage.jobs"):
        store.jobs.complete(j, "crashed")  # came back to life: must not touch w2's job
        store.jobs.retry_later(j, "crashed", error="x", run_at=T0)
        store.jobs.dead_letter(j, "crashed", error="x")
    assert caplog.text.count("lease lost") == 3
    job = store.jobs.get(j)
    assert job is not None and (job.state, job.lease_owner, job.last_error) == (JobState.RUNNING, "w2", None)
    store.jobs.complete(j, "w2")
    assert store.jobs.get(j).state is JobState.DONE  # type: ignore[union-attr]
    store.jobs.complete(j, "w2")  # twice: ignored, stays done
    assert store.jobs.get(j).state is JobState.DONE  # type: ignore[union-attr]


def test_ordering_key_runs_jobs_one_at_a_time_oldest_first(store: Database) -> None:
    a1 = enqueue(store, "a1", ordering_key="chat:A")
    a2 = enqueue(store, "a2", ordering_key="chat:A")
    a3 = enqueue(store, "a3", ordering_key="chat:A")
    b1 = enqueue(store, "b1", ordering_key="chat:B")
    free = enqueue(store, "free")
    first = store.jobs.lease("w1", now=T0, lease_seconds=LEASE)
    assert sorted(j.id for j in first) == sorted([a1, b1, free])  # only the oldest of each key
    # a1 running blocks a2 even for another worker
    assert store.jobs.lease("w2", now=T0 + timedelta(seconds=1), lease_seconds=LEASE) == []
    store.jobs.complete(b1, "w1")
    store.jobs.complete(free, "w1")
    # a1 waits for a retry: still unfinished, so a2 must wait too
    store.jobs.retry_later(a1, "w1", error="503", run_at=T0 + timedelta(minutes=5))
    assert store.jobs.lease("w2", now=T0 + timedelta(minutes=1), lease_seconds=LEASE) == []
    assert [j.id for j in store.jobs.lease("w2", now=T0 + timedelta(minutes=5), lease_seconds=LEASE)] == [a1]
    store.jobs.complete(a1, "w2")
    assert [j.id for j in store.jobs.lease("w2", now=T0 + timedelta(minutes=5), lease_seconds=LEASE)] == [a2]
    # a dead job no longer holds its key back
    store.jobs.dead_letter(a2, "w2", error="permanent")
    year = 365 * 86400.0  # a3's lease stays live past the wall-clock "now" used below
    assert [j.id for j in store.jobs.lease("w2", now=T0 + timedelta(minutes=5), lease_seconds=year)] == [a3]
    # requeueing the dead older job while a3 runs: it must wait until a3 is finished
    assert store.jobs.requeue_dead(a2)
    assert store.jobs.lease("w3", now=datetime.now(UTC) + timedelta(seconds=1), lease_seconds=LEASE) == []
    store.jobs.complete(a3, "w2")
    assert [j.id for j in store.jobs.lease("w3", now=datetime.now(UTC) + timedelta(seconds=1),
                                          lease_seconds=LEASE)] == [a2]


def test_ordering_key_with_an_expired_lease_resumes_the_same_job(store: Database) -> None:
    a1 = enqueue(store, ordering_key="k")
    enqueue(store, ordering_key="k")
    store.jobs.lease("dead-worker", now=T0, lease_seconds=LEASE)
    again = store.jobs.lease("w2", now=T0 + timedelta(seconds=LEASE + 1), lease_seconds=LEASE)
    assert [j.id for j in again] == [a1]  # the expired one, not the next in line


def test_two_workers_leasing_concurrently_never_share_a_job(store: Database) -> None:
    total = 60
    for i in range(total):
        enqueue(store, f"j{i}", ordering_key=f"key{i % 7}" if i % 3 else None)
    taken: dict[str, list[int]] = {"w1": [], "w2": [], "w3": []}
    barrier = threading.Barrier(len(taken))
    errors: list[BaseException] = []
    guard = threading.Lock()
    in_flight: dict[str, int] = {}  # ordering key -> job being worked on
    per_key_order: dict[str, list[int]] = {}
    overlaps: list[tuple[str, int, int]] = []

    def worker(owner: str) -> None:
        try:
            barrier.wait(timeout=10)
            idle = 0
            while idle < 20:
                jobs = store.jobs.lease(owner, now=T0 + timedelta(seconds=1), lease_seconds=LEASE, limit=3)
                if not jobs:
                    idle += 1
                    continue
                idle = 0
                for job in jobs:
                    taken[owner].append(job.id)
                    key = job.ordering_key
                    if key is not None:
                        with guard:
                            if key in in_flight:
                                overlaps.append((key, in_flight[key], job.id))
                            in_flight[key] = job.id
                            per_key_order.setdefault(key, []).append(job.id)
                for job in jobs:
                    if job.ordering_key is not None:
                        with guard:
                            in_flight.pop(job.ordering_key, None)
                    store.jobs.complete(job.id, owner)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(o,)) for o in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    every = [i for ids in taken.values() for i in ids]
    duplicates = [i for i, n in Counter(every).items() if n > 1]
    assert duplicates == []
    assert len(every) == total
    assert overlaps == []  # never two jobs of one ordering key at once
    assert all(ids == sorted(ids) for ids in per_key_order.values())  # oldest first
    assert len(per_key_order) == 7
    assert store.jobs.count("done") == total
    assert all(j.attempts == 1 for j in store.jobs.list(limit=total))


def test_lease_refuses_naive_now(store: Database) -> None:
    enqueue(store)
    with pytest.raises(Exception, match="naive datetime"):
        store.jobs.lease("w", now=datetime(2026, 1, 1), lease_seconds=LEASE)
    assert store.jobs.count("pending") == 1


def test_jobs_survive_a_restart_and_a_dead_worker_is_recovered(backend_url: str) -> None:
    from ghl_desktop.adapters.storage import open_database

    with open_database(backend_url) as first_run:
        j = enqueue(first_run, ordering_key="chat:1")
        queued = enqueue(first_run, ordering_key="chat:1")
        assert [x.id for x in first_run.jobs.lease("pid-1", now=T0, lease_seconds=LEASE)] == [j]
        # the process dies here, without completing the job
    with open_database(backend_url) as second_run:
        assert second_run.jobs.count("running") == 1 and second_run.jobs.count("pending") == 1
        recovered = second_run.jobs.lease("pid-2", now=T0 + timedelta(seconds=LEASE), lease_seconds=LEASE)
        assert [(x.id, x.attempts, x.lease_owner) for x in recovered] == [(j, 2, "pid-2")]
        second_run.jobs.complete(j, "pid-2")
        nxt = second_run.jobs.lease("pid-2", now=T0 + timedelta(seconds=LEASE), lease_seconds=LEASE)
        assert [x.id for x in nxt] == [queued]


def test_extend_lease_keeps_a_running_job_and_only_for_its_owner(store: Database) -> None:
    j = enqueue(store)
    assert [x.id for x in store.jobs.lease("w1", now=T0, lease_seconds=LEASE)] == [j]
    assert store.jobs.extend_lease(j, "w1", until=T0 + timedelta(seconds=3 * LEASE))
    assert not store.jobs.extend_lease(j, "someone-else", until=T0 + timedelta(seconds=10 * LEASE))
    # past the original lease, still held thanks to the renewal
    assert store.jobs.lease("w2", now=T0 + timedelta(seconds=2 * LEASE), lease_seconds=LEASE) == []
    taken = store.jobs.lease("w2", now=T0 + timedelta(seconds=3 * LEASE), lease_seconds=LEASE)
    assert [x.id for x in taken] == [j]
    assert not store.jobs.extend_lease(j, "w1", until=T0 + timedelta(seconds=9 * LEASE))  # lost it
    store.jobs.complete(j, "w2")
    assert not store.jobs.extend_lease(j, "w2", until=T0 + timedelta(seconds=9 * LEASE))  # done: nothing to renew


def test_purge_done_deletes_only_jobs_finished_before_the_cutoff(store: Database) -> None:
    now = datetime.now(UTC)
    done = enqueue(store, dedupe_key="wa:s:1")
    pending = enqueue(store, "p")
    dead = enqueue(store, "d")
    for job in store.jobs.lease("w", now=now, lease_seconds=LEASE, kinds=["k", "d"]):
        if job.id == done:
            store.jobs.complete(done, "w")
        else:
            store.jobs.dead_letter(job.id, "w", error="x")
    assert store.jobs.purge_done(finished_before=now - timedelta(hours=1)) == 0  # finished just now: kept
    assert store.jobs.purge_done(finished_before=datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert store.jobs.get(done) is None
    assert store.jobs.get(pending) is not None and store.jobs.get(dead) is not None
    # the dedupe key is free again: a late repeat makes a new job (its handler is idempotent on messages)
    assert store.jobs.enqueue(NewJob(kind="k", payload={}, dedupe_key="wa:s:1"))[1] is True
