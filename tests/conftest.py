"""Shared test setup: offscreen Qt, a qasync loop for async tests, an isolated data dir, and an
in-memory keyring so no test touches the developer's real secrets."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from PySide6.QtWidgets import QApplication

from ghl_desktop.ui.qloop import QEventLoop  # qasync's loop, fixed (see the module)

pytest_plugins = ["tests.fixtures.storage", "tests.fixtures.sandbox", "tests.fixtures.loop_watch",
                  "tests.fixtures.storage_on_loop"]


def _qasync_loop() -> asyncio.AbstractEventLoop:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    loop: asyncio.AbstractEventLoop = QEventLoop(app)
    return loop


_FACTORIES = {"qasync": _qasync_loop}  # module level: the same objects every call


def pytest_asyncio_loop_factories(config, item):  # type: ignore[no-untyped-def]
    return _FACTORIES


class MemoryKeyring(KeyringBackend):
    """A dict-backed keyring backend for unit tests."""

    priority = 0  # type: ignore[assignment]  # never auto-chained next to a real backend

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


#: Test modules that load neonize in-process (its Go runtime, its threads and signal handlers stay for
#: the life of the process). scripts/run-tests.sh runs them in a pytest process of their own, so the
#: Qt/qasync tests never share a process with the Go runtime.
ENGINE_MODULES = ("tests/core/test_wa_normalize.py", "tests/adapters/whatsapp/test_neonize_")


def pytest_configure(config: pytest.Config) -> None:
    """In the engine process (``-m engine``), import neonize once before anything else, with its
    import-time leak silenced: neonize/utils/platform.py runs ``os.popen("uname -a").read()`` and never
    closes the pipe (an unclosed file, a still-running subprocess: ResourceWarnings, errors under the
    suite's ``filterwarnings = error``). Nothing of ours is silenced; the Qt process never loads Go."""
    if config.option.markexpr != "engine":
        return
    import gc
    import subprocess
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        import neonize.client  # noqa: F401

        # the dropped Popen parks itself in subprocess._active with its pipe; reap it here, not at the
        # next test's Popen
        for proc in list(getattr(subprocess, "_active", None) or []):
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        proc = None  # the last reference goes inside the block
        subprocess._cleanup()  # type: ignore[attr-defined]
        gc.collect()


#: engine modules a run without ``-m engine`` left uncollected (reported at the end of the run)
_ENGINE_LEFT: list[str] = []


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Outside the engine process, the engine modules are not even imported: importing one starts Go
    in a process that runs Qt (and leaks neonize's import-time pipe, which fails the run). So
    ``pytest tests/core`` works and says where those tests went."""
    if config.option.markexpr == "engine":
        return None
    try:
        rel = collection_path.relative_to(config.rootpath).as_posix()
    except ValueError:
        return None
    if rel.startswith(ENGINE_MODULES):
        _ENGINE_LEFT.append(rel)
        return True
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _ENGINE_LEFT:
        terminalreporter.write_line(
            f"{len(_ENGINE_LEFT)} test module(s) that load the neonize engine were left to a process of their "
            "own: run them with `-m engine` (scripts/run-tests.sh does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith(ENGINE_MODULES):
            item.add_marker(pytest.mark.engine)
            # Known, left open (issue 11 closing note): in the engine process a garbage collection that
            # happens to run on Go's callback thread may destroy a Qt object left by an earlier test's
            # loop there, and Qt says so. Seen ~1 run in 3 of tests/adapters/whatsapp under -m engine;
            # not reproduced with the loops tracked. Only these tests, only this message.
            item.add_marker(pytest.mark.qt_log_ignore(
                "QObject::~QObject: Timers cannot be stopped from another thread"))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[None]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("GHL_DESKTOP_HOME", str(home))
    for var in ("GHL_CLIENT_ID", "GHL_CLIENT_SECRET", "GHL_PROVIDER_ID", "GHL_API_BASE", "GHL_DESKTOP_DB_URL",
                "GHL_DESKTOP_VAULT_PASSPHRASE", "GHL_RELAY_URL"):
        monkeypatch.delenv(var, raising=False)
    if request.node.get_closest_marker("secret_service"):
        yield
        return
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def data_home(tmp_path: Path) -> Path:
    return tmp_path / "home"
