"""The composition root: builds each part once, refuses a locked vault before touching data, and shuts
down with every task awaited and the database closed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from ghl_desktop.adapters.secrets import PASSPHRASE_ENV, KeyringSecretStore, VaultSecretStore
from ghl_desktop.app import App, display_database_url
from ghl_desktop.config import load_settings
from ghl_desktop.core.errors import VaultLocked
from ghl_desktop.core.models import Location
from tests.fakes.secrets import MemorySecretStore


@pytest.fixture
def made() -> list[App]:
    return []


@pytest.fixture(autouse=True)
def _close_logging(made: list[App]):  # type: ignore[no-untyped-def]
    yield
    for app in made:
        if not app.closed:
            app.db.close()
        app.logging.close()


def build(made: list[App], **kwargs: object) -> App:
    app = App(load_settings(), console_log=False, **kwargs)  # type: ignore[arg-type]
    made.append(app)
    return app


def test_builds_real_parts_from_settings(made: list[App], data_home: Path) -> None:
    app = build(made)
    assert isinstance(app.secrets, KeyringSecretStore)  # the in-memory keyring from conftest works
    assert (data_home / "ghl-desktop.db").exists()
    assert app.logging.log_file.exists()
    app.db.locations.upsert(Location(id="loc1", name="Dental"))
    status = app.status()
    assert status.locations == 1 and status.sessions == 0 and status.pending_jobs == 0
    assert status.database == str(data_home / "ghl-desktop.db")
    assert status.sandbox  # no credentials configured


def test_two_apps_do_not_share_state(made: list[App], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build(made, secrets=MemorySecretStore())
    monkeypatch.setenv("GHL_DESKTOP_HOME", str(tmp_path / "other"))
    second = build(made, secrets=MemorySecretStore())
    first.db.locations.upsert(Location(id="loc1", name="Dental"))
    assert second.db.locations.list() == []
    assert first.bus is not second.bus


def test_headless_start_without_keyring_or_passphrase_is_refused(made: list[App], data_home: Path) -> None:
    keyring.set_keyring(fail.Keyring())
    with pytest.raises(VaultLocked, match=PASSPHRASE_ENV):
        build(made)
    assert not (data_home / "ghl-desktop.db").exists()  # refused before any data was touched
    assert not (data_home / "secrets.vault").exists()
    # the logging it had configured is removed again, not left behind on the root logger
    assert not [h for h in logging.getLogger().handlers if getattr(h, "_ghl_desktop", False)]


def test_headless_start_with_the_env_passphrase_uses_the_vault(
    made: list[App], monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring.set_keyring(fail.Keyring())
    monkeypatch.setenv(PASSPHRASE_ENV, "a long passphrase")
    app = build(made)
    assert isinstance(app.secrets, VaultSecretStore)
    assert "encrypted vault" in app.status().secret_store


def test_stored_client_secret_is_redacted_from_logs(made: list[App]) -> None:
    secrets = MemorySecretStore()
    secrets.set("app:client_secret", "stored-client-secret-42")
    app = build(made, secrets=secrets)
    logging.getLogger("ghl.test").error("oops stored-client-secret-42")
    for handler in app.logging.handlers:
        handler.flush()
    assert "stored-client-secret-42" not in app.logging.log_file.read_text()


@pytest.mark.asyncio
async def test_aclose_cancels_and_awaits_tasks_and_closes_the_database(made: list[App]) -> None:
    app = build(made, secrets=MemorySecretStore())
    cleaned = asyncio.Event()

    async def long_running() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    async def failing() -> None:
        raise RuntimeError("boom")

    task = app.spawn(long_running(), name="long")
    bad = app.spawn(failing(), name="bad")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert bad.done() and app.tasks == frozenset({task})
    await app.aclose()
    assert task.cancelled() and cleaned.is_set()
    assert app.closed and app.tasks == frozenset()
    assert app.db.closed
    await app.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        app.spawn(asyncio.sleep(0), name="late")


def test_display_database_url_hides_passwords() -> None:
    assert display_database_url("postgresql+psycopg://ghl:***@db:5432/x") == "postgresql+psycopg://db:5432/x"
    assert display_database_url("sqlite:////data/ghl.db") == "/data/ghl.db"


@pytest.mark.asyncio
@pytest.mark.loop_watch  # the detector fails this test if the open (migrations, vault, logging) ran on the loop
async def test_open_builds_the_app_off_the_loop(data_home: Path) -> None:
    app = await App.open(load_settings(), secrets=MemorySecretStore(), console_log=False)
    try:
        assert (data_home / "ghl-desktop.db").exists()
        await app.db.aio.locations.upsert(Location(id="loc1", name="Dental"))
        assert [loc.id for loc in await app.db.aio.locations.list()] == ["loc1"]
    finally:
        await app.aclose()
    assert app.closed and app.db.aio.executor.closed


@pytest.mark.asyncio
async def test_an_open_cancelled_midway_closes_what_it_opened(data_home: Path) -> None:
    handlers = list(logging.getLogger().handlers)
    opening = asyncio.ensure_future(App.open(load_settings(), secrets=MemorySecretStore(), console_log=False))
    await asyncio.sleep(0)  # the open has started on its thread
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    # the App the thread built was closed again: its log handlers are gone (and its database closed:
    # an open engine would fail the run with a ResourceWarning)
    assert logging.getLogger().handlers == handlers
