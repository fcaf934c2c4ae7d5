"""Durable storage: SQLAlchemy 2 tables, alembic migrations applied at start-up, and the repositories
behind the ``core.ports`` Protocols.

    db = open_database(settings.database_url, migrate=True)
    db.messages.record(message, job)   # one transaction, idempotent on the unique keys (blocking)
    await db.aio.messages.record(message, job)   # the same, on the storage executor (what services do)
    db.close()                           # drains the executor, closes the pool
"""

from __future__ import annotations

from ghl_desktop.adapters.storage.database import Database, DatabaseStatus, open_database
from ghl_desktop.adapters.storage.offloop import AsyncStorage, StorageClosed, StorageExecutor
from ghl_desktop.adapters.storage.tx import RecordNotFound, StorageConflict

__all__ = ["AsyncStorage", "Database", "DatabaseStatus", "RecordNotFound", "StorageClosed", "StorageConflict",
           "StorageExecutor", "open_database"]
