"""Storage contention is transient (issue 11 item 5): a write that meets another writer's lock fails
as ``StorageBusy`` (retried by the job runner, never a dead letter), on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage import engine as storage_engine
from ghl_desktop.core.errors import StorageBusy, StorageError
from ghl_desktop.core.models import NewJob


def test_sqlite_locked_is_busy(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_engine, "SQLITE_BUSY_TIMEOUT_MS", 30)
    db = open_database(sqlite_url, migrate=True)
    locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageBusy) as caught:
            db.jobs.enqueue(NewJob(kind="k", payload={}))
        assert caught.value.transient and isinstance(caught.value, StorageError)
        locker.execute("ROLLBACK")
        assert db.jobs.enqueue(NewJob(kind="k", payload={}))[0]
    finally:
        locker.close()
        db.close()


@pytest.fixture
def pg_db_with_lock_timeout(pg_url: str) -> Iterator[tuple[Database, str]]:
    url = make_url(pg_url)
    options = f"{url.query.get('options', '')} -clock_timeout=100".strip()
    db = open_database(url.update_query_dict({"options": options}).render_as_string(hide_password=False),
                       migrate=True)
    try:
        yield db, pg_url
    finally:
        db.close()


def test_postgresql_lock_not_available_is_busy(pg_db_with_lock_timeout: tuple[Database, str]) -> None:
    db, url = pg_db_with_lock_timeout
    other = create_engine(url)
    try:
        with other.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))  # another process holds the table
            with pytest.raises(StorageBusy, match="busy") as caught:
                db.jobs.enqueue(NewJob(kind="k", payload={}))
            assert caught.value.transient
        assert db.jobs.enqueue(NewJob(kind="k", payload={}))[0]  # and works once the lock is gone
    finally:
        other.dispose()
