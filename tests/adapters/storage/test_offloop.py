"""The storage executor and the async facades (adapters/storage/offloop.py): every call runs on the
database's worker thread, never on the loop thread; results and exceptions come back unchanged;
closing the database drains the calls in flight and ends the thread; the ``core.ports.Async*``
Protocols match the repositories they wrap."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import pytest

from ghl_desktop.adapters.storage import Database, RecordNotFound, StorageClosed, open_database
from ghl_desktop.adapters.storage.jobs import SqlJobQueue
from ghl_desktop.adapters.storage.message_log import SqlMessageLog
from ghl_desktop.adapters.storage.offloop import POSTGRES_WORKERS, StorageExecutor, workers_for
from ghl_desktop.adapters.storage.repositories import (
    SqlContactRepository,
    SqlLocationRepository,
    SqlMessageRepository,
    SqlSessionRepository,
)
from ghl_desktop.core import ports
from ghl_desktop.core.models import Location, LocationState, NewJob, SessionState


def _db_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ghl-db")]


@pytest.mark.asyncio
async def test_every_facade_runs_its_repository_on_the_storage_thread(db: Database) -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}
    for name in ("locations", "sessions", "contacts", "messages", "jobs", "message_log"):
        repo = getattr(db, name)
        method = "location_choices" if name == "message_log" else "count" if name == "jobs" else "list"
        if name in ("contacts", "messages"):
            method = "find" if name == "contacts" else "recent"
        real = getattr(repo, method)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            seen[_name] = threading.get_ident()
            return _real(*args, **kwargs)

        setattr(repo, method, spy)
        facade = getattr(db.aio, name)
        args: tuple[Any, ...] = ("loc-1",) if name == "contacts" else ()
        await getattr(facade, method)(*args)
    assert set(seen) == {"locations", "sessions", "contacts", "messages", "jobs", "message_log"}
    assert loop_thread not in seen.values()
    assert len(set(seen.values())) == 1  # SQLite: the one writer thread
    assert await db.aio.run(threading.get_ident) == next(iter(seen.values()))


@pytest.mark.asyncio
async def test_results_and_exceptions_come_back_unchanged(db: Database) -> None:
    stored = await db.aio.locations.upsert(Location(id="loc-1", company_id="c", name="Acme"))
    assert stored.id == "loc-1" and (await db.aio.locations.get("loc-1")) == db.locations.get("loc-1")
    job_id, created = await db.aio.jobs.enqueue(NewJob(kind="k", payload={"n": 1}, dedupe_key="d"))
    assert created and await db.aio.jobs.enqueue(NewJob(kind="k", payload={}, dedupe_key="d")) == (job_id, False)
    with pytest.raises(RecordNotFound):
        await db.aio.sessions.set_state("no-such-number", SessionState.CONNECTED)
    with pytest.raises(ZeroDivisionError):
        await db.aio.run(lambda: 1 / 0)
    await db.aio.locations.set_state("loc-1", LocationState.NEEDS_RECONNECT)
    assert db.locations.get("loc-1").state is LocationState.NEEDS_RECONNECT  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_sqlite_calls_run_one_at_a_time_in_submission_order(db: Database) -> None:
    order: list[int] = []
    active = [0, 0]  # now, most at once

    def step(i: int) -> None:
        active[0] += 1
        active[1] = max(active[1], active[0])
        time.sleep(0.002)
        order.append(i)
        active[0] -= 1

    await asyncio.gather(*(db.aio.run(step, i) for i in range(20)))
    assert order == list(range(20)) and active[1] == 1


@pytest.mark.asyncio
async def test_closing_drains_the_calls_in_flight_and_ends_the_thread(sqlite_url: str) -> None:
    database = open_database(sqlite_url, migrate=True)
    release = threading.Event()
    done: list[int] = []

    def slow(i: int) -> int:
        release.wait(5)
        done.append(i)
        return i

    try:
        calls = [asyncio.ensure_future(database.aio.run(slow, i)) for i in range(5)]
        calls.append(asyncio.ensure_future(database.aio.jobs.enqueue(NewJob(kind="k", payload={}))))
        await asyncio.sleep(0)  # every call submitted
        assert _db_threads()
        threading.Timer(0.05, release.set).start()
    finally:
        database.close()  # waits for the six submitted calls
    assert done == [0, 1, 2, 3, 4]
    results = await asyncio.gather(*calls)
    assert results[:5] == [0, 1, 2, 3, 4] and results[5][1] is True
    assert not [t for t in _db_threads() if t.is_alive()]
    with pytest.raises(StorageClosed):
        await database.aio.jobs.count()
    with pytest.raises(StorageClosed):
        await _closed_executor_run()


async def _closed_executor_run() -> None:
    executor = StorageExecutor("sqlite")
    executor.shutdown()
    executor.shutdown()  # idempotent
    await executor.run(int)


def test_the_pool_size_follows_the_dialect() -> None:
    assert workers_for("sqlite") == 1
    assert workers_for("postgresql") == POSTGRES_WORKERS > 1
    executor = StorageExecutor("postgresql")
    try:
        assert executor.workers == POSTGRES_WORKERS
    finally:
        executor.shutdown()


@pytest.mark.asyncio
async def test_postgresql_calls_run_on_the_pool(pg_url: str) -> None:
    database = open_database(pg_url, migrate=True)
    try:
        assert database.aio.executor.workers == POSTGRES_WORKERS
        idents = await asyncio.gather(*(database.aio.run(lambda: (time.sleep(0.01), threading.get_ident())[1])
                                        for _ in range(8)))
        assert threading.get_ident() not in idents
        await database.aio.jobs.enqueue(NewJob(kind="k", payload={}))
        assert await database.aio.jobs.count("pending") == 1
    finally:
        database.close()
    assert not [t for t in _db_threads() if t.is_alive()]


_PAIRS = [
    (ports.AsyncLocationRepository, ports.LocationRepository, SqlLocationRepository),
    (ports.AsyncSessionRepository, ports.SessionRepository, SqlSessionRepository),
    (ports.AsyncContactRepository, ports.ContactRepository, SqlContactRepository),
    (ports.AsyncMessageRepository, ports.MessageRepository, SqlMessageRepository),
    (ports.AsyncJobQueue, ports.JobQueue, SqlJobQueue),
    (ports.AsyncMessageLogQuery, ports.MessageLogQuery, SqlMessageLog),
]


def _methods(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(cls).items()
            if callable(fn) and not name.startswith("_")}


def _params(sig: inspect.Signature) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize(("async_port", "sync_port", "impl"), _PAIRS, ids=lambda c: c.__name__)
def test_the_async_ports_are_the_sync_ports_awaited(async_port: type, sync_port: type, impl: type) -> None:
    awaited = _methods(async_port)
    blocking = {n: s for n, s in _methods(sync_port).items() if n != "threadsafe"}
    assert set(awaited) == set(blocking), "an Async* Protocol must offer exactly its repository's methods"
    implemented = _methods(impl)
    for name, sig in awaited.items():
        assert inspect.iscoroutinefunction(vars(async_port)[name]), name
        assert _params(sig) == _params(blocking[name]), name
        assert name in implemented and _params(implemented[name]) == _params(sig), f"{impl.__name__}.{name}"
