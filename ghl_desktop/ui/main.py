"""Starting the window: logging first, then QApplication, the secret store (asking for the vault
passphrase when there is no keyring), the :class:`App`, the qasync loop and the main window.

The process ends when the window has closed and :meth:`App.aclose` has finished.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import qasync
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from ghl_desktop import __version__
from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.core.errors import GhlDesktopError
from ghl_desktop.logging_setup import configure_logging
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.passphrase import ask_with_dialog, unlock_secret_store
from ghl_desktop.ui.resources import app_icon

log = logging.getLogger("ghl.ui")


def create_qt_application() -> QApplication:
    existing = QApplication.instance()
    qt_app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    qt_app.setApplicationName("ghl-desktop")
    qt_app.setApplicationDisplayName("ghl-desktop")
    qt_app.setApplicationVersion(__version__)
    qt_app.setDesktopFileName("ghl-desktop")
    qt_app.setWindowIcon(app_icon())
    # the window's closeEvent runs an async shutdown; Qt must not end the loop under it
    qt_app.setQuitOnLastWindowClosed(False)
    return qt_app


async def _run_window(app: App, window: MainWindow) -> None:
    finished = asyncio.Event()
    window.shutdown_finished.connect(finished.set)
    await app.start()
    window.show()
    await finished.wait()


def run_gui(sandbox: bool = False, sandbox_port: int = 0) -> int:
    settings = load_settings()
    logging_setup = configure_logging(settings)  # before anything imports neonize
    log.info("ghl-desktop %s starting (sandbox=%s, sandbox port=%s)", __version__, sandbox, sandbox_port or "auto")
    qt_app = create_qt_application()

    secrets = unlock_secret_store(settings, ask_with_dialog())
    if secrets is None:
        print("No vault passphrase was given, so ghl-desktop did not start.", file=sys.stderr)
        return 1
    try:
        app = App(settings, secrets=secrets, logging_setup=logging_setup, sandbox=sandbox)
    except GhlDesktopError as exc:
        log.error("cannot start: %s", exc)
        QMessageBox.critical(None, "ghl-desktop cannot start", str(exc))
        return 1

    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    window = MainWindow(app)
    # Ctrl+C in the terminal closes the window the normal way; the timer lets Python see the signal
    signal.signal(signal.SIGINT, lambda *_: window.close())
    wake = QTimer()
    wake.start(250)
    wake.timeout.connect(lambda: None)
    try:
        with loop:
            loop.run_until_complete(_run_window(app, window))
    finally:
        wake.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logging_setup.close()
    return 0


__all__ = ["create_qt_application", "run_gui"]
