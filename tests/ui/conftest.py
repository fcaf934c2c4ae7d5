"""UI fixtures: an App on a real SQLite file in the test's data dir, a qasync loop for sync tests,
and a shown main window that is shut down properly after the test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from PySide6.QtWidgets import QApplication

from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.qloop import QEventLoop
from tests.fakes.secrets import MemorySecretStore


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    loop = QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def secrets() -> MemorySecretStore:
    return MemorySecretStore()


@pytest.fixture
def app(secrets: MemorySecretStore) -> Iterator[App]:
    instance = App(load_settings(), secrets=secrets, console_log=False)
    try:
        yield instance
    finally:
        if not instance.closed:
            instance.db.close()
        instance.logging.close()


@pytest.fixture
def window(qtbot, qloop: asyncio.AbstractEventLoop, app: App) -> Iterator[MainWindow]:  # type: ignore[no-untyped-def]
    win = MainWindow(app)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    qloop.run_until_complete(asyncio.wait_for(win.wait_idle(), 30))  # the first reads, off the loop
    yield win
    if not win.shutdown_done:
        qloop.run_until_complete(asyncio.wait_for(win.wait_shutdown(), 30))


@pytest.fixture(autouse=True)
def _qt_app_like_run_gui(qapp: QApplication) -> Iterator[None]:
    """run_gui turns off quit-on-last-window-closed (the window's async shutdown needs the loop);
    the tests run the window under the same rule."""
    previous = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)
    yield
    qapp.setQuitOnLastWindowClosed(previous)
