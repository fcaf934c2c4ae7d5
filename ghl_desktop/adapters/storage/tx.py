"""Transactions for the repositories: one method call, one short transaction.

Database failures leave here as ``core.errors`` types: a unique-key or foreign-key violation as
``StorageConflict`` (repositories catch it where a conflict has a defined meaning, e.g. "already
recorded"), anything else as ``StorageError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ghl_desktop.adapters.storage.engine import WRITE_OPTION
from ghl_desktop.core.errors import StorageError


class StorageConflict(StorageError):
    """A write broke a unique key or a foreign key (e.g. a session for a location that does not exist)."""


class RecordNotFound(StorageError, LookupError):
    """The row to change does not exist."""


class Transactions:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``, so it holds the write lock from the start)."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with Session(bind=conn, expire_on_commit=False, autoflush=True) as session, session.begin():
                    yield session
        except IntegrityError as exc:
            raise StorageConflict(_first_line(exc), detail=str(exc.orig)) from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"Database write failed: {_first_line(exc)}", detail=str(exc)) from exc

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction: one consistent snapshot (WAL readers never wait for the writer)."""
        try:
            with Session(bind=self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StorageError(f"Database read failed: {_first_line(exc)}", detail=str(exc)) from exc


def _first_line(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
