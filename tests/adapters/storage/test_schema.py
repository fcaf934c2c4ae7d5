"""Migrations, engine settings and the facade, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, String, Table, inspect, text

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage.migrate import head_revision
from ghl_desktop.adapters.storage.orm import Base
from ghl_desktop.core.errors import StorageError
from ghl_desktop.core.models import Direction, Location, Message, MessageKind, NewJob

TABLES = {"locations", "whatsapp_sessions", "contact_links", "messages", "jobs", "job_heads", "fleet_secrets",
          "number_leases", "cluster_workers", "history_imports", "history_items", "location_routing",
          "alembic_version"}


def _diffs(db: Database, metadata: MetaData) -> list[object]:
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, metadata))


def test_migrations_build_the_orm_schema_exactly(backend_url: str) -> None:
    db = open_database(backend_url, migrate=False)
    try:
        assert set(inspect(db.engine).get_table_names()) == set()
        assert db.migrate() == head_revision() == "0007"
        assert set(inspect(db.engine).get_table_names()) == TABLES
        assert _diffs(db, Base.metadata) == []
        # the comparison is able to fail: a schema with one more table and column is reported
        extra = MetaData()
        for table in Base.metadata.tables.values():
            table.to_metadata(extra)
        Table("unmigrated", extra, Column("id", Integer, primary_key=True))
        extra.tables["locations"].append_column(Column("surplus", String(10)))
        kinds = sorted(d[0] if isinstance(d, tuple) else d[0][0] for d in _diffs(db, extra))  # type: ignore[index]
        assert kinds == ["add_column", "add_table"]
    finally:
        db.close()


def test_migrating_twice_is_a_no_op_and_keeps_data(backend_url: str) -> None:
    with open_database(backend_url) as db:
        db.locations.upsert(Location(id="loc1", name="Clinic"))
    with open_database(backend_url) as db:
        assert db.migrate() == "0007"
        assert [loc.id for loc in db.locations.list()] == ["loc1"]
        assert db.check().endswith(("journal=wal, foreign_keys=on", "schema 0007"))


def test_database_from_a_newer_app_is_refused(backend_url: str) -> None:
    with open_database(backend_url) as db, db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StorageError, match="newer version"):
        open_database(backend_url)


def test_check_reports_an_unmigrated_database(backend_url: str) -> None:
    with open_database(backend_url, migrate=False) as db:
        with pytest.raises(StorageError, match="start the app once"):
            db.check()
        assert db.status().revision is None


def test_sqlite_pragmas_are_on_for_every_connection(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dirs" / "app.db"
    with open_database(f"sqlite:///{path}") as db:
        assert path.parent.is_dir()  # parent folders were created
        for _ in range(3):  # several pooled connections, each set up
            with db.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
        status = db.status()
        assert (status.journal_mode, status.foreign_keys, status.up_to_date) == ("wal", True, True)
        db.locations.upsert(Location(id="loc1", name="Clinic"))
    # WAL is a property of the file: a plain sqlite3 connection sees it, and the committed row
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT name FROM locations").fetchall() == [("Clinic",)]
    finally:
        raw.close()


def test_sqlite_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(StorageError):
        db.messages.record(Message(location_id="nope", direction=Direction.INBOUND, kind=MessageKind.TEXT,
                                   chat_jid="1@s.whatsapp.net"))
    assert db.messages.recent() == []


def test_bad_urls_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="Invalid database URL"):
        open_database("not a url")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="Cannot create the database folder"):
        open_database(f"sqlite:///{blocker / 'sub' / 'db.sqlite'}")
    with pytest.raises(StorageError, match="Cannot open the database"):
        open_database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_datetimes_come_back_utc_aware(store: Database) -> None:
    plus_five = timezone(timedelta(hours=5))
    expiry = datetime(2030, 1, 2, 8, 30, 15, 123456, tzinfo=plus_five)
    store.locations.upsert(Location(id="loc1", name="Clinic", token_expires_at=expiry))
    got = store.locations.get("loc1")
    assert got is not None and got.token_expires_at is not None
    assert got.token_expires_at.tzinfo is not None and got.token_expires_at.utcoffset() == timedelta(0)
    assert got.token_expires_at == expiry  # same instant
    assert got.token_expires_at.hour == 3  # 08:30 at +05:00 is 03:30 UTC
    assert got.installed_at.tzinfo is not None and got.updated_at.tzinfo is not None
    job_id, _ = store.jobs.enqueue(NewJob(kind="k", payload={}, run_at=datetime(2030, 1, 1, tzinfo=UTC)))
    job = store.jobs.get(job_id)
    assert job is not None and job.next_attempt_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert job.next_attempt_at.tzinfo is not None


def test_naive_datetimes_are_refused_and_nothing_is_written(store: Database) -> None:
    with pytest.raises(StorageError, match="naive datetime"):
        store.locations.upsert(Location(id="loc1", name="Clinic", token_expires_at=datetime(2030, 1, 1)))
    assert store.locations.list() == []


def test_db_fixture_is_a_migrated_sqlite_file(db: Database) -> None:
    assert db.engine.dialect.name == "sqlite"
    assert db.url.database and Path(db.url.database).is_file()
    assert db.status().up_to_date
    db.close()
    db.close()  # idempotent; the fixture closes again


def test_postgres_tests_skip_locally_but_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.storage import PG_ENV, postgres_server_url

    monkeypatch.delenv(PG_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        postgres_server_url()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        postgres_server_url()
    monkeypatch.setenv(PG_ENV, "postgresql+psycopg://u@127.0.0.1:5/x")
    assert postgres_server_url() == "postgresql+psycopg://u@127.0.0.1:5/x"


def test_drafting_a_new_migration_finds_no_changes_today(tmp_path: Path) -> None:
    """The developer tool drafts ``0008_...`` from ORM changes; with the ORM and the shipped
    migrations in step, the draft must contain no operations."""
    from ghl_desktop.adapters.storage.migrate import new_revision

    path = new_revision("nothing changed", version_path=tmp_path)
    assert path.parent == tmp_path and path.name == "0008_nothing_changed.py"
    source = path.read_text()
    assert 'revision: str = "0008"' in source or "revision: str = '0008'" in source
    body = source.split("def upgrade() -> None:")[1].split("def downgrade")[0]
    assert "op." not in body, body
