"""Tokens of a cluster of workers kept in the shared PostgreSQL database (issue 14).

:class:`DbSecretStore` is a SecretStore (``get``/``set``/``delete``, same key names as the keyring
store) over the ``fleet_secrets`` table. Every value is sealed with :class:`~ghl_desktop.adapters.crypto.Sealer`
(AES-GCM, the secret's name as associated data); the key comes from ``GHL_DESKTOP_SECRET_KEY`` or a key
file on each worker and never enters the database, so a database dump holds no usable token.

:class:`PgRefreshLock` makes a token refresh single-flight across every worker: the refresh runs while
its transaction holds ``pg_advisory_xact_lock`` on a hash of the location (released when that
transaction ends, also when the worker dies, since PostgreSQL ends a dead connection's transaction). The
token manager re-reads the token after acquiring and refreshes only if it is still expired.
All database work runs on the database's storage executor (``db.aio.run``), never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Table, delete, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL, Connection, make_url

from ghl_desktop.adapters.crypto import Sealer
from ghl_desktop.core.errors import SecretStoreError
from ghl_desktop.core.models import utcnow

from .database import Database
from .orm import FleetSecretRow

log = logging.getLogger("ghl.secrets")

T = TypeVar("T")

_TABLE = cast(Table, FleetSecretRow.__table__)
#: releases started by a cancelled ``hold`` (kept referenced until they finish)
_RELEASES: set[asyncio.Future[None]] = set()


def is_cluster_database(db: Database) -> bool:
    """PostgreSQL is the cluster database; SQLite is one desktop's own file."""
    return db.engine.dialect.name == "postgresql"


def is_cluster_url(url: str | URL) -> bool:
    """Whether a database URL is a cluster's (PostgreSQL)."""
    return make_url(url).get_backend_name() == "postgresql"


class DbSecretStore:
    """SecretStore on ``fleet_secrets``: sealed values only, the key stays with the worker."""

    def __init__(self, db: Database, sealer: Sealer) -> None:
        self._db = db
        self._sealer = sealer

    @property
    def description(self) -> str:
        return "the cluster database (AES-GCM sealed, key from GHL_DESKTOP_SECRET_KEY)"

    def get(self, key: str) -> str | None:
        with self._db.engine.connect() as conn:
            sealed = conn.execute(select(_TABLE.c.sealed).where(_TABLE.c.name == key)).scalar_one_or_none()
        if sealed is None:
            return None
        try:
            return self._sealer.open(key, sealed)
        except ValueError as exc:
            raise SecretStoreError(str(exc)) from exc

    def set(self, key: str, value: str) -> None:
        sealed = self._sealer.seal(key, value)
        now = utcnow()
        stmt = postgresql.insert(_TABLE).values(name=key, sealed=sealed, updated_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=[_TABLE.c.name],
                                          set_={"sealed": sealed, "updated_at": now})
        with self._db.engine.begin() as conn:
            conn.execute(stmt)

    def delete(self, key: str) -> None:
        with self._db.engine.begin() as conn:
            conn.execute(delete(_TABLE).where(_TABLE.c.name == key))

    def keys(self) -> list[str]:
        with self._db.engine.connect() as conn:
            return sorted(conn.execute(select(_TABLE.c.name)).scalars())


class PgRefreshLock:
    """Cluster-wide single flight: ``async with lock.hold(key)`` holds ``pg_advisory_xact_lock``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Blocking storage work for the token manager, on the database's executor."""
        return await self._db.aio.run(fn, *args)

    def _acquire(self, key: str) -> Connection:
        conn = self._db.engine.connect()
        try:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _release(conn: Connection) -> None:
        try:
            conn.commit()  # ends the transaction, which releases the advisory lock
        finally:
            conn.close()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        pending = asyncio.ensure_future(self._db.aio.run(self._acquire, key))
        try:
            conn = await asyncio.shield(pending)
        except asyncio.CancelledError:
            # the lock may still be granted on the worker thread: release it as soon as it is
            def _drop(fut: asyncio.Future[Connection]) -> None:
                if not fut.cancelled() and fut.exception() is None:
                    release = asyncio.ensure_future(self._db.aio.run(self._release, fut.result()))
                    _RELEASES.add(release)
                    release.add_done_callback(_RELEASES.discard)
            pending.add_done_callback(_drop)
            raise
        try:
            yield
        finally:
            await asyncio.shield(self._db.aio.run(self._release, conn))


def cluster_token_parts(
    db: Database, env: Mapping[str, str] | None = None
) -> tuple[DbSecretStore, PgRefreshLock] | None:
    """The secret store and refresh lock a worker on ``db`` uses, or None on SQLite (one desktop: the
    keyring / vault stays). Raises ``SecretKeyMissing`` (a ConfigError) when PostgreSQL is used
    without a key."""
    if not is_cluster_database(db):
        return None
    return DbSecretStore(db, Sealer.from_env(env)), PgRefreshLock(db)


__all__ = ["DbSecretStore", "PgRefreshLock", "cluster_token_parts", "is_cluster_database", "is_cluster_url"]
