"""``ghl-desktop numbers list [--db-url URL]``: every WhatsApp number of the database, one line each.

    PHONE LOCATION STATE WORKER

(space-separated; ``-`` for a number not paired yet, and for the worker of a number no worker holds
now — always on one desktop, where the one process connects everything).
The database is ``--db-url``, else ``GHL_DESKTOP_DB_URL``, else this machine's data dir. The schema is
not migrated here: an operator's listing never changes the database."""

from __future__ import annotations

import sys
from typing import TextIO

from ghl_desktop.core.errors import GhlDesktopError


def list_numbers(db_url: str | None, out: TextIO | None = None) -> int:
    from ghl_desktop.adapters.storage import open_database
    from ghl_desktop.config import load_settings

    out = sys.stdout if out is None else out
    url = db_url or load_settings().database_url
    try:
        with open_database(url, migrate=False) as db:
            sessions = db.sessions.list()
            holders = _holders(db)
    except GhlDesktopError as exc:
        print(f"ghl-desktop numbers list: {exc}", file=sys.stderr)
        return 2
    for s in sorted(sessions, key=lambda s: (s.location_id, s.phone or "", s.id)):
        out.write(f"{s.phone or '-'} {s.location_id} {s.state.value} {holders.get(s.id, '-')}\n")
    return 0


def _holders(db: object) -> dict[str, str]:
    """{session id: worker} of the unexpired number leases of a cluster (PostgreSQL); {} otherwise."""
    from ghl_desktop.adapters.storage.ownership import ownership_repo

    if db.engine.dialect.name != "postgresql":  # type: ignore[attr-defined]
        return {}
    return ownership_repo(db).holders()


__all__ = ["list_numbers"]
