"""Alembic environment, driven from code (``ghl_desktop.adapters.storage.migrate``), never from an
alembic.ini on disk.

The caller hands over an open connection in ``config.attributes["connection"]`` that is already inside
a transaction, so the whole upgrade commits or rolls back as one unit (SQLite included: its driver
is put in manual-transaction mode by the engine, which makes its DDL transactional too).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ghl_desktop.adapters.storage.orm import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    """``alembic upgrade --sql``: print the SQL for a DBA instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # invoked by a developer's own alembic command line
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as own:
            context.configure(connection=own, target_metadata=target_metadata, render_as_batch=True)
            context.run_migrations()
        engine.dispose()
        return
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only ALTER by copying tables; batch mode does that
        compare_type=True,
    )
    context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
