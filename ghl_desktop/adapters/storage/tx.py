"""Transactions for the repositories: one method call, one short transaction.

Database failures leave here as ``core.errors`` types: a unique-key or foreign-key violation as
``StorageConflict`` (repositories catch it where a conflict has a defined meaning, e.g. "already
recorded"); contention and a full disk as ``StorageBusy`` (transient: the job runner retries, the
transaction was rolled back); anything else as ``StorageError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

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


_MERGE_ATTR = "_ghl_storage_merge"
F = TypeVar("F", bound=Callable[..., Any])


def mergeable(fn: F) -> F:
    """Mark a repository method whose calls the SQLite storage executor may run several to ONE
    transaction (:meth:`Transactions.grouped`, ``StorageExecutor._next``): a write the bridge makes per
    message or per batch, that reaches the database only through :class:`Transactions` (so the group's
    savepoints and joined reads apply), and whose caller may be answered after a shared commit."""
    setattr(fn, _MERGE_ATTR, True)
    return fn


def is_mergeable(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, _MERGE_ATTR, False))


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
        Inside :meth:`together` on this thread: that transaction (it commits or rolls back everything).
        Inside :meth:`grouped`: a savepoint of the group's transaction (see there)."""
        joined: Session | None = getattr(self._joined, "session", None)
        if joined is not None:
            if getattr(self._joined, "group", None) is not None and not getattr(self._joined, "call_open", False):
                with self._group_call(joined):
                    yield joined
            else:
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
            raise _write_failed(exc) from exc

    @contextmanager
    def together(self) -> Iterator[Session]:
        """ONE write transaction that every :meth:`write` on this thread inside the block joins: several
        repositories' writes, one commit (the job runner completes a job with its handler's last write)."""
        with self.write() as session:
            previous = getattr(self._joined, "session", None)
            self._joined.session = session
            try:
                yield session
            finally:
                self._joined.session = previous

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """ONE write transaction for several calls of the storage executor (its group commit, SQLite).

        Each outermost :meth:`write` / :meth:`together` block inside runs in a SAVEPOINT of it, so it
        commits or rolls back as if it were a transaction of its own: a block that raises leaves
        nothing behind, and its exception is converted as :meth:`write` converts it. Reads
        (:meth:`read`, :meth:`reading`) join the group, so a call sees what an earlier call of the
        group wrote. Only the COMMIT (SQLite's fsync) is shared; the executor answers each caller
        after it, so nothing is acknowledged before it is durable."""
        if getattr(self._joined, "session", None) is not None:
            raise RuntimeError("a group commit cannot start inside another transaction")
        with self.write() as session:
            self._joined.session = session
            self._joined.group = session
            self._joined.call_open = False
            try:
                yield
            finally:
                self._joined.session = None
                self._joined.group = None
                self._joined.call_open = False

    @contextmanager
    def _group_call(self, session: Session) -> Iterator[None]:
        """(inside :meth:`grouped`) One call's outermost write block: a savepoint."""
        self._joined.call_open = True
        try:
            with session.begin_nested():
                yield
        except IntegrityError as exc:
            raise StorageConflict(_first_line(exc), detail=str(exc.orig)) from exc
        except SQLAlchemyError as exc:
            raise _write_failed(exc) from exc
        finally:
            self._joined.call_open = False

    @property
    def joined_read(self) -> Connection | None:
        """The connection of the :meth:`reading` block open on this thread, if any (inside
        :meth:`grouped`: the group's own)."""
        conn: Connection | None = getattr(self._joined, "read", None)
        if conn is None:
            group: Session | None = getattr(self._joined, "group", None)
            if group is not None:
                return group.connection()
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
        """A read transaction: one consistent snapshot (WAL readers never wait for the writer). Inside
        :meth:`grouped`: the group's transaction (its calls read what the earlier ones wrote)."""
        group: Session | None = getattr(self._joined, "group", None)
        if group is not None:
            yield group
            return
        try:
            with Session(bind=self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            if is_busy(exc):
                raise StorageBusy(f"Database busy, will retry: {_first_line(exc)}", detail=str(exc)) from exc
            raise StorageError(f"Database read failed: {_first_line(exc)}", detail=str(exc)) from exc


def _write_failed(exc: SQLAlchemyError) -> StorageError:
    if is_busy(exc):
        return StorageBusy(f"Database busy, will retry: {_first_line(exc)}", detail=str(exc))
    return StorageError(f"Database write failed: {_first_line(exc)}", detail=str(exc))


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
