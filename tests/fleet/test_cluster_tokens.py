"""Tokens in a cluster (issue 14) on the real PostgreSQL of the harness: sealed in the database, and one
refresh across three worker processes racing on an expired token (sandbox in its own process)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from ghl_desktop.adapters.crypto import ENV_KEY, Sealer
from ghl_desktop.adapters.storage import open_database
from ghl_desktop.adapters.storage.secrets_db import DbSecretStore, cluster_token_parts
from ghl_desktop.core.errors import SecretStoreError
from ghl_desktop.core.models import Location, utcnow
from tests.fixtures.processes import standalone_sandbox

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKERS, CALLS = 3, 7


def _raw_rows(db_url: str) -> dict[str, str]:
    with open_database(db_url, migrate=False) as db, db.engine.connect() as conn:
        return {str(r[0]): str(r[1]) for r in conn.execute(text("SELECT name, sealed FROM fleet_secrets"))}


def test_db_store_seals_every_value_and_needs_the_key(pg_url: str) -> None:
    key = secrets.token_hex(32)
    with open_database(pg_url) as db:
        store = DbSecretStore(db, Sealer.from_env({ENV_KEY: key}))
        store.set("location:L1:refresh_token", "rt-clear-1")
        store.set("location:L1:refresh_token", "rt-clear-2")  # upsert
        store.set("location:L1:access_token", "at-clear")
        assert store.get("location:L1:refresh_token") == "rt-clear-2"
        assert store.get("location:L9:access_token") is None
        assert store.keys() == ["location:L1:access_token", "location:L1:refresh_token"]
        with pytest.raises(SecretStoreError, match=ENV_KEY):
            DbSecretStore(db, Sealer.from_env({ENV_KEY: secrets.token_hex(32)})).get("location:L1:access_token")
        store.delete("location:L1:access_token")
        store.delete("location:L1:access_token")  # idempotent
        assert store.get("location:L1:access_token") is None
    rows = _raw_rows(pg_url)
    assert set(rows) == {"location:L1:refresh_token"}
    assert "rt-clear" not in rows["location:L1:refresh_token"] and key not in rows["location:L1:refresh_token"]


def test_sqlite_keeps_the_desktop_store(sqlite_url: str) -> None:
    with open_database(sqlite_url) as db:
        assert cluster_token_parts(db, {}) is None


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    """``ghl-desktop sandbox`` in its own process on a free loopback port."""
    with standalone_sandbox(locations=1) as url:
        yield url


@pytest.mark.parametrize("db_knows", [True, False], ids=["expiry-recorded", "only-401"])
def test_three_workers_one_refresh_and_everyone_uses_the_new_token(pg_url: str, sandbox_url: str,
                                                                   db_knows: bool) -> None:
    """``expiry-recorded``: the cluster's record says expired (access_token refreshes up front);
    ``only-401``: the record says valid, the sandbox refuses the token (refresh with the refused one)."""
    key = secrets.token_hex(32)
    env = {**os.environ, ENV_KEY: key, "PYTHONPATH": str(ROOT)}
    with httpx.Client(base_url=sandbox_url, timeout=30) as http:
        state = http.get("/_sandbox/state").json()
        app, loc = state["app"], state["locations"][0]["id"]
        grant = http.post(f"/_sandbox/locations/{loc}/token").json()
        old_access, old_refresh = grant["access_token"], grant["refresh_token"]
        with open_database(pg_url) as db:
            parts = cluster_token_parts(db, {ENV_KEY: key})
            assert parts is not None
            store, _lock = parts
            store.set(f"location:{loc}:refresh_token", old_refresh)
            store.set(f"location:{loc}:access_token", old_access)
            # forced expiry: the sandbox refuses the old token; with db_knows the cluster's record says so too
            recorded = utcnow() + (timedelta(minutes=-1) if db_knows else timedelta(hours=1))
            db.locations.upsert(Location(id=loc, name="Clinic", token_expires_at=recorded))
        assert http.post("/_sandbox/tokens/expire", json={"locationId": loc}).json()["expired"] >= 1
        before = http.get("/_sandbox/state").json()["stats"]

        cmd = [sys.executable, "-m", "tests.fleet._token_worker", sandbox_url, pg_url, loc,
               app["client_id"], app["client_secret"], str(CALLS)]
        procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
                 for _ in range(WORKERS)]
        outputs: list[dict[str, object]] = []
        try:
            for p in procs:
                assert p.stdout is not None
                assert p.stdout.readline().strip() == "ready"
            for p in procs:  # start them together so they race on the expired token
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            for p in procs:
                out, _ = p.communicate(timeout=120)
                assert p.returncode == 0, out
                outputs.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        after = http.get("/_sandbox/state").json()["stats"]

    results = [tuple(r) for o in outputs for r in o["results"]]  # type: ignore[attr-defined]
    assert len(results) == WORKERS * CALLS
    assert after.get("oauth_refreshes", 0) - before.get("oauth_refreshes", 0) == 1
    by_loc_before = before.get("oauth_refreshes_by_location", {}).get(loc, 0)
    assert after["oauth_refreshes_by_location"][loc] - by_loc_before == 1
    assert sum(int(o["refresh_requests"]) for o in outputs) == 1  # type: ignore[call-overload]
    assert after.get("oauth_refresh_grace_reuse", 0) == before.get("oauth_refresh_grace_reuse", 0)
    with open_database(pg_url, migrate=False) as db:
        parts = cluster_token_parts(db, {ENV_KEY: key})
        assert parts is not None
        new_access = parts[0].get(f"location:{loc}:access_token")
        new_refresh = parts[0].get(f"location:{loc}:refresh_token")
    assert new_access and new_refresh and new_access != old_access and new_refresh != old_refresh
    assert results == [(200, new_access)] * len(results)
    rows = _raw_rows(pg_url)
    for clear in (old_access, old_refresh, new_access, new_refresh, key):
        assert all(clear not in sealed for sealed in rows.values())
