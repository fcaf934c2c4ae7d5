"""Number leases on the real PostgreSQL (issue 14): claim, renew, expiry and takeover with a new epoch,
release, fenced completion of routed jobs, and the queue's route filter (also on SQLite)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage.ownership import SqlOwnership, ownership_repo
from ghl_desktop.core.models import JobState, Location, NewJob, SessionState, WhatsAppSession, utcnow

pytestmark = pytest.mark.postgres

TTL = 30.0


@pytest.fixture
def pg(pg_url: str) -> Iterator[Database]:
    with open_database(pg_url) as db:
        yield db


def _numbers(db: Database, n: int, state: SessionState = SessionState.CONNECTED, prefix: str = "s") -> list[str]:
    db.locations.upsert(Location(id="loc1", name="Clinic"))
    ids = [f"{prefix}{i}" for i in range(n)]
    for sid in ids:
        db.sessions.create(WhatsAppSession(id=sid, location_id="loc1", state=state, store_path=f"/x/{sid}"))
    return ids


def _expire(db: Database, session_id: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE number_leases SET expires_at = :t WHERE session_id = :s"),
                     {"t": utcnow() - timedelta(seconds=1), "s": session_id})


def test_claims_are_disjoint_and_capped(pg: Database) -> None:
    ids = _numbers(pg, 6)
    _numbers(pg, 2, SessionState.LOGGED_OUT, prefix="out")  # final states are nobody's to connect
    own = ownership_repo(pg)
    a = own.claim("a", 3, TTL)
    b = own.claim("b", 10, TTL)
    assert len(a) == 3 and len(b) == 3 and not set(a) & set(b)
    assert set(a) | set(b) == set(ids)
    assert set(a.values()) == set(b.values()) == {1}
    assert own.claim("c", 10, TTL) == {}  # nothing left: held and unexpired
    assert own.holders() == {**dict.fromkeys(a, "a"), **dict.fromkeys(b, "b")}
    view = own.tick("a", TTL)
    assert view.held == a and view.live_workers == 1 and set(view.claimable) == set(ids)
    own.tick("b", TTL)
    assert own.tick("a", TTL).live_workers == 2


def test_concurrent_claims_never_share_a_number(pg: Database) -> None:
    ids = _numbers(pg, 12)
    own = ownership_repo(pg)
    got: dict[str, dict[str, int]] = {}
    barrier = threading.Barrier(3)

    def take(worker: str) -> None:
        barrier.wait()
        got[worker] = own.claim(worker, 12, TTL)

    threads = [threading.Thread(target=take, args=(w,)) for w in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [sid for claimed in got.values() for sid in claimed]
    assert sorted(taken) == sorted(ids)  # each number exactly once across the three workers


def test_an_expired_lease_is_not_renewed_and_is_taken_over_with_a_new_epoch(pg: Database) -> None:
    [sid] = _numbers(pg, 1)
    own = ownership_repo(pg)
    assert own.claim("a", 1, TTL) == {sid: 1}
    assert own.claim("b", 1, TTL) == {}  # the taker waits for the expiry
    _expire(pg, sid)
    assert own.tick("a", TTL).held == {}  # too late: the holder must already have let it go
    assert own.claim("b", 1, TTL) == {sid: 2}
    assert own.tick("a", TTL).held == {}
    assert own.tick("b", TTL).held == {sid: 2}


def test_release_and_leave_make_numbers_claimable_at_once(pg: Database) -> None:
    ids = _numbers(pg, 3)
    own = ownership_repo(pg)
    own.tick("a", TTL)
    assert len(own.claim("a", 3, TTL)) == 3
    assert own.release("a", [ids[0]]) == 1
    assert own.release("b", [ids[1]]) == 0  # only the holder gives a number back
    assert own.claim("b", 3, TTL) == {ids[0]: 2}
    own.leave("a")
    assert own.tick("b", TTL).live_workers == 1
    assert own.claim("b", 3, TTL) == {ids[1]: 2, ids[2]: 2}
    assert own.epochs() == {ids[0]: ("b", 2), ids[1]: ("b", 2), ids[2]: ("b", 2)}


def _leased_routed_job(db: Database, sid: str, owner: str) -> int:
    job_id, _ = db.jobs.enqueue(NewJob(kind="wa.send", payload={"n": 1}, route=sid))
    [job] = db.jobs.lease(owner, now=utcnow(), lease_seconds=60, routes=[sid])
    assert job.id == job_id and job.route == sid
    return job_id


def test_fenced_completion_refuses_a_stale_epoch_and_hands_the_job_on(pg: Database) -> None:
    [sid] = _numbers(pg, 1)
    own = ownership_repo(pg)
    own.claim("a", 1, TTL)
    job_id = _leased_routed_job(pg, sid, "runner-a")
    _expire(pg, sid)
    assert own.claim("b", 1, TTL) == {sid: 2}
    assert not own.complete_fenced(job_id, "runner-a", worker="a", session_id=sid, epoch=1)
    job = pg.jobs.get(job_id)
    assert job is not None and job.state is JobState.PENDING and job.lease_owner is None
    assert "stale" in (job.last_error or "")
    assert pg.jobs.lease("runner-a", now=utcnow(), lease_seconds=60, routes=[]) == []  # routed: not for a
    [again] = pg.jobs.lease("runner-b", now=utcnow(), lease_seconds=60, routes=[sid])
    assert again.id == job_id
    assert own.complete_fenced(job_id, "runner-b", worker="b", session_id=sid, epoch=2)
    done = pg.jobs.get(job_id)
    assert done is not None and done.state is JobState.DONE


def test_route_job_marks_only_a_job_we_hold(pg: Database) -> None:
    [sid] = _numbers(pg, 1)
    own = SqlOwnership(ownership_repo(pg)._tx)
    job_id, _ = pg.jobs.enqueue(NewJob(kind="ghl.outbound_message", payload={}))
    assert not own.route_job(job_id, "runner-a", sid)  # not leased
    [job] = pg.jobs.lease("runner-a", now=utcnow(), lease_seconds=60, routes=[])
    assert job.route is None
    assert own.route_job(job_id, "runner-a", sid)
    got = pg.jobs.get(job_id)
    assert got is not None and got.route == sid


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_lease_filter_by_route(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    with open_database(url) as db:
        _numbers(db, 2)
        free, _ = db.jobs.enqueue(NewJob(kind="k", payload={}))
        on_s0, _ = db.jobs.enqueue(NewJob(kind="k", payload={}, route="s0"))
        on_s1, _ = db.jobs.enqueue(NewJob(kind="k", payload={}, route="s1", ordering_key="chat:1"))
        behind, _ = db.jobs.enqueue(NewJob(kind="k", payload={}, ordering_key="chat:1"))
        now = utcnow()
        got = db.jobs.lease("w-a", now=now, lease_seconds=60, routes=["s0"])
        assert sorted(j.id for j in got) == [free, on_s0]  # not s1's job, nor the one queued behind it
        assert db.jobs.lease("w-b", now=now, lease_seconds=60, routes=[]) == []
        assert [j.id for j in db.jobs.lease("w-b", now=now, lease_seconds=60, routes=["s1"])] == [on_s1]
        db.jobs.complete(on_s1, "w-b")
        assert [j.id for j in db.jobs.lease("w-b", now=now, lease_seconds=60, routes=[])] == [behind]
        # no routes (one desktop): every job, as before
        db.jobs.enqueue(NewJob(kind="k", payload={}, route="s1"))
        assert len(db.jobs.lease("w-c", now=utcnow(), lease_seconds=60)) == 1
