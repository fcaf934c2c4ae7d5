"""SqlJobQueue ``follow``: a leased job brings its key's next jobs along (a run), on both backends, and
``release`` gives back the ones never started — without ever breaking the key's order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.models import Job, JobState, NewJob

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LEASE = 30.0
FOLLOW = {"post": 3}


def enqueue(db: Database, name: str, key: str | None = "chat:A", kind: str = "post", at: datetime = T0) -> int:
    return db.jobs.enqueue(NewJob(kind=kind, payload={"name": name}, ordering_key=key, run_at=at))[0]


def names(jobs: list[Job]) -> list[str]:
    return [str(j.payload["name"]) for j in jobs]


def test_a_leased_job_brings_its_keys_next_jobs_in_order_after_the_leased_ones(store: Database) -> None:
    for i in range(6):
        enqueue(store, f"a{i}")
    enqueue(store, "b0", key="chat:B")
    enqueue(store, "b1", key="chat:B")
    enqueue(store, "solo", key=None)
    jobs = store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=2, follow=FOLLOW)
    # limit counts the leased heads (a0, b0); each brings at most 3 followers, its key's order kept
    assert names(jobs) == ["a0", "b0", "a1", "a2", "a3", "b1"]
    assert all(j.state is JobState.RUNNING and j.lease_owner == "w1" and j.attempts == 1 for j in jobs)
    assert names(store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=5, follow=FOLLOW)) == ["solo"]
    # without follow: one job per key, as always
    store.jobs.complete_many([j.id for j in jobs], "w1")
    assert names(store.jobs.lease("w2", now=T0, lease_seconds=LEASE, limit=5)) == ["a4"]


def test_followers_stop_at_a_job_that_cannot_run_yet_or_is_not_of_a_following_kind(store: Database) -> None:
    enqueue(store, "a0")
    enqueue(store, "a1")
    enqueue(store, "a2", at=T0 + timedelta(minutes=5))  # waits for its retry time
    enqueue(store, "a3")
    enqueue(store, "b0", key="chat:B")
    enqueue(store, "b1", key="chat:B", kind="reply")  # another kind on the same key
    enqueue(store, "b2", key="chat:B")
    jobs = store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=5, follow=FOLLOW)
    assert names(jobs) == ["a0", "b0", "a1"]
    pending = {str(j.payload["name"]) for j in store.jobs.list("pending")}
    assert pending == {"a2", "a3", "b1", "b2"}


def test_release_gives_followers_back_unstarted_and_the_order_holds(store: Database) -> None:
    ids = [enqueue(store, f"a{i}") for i in range(4)]
    jobs = store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=1, follow=FOLLOW)
    assert [j.id for j in jobs] == ids
    assert store.jobs.release(ids[2:], "w2") == 0  # not its lease: nothing changes
    assert store.jobs.release(ids[2:], "w1") == 2
    back = store.jobs.get(ids[2])
    assert back is not None and back.state is JobState.PENDING and back.attempts == 0 and back.lease_owner is None
    # the key's next lease waits for a0 and a1 (still ours), then goes on from a2
    assert store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=5, follow=FOLLOW) == []
    store.jobs.complete_many(ids[:2], "w1")
    again = store.jobs.lease("w1", now=T0, lease_seconds=LEASE, limit=5, follow=FOLLOW)
    assert [j.id for j in again] == ids[2:] and all(j.attempts == 1 for j in again)


def test_after_a_crash_a_run_is_taken_over_in_order(store: Database) -> None:
    ids = [enqueue(store, f"a{i}") for i in range(3)]
    store.jobs.lease("dead-worker", now=T0, lease_seconds=LEASE, limit=1, follow=FOLLOW)
    later = T0 + timedelta(seconds=LEASE + 1)  # every lease of the run expired
    taken = store.jobs.lease("w2", now=later, lease_seconds=LEASE, limit=5, follow=FOLLOW)
    # the head runs again; the jobs behind it still carry the dead worker's lease, so none follows yet
    assert [j.id for j in taken] == ids[:1]
    store.jobs.complete_many(ids[:1], "w2")
    nxt = store.jobs.lease("w2", now=later, lease_seconds=LEASE, limit=5, follow=FOLLOW)
    assert [j.id for j in nxt] == ids[1:2]  # the next one, due since its lease expired
    store.jobs.complete_many(ids[1:2], "w2")
    assert [j.id for j in store.jobs.lease("w2", now=later, lease_seconds=LEASE, limit=5, follow=FOLLOW)] == ids[2:]
