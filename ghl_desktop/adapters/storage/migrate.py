"""Applying the shipped alembic migrations from code (no alembic.ini on disk).

The upgrade runs on one connection inside one write transaction: two app instances starting at the
same time cannot both migrate, and a failed migration leaves the previous schema intact.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine

from ghl_desktop.adapters.storage.engine import WRITE_OPTION
from ghl_desktop.core.errors import StorageError

log = logging.getLogger("ghl.storage")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """An alembic Config pointing at the migrations inside the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise StorageError("No database migrations found in the package (broken installation)")
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns it. Refuses a database from a newer app."""
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            current = current_revision(conn)
            if current is not None and _unknown(script, current):
                raise StorageError(
                    f"The database is at schema revision {current!r}, which this version of ghl-desktop "
                    "does not know: it was written by a newer version. Update the app, or point "
                    "GHL_DESKTOP_DB_URL at another database."
                )
            config.attributes["connection"] = conn
            try:
                command.upgrade(config, "head")
            except CommandError as exc:
                raise StorageError(f"Database migration failed: {exc}", detail=str(exc)) from exc
            new = current_revision(conn)
    if new != current:
        log.info("database schema migrated from %s to %s", current or "empty", new)
    if new is None:  # pragma: no cover - alembic always stamps
        raise StorageError("Database migration did not record a schema revision")
    return new


def _unknown(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is None
    except CommandError:
        return True


def new_revision(message: str, *, version_path: Path | None = None) -> Path:
    """Developer tool: write the next numbered migration (``NNNN_<slug>.py``) with the operations
    alembic detects between the current migrations and the ORM, for a human to review and edit.
    Compared against a throwaway SQLite database, so check PostgreSQL-specific details by hand."""
    import tempfile

    from ghl_desktop.adapters.storage.engine import create_storage_engine

    config = alembic_config()
    if version_path is not None:  # the draft goes elsewhere (tests); alembic must know that folder too
        config.set_main_option(
            "version_locations", os.pathsep.join([str(MIGRATIONS_DIR / "versions"), str(version_path)])
        )
    head = head_revision()
    rev_id = f"{int(head) + 1:04d}" if head.isdigit() else None
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_storage_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        try:
            upgrade(engine)
            with engine.connect() as conn:
                config.attributes["connection"] = conn
                script = command.revision(
                    config, message, autogenerate=True, rev_id=rev_id,
                    version_path=str(version_path) if version_path else None,
                )
        finally:
            engine.dispose()
    if script is None or isinstance(script, list):  # pragma: no cover - single head, single script
        raise StorageError("alembic did not produce one revision script")
    return Path(script.path)


def main(argv: list[str] | None = None) -> int:
    """``python -m ghl_desktop.adapters.storage upgrade URL`` or ``... revision "message"``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ghl_desktop.adapters.storage")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="migrate the database at URL to the newest schema")
    up.add_argument("url")
    rev = sub.add_parser("revision", help="draft the next migration from the ORM changes")
    rev.add_argument("message")
    args = parser.parse_args(argv)
    if args.command == "upgrade":
        from ghl_desktop.adapters.storage.engine import create_storage_engine

        engine = create_storage_engine(args.url)
        try:
            print(f"schema at {upgrade(engine)}")
        finally:
            engine.dispose()
    else:
        print(f"wrote {new_revision(args.message)}; review it, then add it to the tests' expectations")
    return 0
