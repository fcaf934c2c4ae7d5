"""The neonize engine store's PostgreSQL address (issue 14): what can be checked without WhatsApp — the
lib/pq address read back the way lib/pq parses a URL reaches the right server, database, credentials
and per-number schema on the harness's PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

from ghl_desktop.adapters.storage import open_database
from ghl_desktop.adapters.storage.engine_store import (
    drop_engine_store,
    engine_store_address,
    engine_store_schema,
    ensure_engine_store,
)


def _as_libpq_reads_it(address: str) -> dict[str, str]:
    parts = urlsplit(address)
    assert parts.scheme == "postgres"
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return {"host": parts.hostname or "", "port": str(parts.port or 5432), "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""), "dbname": unquote(parts.path.lstrip("/")), **params}


def test_address_keeps_credentials_and_picks_the_numbers_schema() -> None:
    url = URL.create("postgresql+psycopg", username="ghl", password="p@ss:w/rd?", host="db.internal", port=6543,
                     database="fleet", query={"sslmode": "verify-full"})
    got = _as_libpq_reads_it(engine_store_address(url, "ABC123def"))
    assert got == {"host": "db.internal", "port": "6543", "user": "ghl", "password": "p@ss:w/rd?",
                   "dbname": "fleet", "sslmode": "verify-full", "search_path": "wa_abc123def"}
    assert _as_libpq_reads_it(engine_store_address("postgresql+psycopg://u@127.0.0.1/x", "s1"))["sslmode"] == "disable"
    assert _as_libpq_reads_it(engine_store_address("postgresql://u@pg.example.com/x", "s1"))["sslmode"] == "require"
    with pytest.raises(ValueError):
        engine_store_address("sqlite:///data.db", "s1")
    with pytest.raises(ValueError):
        engine_store_schema('x"; DROP SCHEMA public; --')


@pytest.mark.postgres
def test_the_address_opens_the_numbers_own_schema(pg_url: str) -> None:
    session_id = uuid.uuid4().hex
    with open_database(pg_url) as db:
        schema = ensure_engine_store(db, session_id)
        try:
            opts = _as_libpq_reads_it(engine_store_address(make_url(pg_url), session_id))
            search_path = opts.pop("search_path")
            sslmode = opts.pop("sslmode")
            with psycopg.connect(**opts, sslmode=sslmode, options=f"-csearch_path={search_path}") as conn:
                conn.execute("CREATE TABLE whatsmeow_device (jid text primary key)")  # what whatsmeow makes
                conn.execute("INSERT INTO whatsmeow_device VALUES ('15550200000.0:1@s.whatsapp.net')")
                conn.commit()
            with db.engine.connect() as conn:
                rows = conn.exec_driver_sql(f'SELECT jid FROM "{schema}".whatsmeow_device').all()
            assert [r[0] for r in rows] == ["15550200000.0:1@s.whatsapp.net"]
            assert ensure_engine_store(db, session_id) == schema  # idempotent, data kept
        finally:
            drop_engine_store(db, session_id)
        with db.engine.connect() as conn:
            left = conn.exec_driver_sql("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).scalar()
        assert left == 0


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_cluster_worker_forgets_a_numbers_schema_with_the_number(
        pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logout, link again and remove drop the number's whatsmeow schema (its device keys), not only
    its local files: the runtime wires ``SessionService.forget_store`` on a cluster's database."""
    from ghl_desktop.adapters.crypto import ENV_KEY
    from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
    from ghl_desktop.app import App
    from ghl_desktop.config import Settings
    from ghl_desktop.runtime import BridgeRuntime

    monkeypatch.setenv(ENV_KEY, secrets.token_hex(32))
    app = App(Settings(home=tmp_path / "home", db_url=pg_url), console_log=False)
    try:
        runtime = BridgeRuntime(app, simulated_transport_factory("http://127.0.0.1:9"))
        assert runtime.sessions.forget_store is not None
        session_id = uuid.uuid4().hex
        schema = await app.db.aio.run(ensure_engine_store, app.db, session_id)
        await runtime.sessions.forget_store(session_id)
        with app.db.engine.connect() as conn:
            left = conn.exec_driver_sql("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)).scalar()
        assert left == 0
        await runtime.http.aclose()
    finally:
        await app.aclose()


def test_a_desktop_keeps_no_schema_to_forget(tmp_path: Path) -> None:
    from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
    from ghl_desktop.app import App
    from ghl_desktop.config import Settings
    from ghl_desktop.runtime import BridgeRuntime
    from tests.fakes.secrets import MemorySecretStore

    app = App(Settings(home=tmp_path / "home"), secrets=MemorySecretStore(), console_log=False)
    try:
        assert BridgeRuntime(app, simulated_transport_factory("http://127.0.0.1:9")).sessions.forget_store is None
    finally:
        asyncio.run(app.aclose())
