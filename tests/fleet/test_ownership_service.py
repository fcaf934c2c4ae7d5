"""The ownership service's heartbeat on the real PostgreSQL (issue 14): fair shares, rebalancing when a
worker joins or leaves, a dead worker's numbers taken over only after their expiry, and a worker that
cannot renew disconnecting before its leases can expire. The "sessions" here record what the service
asks of them (connect / disconnect) — the real sessions service is covered by the process test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage.ownership import ownership_repo
from ghl_desktop.core.models import Location, SessionState, WhatsAppSession
from ghl_desktop.services.ownership import OwnershipOptions, OwnershipService

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]

FAST = OwnershipOptions(heartbeat_seconds=0.2, takeover_seconds=1.0)


class Recorder:
    """What a worker's sessions service was told: which numbers are connected here; every connect and
    disconnect of all workers also goes, in order, to the shared ``log``."""

    def __init__(self, name: str, log: list[tuple[str, str, str]]) -> None:
        self.name = name
        self.own: OwnershipService | None = None
        self.connected: set[str] = set()
        self.log = log

    async def connect_held(self) -> None:
        assert self.own is not None
        for sid in self.own.held_ids():
            if sid not in self.connected:
                assert not any(a == "connect" and s == sid for _w, a, s in self._open()), f"{sid} connected twice"
                self.connected.add(sid)
                self.log.append((self.name, "connect", sid))

    def _open(self) -> list[tuple[str, str, str]]:
        """Connections open right now, across workers (from the log)."""
        open_: dict[str, tuple[str, str, str]] = {}
        for entry in self.log:
            if entry[1] == "connect":
                open_[entry[2]] = entry
            else:
                open_.pop(entry[2], None)
        return list(open_.values())

    async def release(self, session_id: str) -> None:
        if session_id in self.connected:
            self.connected.discard(session_id)
            self.log.append((self.name, "disconnect", session_id))


@pytest.fixture
def pg(pg_url: str) -> Iterator[Database]:
    LOG.clear()
    with open_database(pg_url) as db:
        db.locations.upsert(Location(id="loc1", name="Clinic"))
        for i in range(6):
            db.sessions.create(WhatsAppSession(id=f"n{i}", location_id="loc1", state=SessionState.CONNECTED,
                                               store_path=f"/x/n{i}"))
        yield db


LOG: list[tuple[str, str, str]] = []


def _worker(db: Database, name: str, options: OwnershipOptions = FAST) -> tuple[OwnershipService, Recorder]:
    rec = Recorder(name, LOG)
    own = OwnershipService(ownership_repo(db), db.aio.run, rec, name, options)
    rec.own = own
    return own, rec


async def _until(check: object, within: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not check():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


def _disjoint_cover(*recs: Recorder) -> bool:
    sets = [r.connected for r in recs]
    return sum(len(s) for s in sets) == 6 and set().union(*sets) == {f"n{i}" for i in range(6)}


async def test_numbers_spread_and_rebalance_as_workers_join_and_leave(pg: Database) -> None:
    a, ra = _worker(pg, "a")
    b, rb = _worker(pg, "b")
    c, rc = _worker(pg, "c")
    await a.start()
    assert len(ra.connected) == 6  # alone: everything
    await b.start()
    await _until(lambda: len(ra.connected) == 3 and len(rb.connected) == 3 and _disjoint_cover(ra, rb))
    await c.start()
    await _until(lambda: [len(r.connected) for r in (ra, rb, rc)] == [2, 2, 2] and _disjoint_cover(ra, rb, rc))
    await b.stop()  # clean stop: disconnected, released at once
    assert rb.connected == set()
    await _until(lambda: [len(r.connected) for r in (ra, rc)] == [3, 3] and _disjoint_cover(ra, rc))
    await a.stop()
    await c.stop()
    assert ownership_repo(pg).holders() == {}


async def test_a_dead_workers_numbers_are_taken_after_expiry_by_the_living(pg: Database) -> None:
    a, ra = _worker(pg, "a")
    b, rb = _worker(pg, "b")
    await a.start()
    await b.start()
    await _until(lambda: len(ra.connected) == 3 and len(rb.connected) == 3 and _disjoint_cover(ra, rb))
    # "kill" b: its heartbeat stops, nothing is released (its connections are gone with the process)
    assert b._task is not None and b._watchdog is not None
    b._task.cancel()
    b._watchdog.cancel()
    dead = set(rb.connected)
    for sid in dead:  # its sockets died with it
        await rb.release(sid)
    epochs = ownership_repo(pg).epochs()
    await _until(lambda: len(ra.connected) == 6)
    after = ownership_repo(pg).epochs()
    assert all(after[sid] == ("a", epochs[sid][1] + 1) for sid in dead)  # taken over: a new epoch
    await a.stop()


async def test_a_worker_that_cannot_renew_disconnects_before_anyone_takes_over(pg: Database) -> None:
    a, ra = _worker(pg, "a")
    b, rb = _worker(pg, "b")
    await a.start()
    stuck = asyncio.Event()
    renew = a.run

    async def hanging(fn: object, *args: object, **kwargs: object) -> object:
        await stuck.wait()  # the database unreachable: a's heartbeat hangs
        return await renew(fn, *args, **kwargs)  # type: ignore[arg-type]

    a.run = hanging  # type: ignore[method-assign]
    await b.start()
    await _until(lambda: len(rb.connected) == 6)
    assert ra.connected == set()
    for sid in rb.connected:  # a disconnected each number before b connected it
        assert LOG.index(("a", "disconnect", sid)) < LOG.index(("b", "connect", sid))
    stuck.set()
    await b.stop()
    await a.stop()
