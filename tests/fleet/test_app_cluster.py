"""The App on PostgreSQL keeps its tokens sealed in the database and refreshes under the cluster lock;
on SQLite the desktop's keyring/vault stays; without a key it refuses with a plain message."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from ghl_desktop.adapters.crypto import ENV_KEY, ENV_KEY_FILE, SecretKeyMissing
from ghl_desktop.adapters.storage.secrets_db import DbSecretStore, PgRefreshLock
from ghl_desktop.app import App
from ghl_desktop.config import Settings


@pytest.mark.postgres
def test_app_on_postgres_uses_the_sealed_store(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, secrets.token_hex(32))
    app = App(Settings(home=tmp_path / "home", db_url=pg_url), console_log=False)
    try:
        assert isinstance(app.secrets, DbSecretStore) and isinstance(app.token_cluster, PgRefreshLock)
        app.secrets.set("location:L1:access_token", "at-1")
        assert app.secrets.get("location:L1:access_token") == "at-1"
    finally:
        asyncio.run(app.aclose())


@pytest.mark.postgres
def test_app_on_postgres_without_a_key_refuses(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.delenv(ENV_KEY_FILE, raising=False)
    with pytest.raises(SecretKeyMissing, match=ENV_KEY):
        App(Settings(home=tmp_path / "home", db_url=pg_url), console_log=False)


def test_app_on_sqlite_keeps_the_desktop_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.secrets import MemorySecretStore

    store = MemorySecretStore()
    app = App(Settings(home=tmp_path / "home"), secrets=store, console_log=False)
    try:
        assert app.secrets is store and app.token_cluster is None
    finally:
        asyncio.run(app.aclose())


@pytest.mark.postgres
def test_headless_worker_on_postgres_needs_the_key_not_a_keyring(pg_url: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    env.update({"GHL_DESKTOP_HOME": str(tmp_path / "home"), "GHL_DESKTOP_DB_URL": pg_url,
                "GHL_CLIENT_ID": "abc-def", "GHL_CLIENT_SECRET": "s", "GHL_DESKTOP_NO_REEXEC": "1",
                "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    result = subprocess.run([sys.executable, "-m", "ghl_desktop", "headless"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert ENV_KEY in result.stderr and "GHL_DESKTOP_VAULT_PASSPHRASE" not in result.stderr
