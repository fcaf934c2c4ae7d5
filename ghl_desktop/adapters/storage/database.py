"""The storage facade: one object holding the engine and every repository."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from ghl_desktop.adapters.storage import migrate as _migrate
from ghl_desktop.adapters.storage.engine import create_storage_engine, is_memory_sqlite, parse_url
from ghl_desktop.adapters.storage.jobs import SqlJobQueue
from ghl_desktop.adapters.storage.message_log import SqlMessageLog
from ghl_desktop.adapters.storage.offloop import AsyncStorage, StorageClosed
from ghl_desktop.adapters.storage.repositories import (
    SqlContactRepository,
    SqlLocationRepository,
    SqlMessageRepository,
    SqlSessionRepository,
)
from ghl_desktop.adapters.storage.routing import SqlRoutingRepository
from ghl_desktop.adapters.storage.tx import Transactions
from ghl_desktop.core.errors import StorageError

log = logging.getLogger("ghl.storage")


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    """What ``doctor`` and the status bar show about the database."""

    backend: str  # "sqlite" / "postgresql"
    server_version: str
    revision: str | None
    head: str
    journal_mode: str | None = None  # SQLite only
    foreign_keys: bool | None = None  # SQLite only

    @property
    def up_to_date(self) -> bool:
        return self.revision == self.head

    def summary(self) -> str:
        parts = [f"{self.backend} {self.server_version}", f"schema {self.revision or 'empty'}"]
        if not self.up_to_date:
            parts.append(f"(needs migration to {self.head})")
        if self.journal_mode is not None:
            parts.append(f"journal={self.journal_mode}")
        if self.foreign_keys is not None:
            parts.append(f"foreign_keys={'on' if self.foreign_keys else 'off'}")
        return ", ".join(parts)


class Database:
    """Engine + repositories (``locations``, ``sessions``, ``contacts``, ``messages``, ``jobs``) and the
    message log's queries (``message_log``)."""

    def __init__(self, engine: Engine, url: URL) -> None:
        self.engine = engine
        self.url = url
        tx = Transactions(engine)
        self.locations = SqlLocationRepository(tx)
        self.sessions = SqlSessionRepository(tx)
        self.contacts = SqlContactRepository(tx)
        self.messages = SqlMessageRepository(tx)
        self.jobs = SqlJobQueue(tx)
        self.message_log = SqlMessageLog(tx)
        #: several numbers per location: reply settings and stickiness (issue 15)
        self.routing = SqlRoutingRepository(tx)
        self._closed = False
        self._aio: AsyncStorage | None = None
        self._aio_lock = threading.Lock()

    @property
    def aio(self) -> AsyncStorage:
        """The repositories as awaitable facades, run on this database's storage executor (one writer
        thread for SQLite, a small pool for PostgreSQL). What services use; created on first use."""
        with self._aio_lock:
            if self._aio is None:
                if self._closed:
                    raise StorageClosed("the database is closed")
                self._aio = AsyncStorage(self)
            return self._aio

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, fit for logs and the UI."""
        return self.url.render_as_string(hide_password=True)

    def migrate(self) -> str:
        """Apply the shipped migrations; returns the schema revision now in place."""
        return _migrate.upgrade(self.engine)

    def status(self) -> DatabaseStatus:
        """Connects and reads the schema revision (and, for SQLite, the pragmas actually in force)."""
        try:
            with self.engine.connect() as conn:
                revision = _migrate.current_revision(conn)
                journal = foreign_keys = None
                if self.engine.dialect.name == "sqlite":
                    version = str(conn.exec_driver_sql("select sqlite_version()").scalar())
                    journal = str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
                    foreign_keys = bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar())
                else:
                    info = self.engine.dialect.server_version_info or ()
                    version = ".".join(str(p) for p in info) or "?"
                    conn.execute(text("select 1"))
                conn.rollback()
        except SQLAlchemyError as exc:
            raise StorageError(f"Cannot reach the database {self.display_url}: {exc}", detail=str(exc)) from exc
        return DatabaseStatus(self.engine.dialect.name, version, revision, _migrate.head_revision(), journal,
                              foreign_keys)

    def check(self) -> str:
        """For ``doctor``: one line describing the database, or StorageError with what to fix."""
        status = self.status()
        if not status.up_to_date:
            raise StorageError(
                f"Database schema is at {status.revision or 'nothing'}, the app needs {status.head}: "
                "start the app once (it migrates on start-up)"
            )
        if status.foreign_keys is False:
            raise StorageError("SQLite foreign keys are off; the database connection was not set up by ghl-desktop")
        return status.summary()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Drains the storage executor (calls already submitted finish, its threads end), then returns
        every pooled connection; idempotent."""
        if not self._closed:
            self._closed = True
            with self._aio_lock:
                aio = self._aio
            if aio is not None:
                aio.shutdown(wait=True)
            self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"


def open_database(url: str | URL, *, migrate: bool = True, echo: bool = False) -> Database:
    """Open ``url`` (any SQLAlchemy URL: ``sqlite:///file.db``, ``postgresql+psycopg://...``) and, with
    ``migrate``, bring its schema up to date before anything uses it.

    Raises ``StorageError`` with a user-facing message when the URL is invalid, the server cannot be
    reached, the folder cannot be created, or the database belongs to a newer version of the app."""
    parsed = parse_url(url)
    engine = create_storage_engine(parsed, echo=echo)
    db = Database(engine, parsed)
    if is_memory_sqlite(parsed):
        log.warning("using an in-memory SQLite database: nothing survives a restart")
    if migrate:
        try:
            revision = db.migrate()
            log.info("database ready: %s (schema %s)", db.display_url, revision)
        except StorageError:
            db.close()
            raise
        except SQLAlchemyError as exc:
            db.close()
            raise StorageError(f"Cannot open the database {db.display_url}: {exc}", detail=str(exc)) from exc
    return db
