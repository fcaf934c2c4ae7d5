"""Engine construction: any SQLAlchemy URL; SQLite tuned for a durable single-machine queue.

SQLite settings and why:
- ``journal_mode=WAL``: readers (the UI) never block the writer (the bridge), and vice versa.
- ``synchronous=FULL``: a commit is on disk before it returns, so nothing is acknowledged (to
  WhatsApp, to a HighLevel webhook) that a power cut could still lose.
- ``foreign_keys=ON``: SQLite ignores foreign keys unless asked, per connection.
- ``busy_timeout``: a second writer waits for the lock instead of failing at once.
- The driver's own implicit transactions are switched off and we emit ``BEGIN`` ourselves: write
  transactions use ``BEGIN IMMEDIATE`` (take the write lock first), which is what makes a
  read-then-write like ``JobQueue.lease`` atomic and avoids the "database is locked" failure a
  deferred transaction hits when it upgrades from reading to writing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from ghl_desktop.core.errors import StorageError
from ghl_desktop.core.files import ensure_private_dir, ensure_private_sqlite

log = logging.getLogger("ghl.storage")

#: execution option set on a connection whose next transaction will write (SQLite: BEGIN IMMEDIATE)
WRITE_OPTION = "ghl_write"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def parse_url(url: str | URL) -> URL:
    try:
        return make_url(url)
    except ArgumentError as exc:
        raise StorageError(
            f"Invalid database URL {str(url)!r}: expected e.g. sqlite:///path/to/file.db or "
            "postgresql+psycopg://user@host/db",
            detail=str(exc),
        ) from exc


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_storage_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """An engine for ``url``; for a SQLite file, its parent directory is created first."""
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        if is_memory_sqlite(parsed):
            # one shared connection, or every pooled connection would see its own empty database
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            database = parsed.database or ""
            if not database.startswith("file:"):
                path = Path(database).expanduser()
                try:
                    # data dir 0700, database 0600 before SQLite creates it (-wal/-shm inherit the mode)
                    ensure_private_dir(path.parent, tighten_existing=False)  # the App tightens the data dir
                    ensure_private_sqlite(path)
                except OSError as exc:
                    raise StorageError(
                        f"Cannot create the database folder {path.parent}: {exc.strerror or exc}. "
                        "Check the permissions or set GHL_DESKTOP_DB_URL / GHL_DESKTOP_HOME elsewhere.",
                        detail=str(exc),
                    ) from exc
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StorageError(f"Cannot use database URL {parsed.render_as_string()!r}: {exc}", detail=str(exc)) \
            from exc
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine, memory=is_memory_sqlite(parsed))
    return engine


def _tune_sqlite(engine: Engine, *, memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # manual transactions: pysqlite would otherwise BEGIN lazily and commit DDL on its own
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                mode = cursor.fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("SQLite refused WAL journal mode (got %s); continuing with it", mode)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
