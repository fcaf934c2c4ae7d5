"""The window on a cluster's PostgreSQL (issue 14): one more worker — no keyring, vault or passphrase;
its tokens are the database's sealed store; without the app's credentials in the environment it says
what to set instead of opening a sandbox on the cluster's database."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from ghl_desktop.adapters.crypto import ENV_KEY
from ghl_desktop.cli import build_parser
from ghl_desktop.config import Settings
from ghl_desktop.ui.main import cluster_window, run_window

PG = "postgresql+psycopg://ghl@127.0.0.1:5432/ghl"


def test_which_window_is_a_cluster_worker(tmp_path: Path) -> None:
    real = Settings(home=tmp_path, db_url=PG, client_id="id", client_secret="secret")
    assert cluster_window(real, sandbox=False)
    assert cluster_window(Settings(home=tmp_path, db_url=PG, client_id="id"), sandbox=False)  # secret: env only
    assert not cluster_window(real, sandbox=True)  # --sandbox: the built-in sandbox, its own secrets
    assert not cluster_window(Settings(home=tmp_path, db_url=PG), sandbox=False)  # no client ID: sandbox mode
    assert not cluster_window(Settings(home=tmp_path, client_id="id", client_secret="s"), sandbox=False)  # SQLite


def test_the_window_takes_a_database_url() -> None:
    args = build_parser().parse_args(["--db-url", PG])
    assert args.window_db_url == PG and args.command is None
    assert build_parser().parse_args(["numbers", "list", "--db-url", PG]).db_url == PG


@pytest.mark.asyncio
async def test_a_cluster_window_without_the_client_secret_says_what_to_set(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, secrets.token_hex(32))
    settings = Settings(home=tmp_path / "home", db_url=PG, client_id="id")
    why = await run_window(settings, None)
    assert why is not None and "GHL_CLIENT_SECRET" in why and "GHL_DESKTOP_DB_URL" in why
    assert not (tmp_path / "home" / "sandbox").exists()  # no sandbox was started on the cluster's database
