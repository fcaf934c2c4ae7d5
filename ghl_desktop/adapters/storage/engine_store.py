"""The WhatsApp engine's store in a cluster's PostgreSQL (issue 14, docs/cluster.md).

neonize hands its store name to whatsmeow's ``sqlstore``: a name starting with ``postgres`` opens that
PostgreSQL database through lib/pq, anything else is a SQLite file. A whatsmeow store holds devices,
and a neonize client uses the first one it finds, so every number gets a schema of its own
(``wa_<session id>``), selected with lib/pq's ``search_path`` run-time parameter. Any worker that holds
the number opens the same store: a takeover needs no new scan.

The address is written the way lib/pq reads it (``postgres://user:password@host:port/db?params``):
``sslmode`` is taken from the app's URL, else ``disable`` on a loopback host and ``require``
elsewhere (lib/pq's own default is ``require``; it has no ``prefer``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

_SESSION_ID = re.compile(r"^[A-Za-z0-9_]{1,50}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", ""}


def engine_store_schema(session_id: str) -> str:
    """The schema holding one number's engine store."""
    if not _SESSION_ID.match(session_id):
        raise ValueError(f"not a session id: {session_id!r}")
    return f"wa_{session_id.lower()}"


def engine_store_address(db_url: str | URL, session_id: str) -> str:
    """The lib/pq address of ``session_id``'s engine store in the app's PostgreSQL database."""
    url = make_url(db_url) if isinstance(db_url, str) else db_url
    if not url.drivername.startswith("postgresql"):
        raise ValueError("an engine store address needs a PostgreSQL database URL")
    user = quote(url.username or "", safe="")
    password = f":{quote(url.password, safe='')}" if url.password else ""
    auth = f"{user}{password}@" if user or password else ""
    host = url.host or "localhost"
    netloc = f"[{host}]" if ":" in host else host
    port = f":{url.port}" if url.port else ""
    query = dict(url.query)
    sslmode = str(query.get("sslmode") or ("disable" if host in _LOOPBACK else "require"))
    params = {"sslmode": sslmode, "search_path": engine_store_schema(session_id)}
    return f"postgres://{auth}{netloc}{port}/{quote(url.database or '', safe='')}?{urlencode(params)}"


def ensure_engine_store(db: Any, session_id: str) -> str:
    """Create the number's schema if missing (blocking: on the storage executor). Returns its name."""
    schema = engine_store_schema(session_id)
    with db.engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    return schema


#: how long dropping a number's schema waits for a lock (a whatsmeow transaction still open on it)
DROP_LOCK_TIMEOUT = "10s"


def drop_engine_store(db: Any, session_id: str) -> None:
    """Forget the number's device (logout / remove, SessionService.forget_store): its schema and every
    table whatsmeow made there. Waits at most :data:`DROP_LOCK_TIMEOUT` for a lock, then raises."""
    schema = engine_store_schema(session_id)
    with db.engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


__all__ = ["drop_engine_store", "engine_store_address", "engine_store_schema", "ensure_engine_store"]
