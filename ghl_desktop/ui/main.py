"""Starting the window: logging first, then QApplication, the secret store (asking for the vault
passphrase when there is no keyring), the qasync loop, then — on that loop — the sandbox when
needed, the :class:`App`, the :class:`BridgeRuntime` and the main window.

Sandbox mode: with ``--sandbox``, or when no HighLevel credentials exist (no client ID, or no client
secret in the environment or the secret store), the HighLevel sandbox and the simulated WhatsApp
network run in-process exactly as ``ghl-desktop headless --sandbox`` runs them (state in
``<data dir>/sandbox/``, the same port on every start), and the window says so with the sandbox's
address. So ``make run`` on a fresh machine lands in a window that works end to end.

The process ends when the window has closed, which stops the runtime, closes the app and then the
sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from ghl_desktop import __version__
from ghl_desktop.app import App, with_stored_client_secret
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.core.errors import GhlDesktopError
from ghl_desktop.core.ports import SecretStore
from ghl_desktop.logging_setup import LoggingSetup, configure_logging
from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions, neonize_transport_factory
from ghl_desktop.sandbox_mode import SandboxMode, point_sandbox_webhooks, running_sandbox_mode
from ghl_desktop.ui.main_window import MainWindow, OpenUrl, open_in_browser
from ghl_desktop.ui.passphrase import ask_with_dialog, unlock_secret_store
from ghl_desktop.ui.qloop import QEventLoop
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


def build_runtime(
    app: App, mode: SandboxMode | None, open_url: OpenUrl, options: RuntimeOptions | None = None
) -> BridgeRuntime:
    """The runtime the window drives: simulated WhatsApp in sandbox mode, neonize otherwise."""
    if mode is not None:
        from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory

        return BridgeRuntime(app, simulated_transport_factory(mode.url),
                             options or RuntimeOptions(webhook_port=0, oauth={"port": 0}), open_url=open_url)
    from ghl_desktop.adapters.whatsapp.neonize_executor import ensure_executor

    ensure_executor(asyncio.get_running_loop(), 50)
    return BridgeRuntime(app, neonize_transport_factory(app.settings.sessions_dir), options, open_url=open_url)


async def run_window(
    settings: Settings,
    secrets: SecretStore,
    *,
    sandbox: bool = False,
    sandbox_port: int = 0,
    logging_setup: LoggingSetup | None = None,
    open_url: OpenUrl = open_in_browser,
    runtime_options: RuntimeOptions | None = None,
    on_window: Callable[[MainWindow], None] | None = None,
) -> str | None:
    """Run the window until it is closed; returns None, or why the app could not start."""
    settings = with_stored_client_secret(settings, secrets)
    use_sandbox = sandbox or not settings.has_ghl_credentials
    async with contextlib.AsyncExitStack() as stack:
        mode: SandboxMode | None = None
        if use_sandbox:
            try:
                mode = await stack.enter_async_context(running_sandbox_mode(settings, sandbox_port, announce=log.info))
            except OSError as exc:
                return f"The built-in sandbox could not start: {exc}"
            settings = mode.settings
        try:
            app = App(settings, secrets=secrets, logging_setup=logging_setup, console_log=False, sandbox=use_sandbox)
        except GhlDesktopError as exc:
            log.error("cannot start: %s", exc)
            return str(exc)
        runtime = build_runtime(app, mode, open_url, runtime_options)
        window = MainWindow(app, runtime, sandbox_url=mode.url if mode else None, open_url=open_url)
        finished = asyncio.Event()
        window.shutdown_finished.connect(finished.set)
        if on_window is not None:
            on_window(window)

        async def start() -> None:
            await runtime.start()
            if mode is not None:
                await point_sandbox_webhooks(mode.url, runtime.webhooks.url)

        await app.start()
        window.show()
        window.start_bridge(start())
        await finished.wait()
    return None


def run_gui(sandbox: bool = False, sandbox_port: int = 0) -> int:
    settings = load_settings()
    logging_setup = configure_logging(settings)  # before anything imports neonize
    log.info("ghl-desktop %s starting (sandbox=%s, sandbox port=%s)", __version__, sandbox, sandbox_port or "auto")
    qt_app = create_qt_application()

    secrets = unlock_secret_store(settings, ask_with_dialog())
    if secrets is None:
        print("No vault passphrase was given, so ghl-desktop did not start.", file=sys.stderr)
        logging_setup.close()
        return 1

    loop = QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    windows: list[MainWindow] = []
    # Ctrl+C in the terminal, or SIGTERM (logout, a service manager), closes the window the normal way
    # (all work finished, database closed); the timer lets Python see the signal
    previous_term = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: [w.close() for w in windows])
    wake = QTimer()
    wake.start(250)
    wake.timeout.connect(lambda: None)
    try:
        with loop:
            problem = loop.run_until_complete(run_window(
                settings, secrets, sandbox=sandbox, sandbox_port=sandbox_port, logging_setup=logging_setup,
                on_window=windows.append,
            ))
    finally:
        wake.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous_term)
    if problem is not None:
        QMessageBox.critical(None, "ghl-desktop cannot start", problem)
    logging_setup.close()
    return 0 if problem is None else 1


__all__ = ["build_runtime", "create_qt_application", "run_gui", "run_window", "with_stored_client_secret"]
