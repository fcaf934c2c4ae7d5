"""Issue 10.7: the data dir holds message bodies and phone numbers — 0700, and the desktop's database,
its -wal/-shm, and the relay's database all 0600, whatever the umask; older files are tightened."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ghl_desktop.adapters.storage import open_database
from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.core.files import ensure_private_dir
from ghl_desktop.relay.store import RelayStore
from tests.fakes.secrets import MemorySecretStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _permissive_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual desktop umask: files 0644, dirs 0755
    yield
    os.umask(old)


@pytest.mark.asyncio
async def test_data_dir_database_and_its_wal_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "fresh-home"
    monkeypatch.setenv("GHL_DESKTOP_HOME", str(home))
    app = App(load_settings(), secrets=MemorySecretStore(), console_log=False)
    try:
        app.db.jobs.count()  # a connection is open: -wal and -shm exist
        db = home / "ghl-desktop.db"
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert all(p.exists() for p in files)
        assert _mode(home) == 0o700
        for path in files:
            assert _mode(path) == 0o600, path
    finally:
        await app.aclose()


@pytest.mark.asyncio
async def test_files_left_world_readable_by_an_older_version_are_tightened(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "old-home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    db = home / "ghl-desktop.db"
    monkeypatch.setenv("GHL_DESKTOP_HOME", str(home))
    first = App(load_settings(), secrets=MemorySecretStore(), console_log=False)
    await first.aclose()
    for path in (home, db):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    again = App(load_settings(), secrets=MemorySecretStore(), console_log=False)
    try:
        assert _mode(home) == 0o700 and _mode(db) == 0o600
    finally:
        await again.aclose()


def test_relay_database_and_its_wal_are_private(tmp_path: Path) -> None:
    data = tmp_path / "relay-data"
    store = RelayStore.open(f"sqlite:///{data / 'relay.db'}")
    try:
        store.create_token("d")
        assert _mode(data) == 0o700
        for name in ("relay.db", "relay.db-wal", "relay.db-shm"):
            assert _mode(data / name) == 0o600, name
    finally:
        store.close()


def test_a_database_in_a_shared_folder_leaves_the_folder_alone(tmp_path: Path) -> None:
    """A database URL naming a file in a shared folder (``/tmp``, a team share) must not close that
    folder to 0700: it was seen closing /tmp itself for every other user and program."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    team = tmp_path / "team"
    team.mkdir()
    os.chmod(team, 0o775)
    for folder in (shared, team):
        db = open_database(f"sqlite:///{folder / 'ghl.db'}", migrate=True)
        try:
            assert _mode(folder / "ghl.db") == 0o600
        finally:
            db.close()
        store = RelayStore.open(f"sqlite:///{folder / 'relay.db'}")
        store.close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert _mode(team) == 0o775
    assert _mode(ensure_private_dir(shared)) == 0o1777  # the sticky bit: never tightened
    new = ensure_private_dir(shared / "new" / "data", tighten_existing=False)
    assert _mode(new) == 0o700
