"""Transactions for the repositories: one method call, one short transaction.

Database failures leave here as ``core.errors`` types: a unique-key or foreign-key violation as
``StorageConflict`` (repositories catch it where a conflict has a defined meaning, e.g. "already
recorded"); contention and a full disk as ``StorageBusy`` (transient: the job runner retries, the
transaction was rolled back); anything else as ``StorageError``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ghl_desktop.adapters.storage.engine import WRITE_OPTION
from ghl_desktop.core.errors import StorageBusy, StorageError

#: SQLite messages of contention / no space (the SQLITE_BUSY, SQLITE_LOCKED and SQLITE_FULL codes)
_SQLITE_BUSY_TEXT = ("database is locked", "database table is locked", "database schema is locked",
                     "database or disk is full")
#: PostgreSQL SQLSTATEs: serialization_failure, deadlock_detected, lock_not_available, disk_full,
#: insufficient_resources, too_many_connections
_PG_BUSY_STATES = {"40001", "40P01", "55P03", "53100", "53000", "53300"}


class StorageConflict(StorageError):
    """A write broke a unique key or a foreign key (e.g. a session for a location that does not exist)."""


class RecordNotFound(StorageError, LookupError):
    """The row to change does not exist."""


class Transactions:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._joined = threading.local()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``, so it holds the write lock from the start).
        Inside :meth:`together` on this thread: that transaction (it commits or rolls back everything)."""
        joined: Session | None = getattr(self._joined, "session", None)
        if joined is not None:
            yield joined
            return
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with Session(bind=conn, expire_on_commit=False, autoflush=True) as session, session.begin():
                    yield session
        except IntegrityError as exc:
            raise StorageConflict(_first_line(exc), detail=str(exc.orig)) from exc
        except SQLAlchemyError as exc:
            if is_busy(exc):
                raise StorageBusy(f"Database busy, will retry: {_first_line(exc)}", detail=str(exc)) from exc
            raise StorageError(f"Database write failed: {_first_line(exc)}", detail=str(exc)) from exc

    @contextmanager
    def together(self) -> Iterator[Session]:
        """ONE write transaction that every :meth:`write` on this thread inside the block joins: several
        repositories' writes, one commit (the job runner completes a job with its handler's last write)."""
        with self.write() as session:
            previous = getattr(self._joined, "session", None)  # a nested block: the outer one's
            self._joined.session = session
            try:
                yield session
            finally:
                self._joined.session = previous

    @property
    def joined_read(self) -> Connection | None:
        """The connection of the :meth:`reading` block open on this thread, if any."""
        conn: Connection | None = getattr(self._joined, "read", None)
        return conn

    @contextmanager
    def reading(self) -> Iterator[None]:
        """ONE read transaction that every Core read (``repositories.read_connection``) on this thread
        inside the block joins: several lookups, one snapshot and one BEGIN (the job runner's reads for
        the jobs it just leased). Nested: the outer block's."""
        if self.joined_read is not None:
            yield
            return
        try:
            with self.engine.connect() as conn:
                self._joined.read = conn
                try:
                    yield
                finally:
                    self._joined.read = None
        except SQLAlchemyError as exc:
            if is_busy(exc):
                raise StorageBusy(f"Database busy, will retry: {_first_line(exc)}", detail=str(exc)) from exc
            raise StorageError(f"Database read failed: {_first_line(exc)}", detail=str(exc)) from exc

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction: one consistent snapshot (WAL readers never wait for the writer)."""
        try:
            with Session(bind=self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            if is_busy(exc):
                raise StorageBusy(f"Database busy, will retry: {_first_line(exc)}", detail=str(exc)) from exc
            raise StorageError(f"Database read failed: {_first_line(exc)}", detail=str(exc)) from exc


def is_busy(exc: SQLAlchemyError) -> bool:
    """Whether a database failure is contention (or a full disk): the same work can succeed later."""
    if not isinstance(exc, DBAPIError) or isinstance(exc, IntegrityError):
        return False
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(state, str) and state in _PG_BUSY_STATES:
        return True
    name = getattr(orig, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL")):
        return True
    text = str(orig).lower()
    return any(marker in text for marker in _SQLITE_BUSY_TEXT)


def _first_line(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
