"""Durable storage: SQLAlchemy 2 tables, alembic migrations applied at start-up, and the repositories
behind the ``core.ports`` Protocols.

    db = open_database(settings.database_url, migrate=True)
    db.messages.record(message, job)   # one transaction, idempotent on the unique keys
    db.close()
"""

from __future__ import annotations

from ghl_desktop.adapters.storage.database import Database, DatabaseStatus, open_database
from ghl_desktop.adapters.storage.tx import RecordNotFound, StorageConflict

__all__ = ["Database", "DatabaseStatus", "RecordNotFound", "StorageConflict", "open_database"]
