"""Starting the window: logging first, then QApplication, the secret store (asking for the vault
passphrase when there is no keyring), the qasync loop, then — on that loop — the sandbox when
needed, the :class:`App`, the :class:`BridgeRuntime` and the main window.

Sandbox mode: with ``--sandbox``, or when no HighLevel credentials exist (no client ID, or no client
secret in the environment or the secret store), the HighLevel sandbox and the simulated WhatsApp
network run in-process exactly as ``ghl-desktop headless --sandbox`` runs them (state in
``<data dir>/sandbox/``, the same port on every start), and the window says so with the sandbox's
address. So ``make run`` on a fresh machine lands in a window that works end to end.

Before anything else, :class:`~ghl_desktop.ui.single_instance.SingleInstance` checks the data dir:
a second launch raises the first window and exits 0 — before any secret is unlocked (no passphrase
prompt), before any server starts, and before the heavy imports (this module imports the window,
the runtime and the database layer only inside its functions, so the hand-off takes about a
second). Sandbox mode uses its own secret store under ``<data dir>/sandbox/`` (no keyring, no
passphrase); real mode unlocks the keyring or the vault.

The window gets a :class:`~ghl_desktop.ui.tray.Tray` following the health, a
:class:`~ghl_desktop.ui.notify.NoticeCenter` on the platform's notification service, and the
:class:`~ghl_desktop.ui.lifecycle.Lifecycle` (close to tray, Quit that asks, geometry remembered).
The process ends when the window has shut down (Quit, or closing it where there is no tray), which
stops the runtime, closes the app and then the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ghl_desktop import __version__

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

    from ghl_desktop.app import App
    from ghl_desktop.config import Settings
    from ghl_desktop.core.ports import SecretStore
    from ghl_desktop.logging_setup import LoggingSetup
    from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions
    from ghl_desktop.sandbox_mode import SandboxMode
    from ghl_desktop.ui.lifecycle import Lifecycle
    from ghl_desktop.ui.main_window import MainWindow, OpenUrl
    from ghl_desktop.ui.passphrase import AskPassphrase
    from ghl_desktop.ui.single_instance import SingleInstance
    from ghl_desktop.ui.tray import Tray

log = logging.getLogger("ghl.ui")


def __getattr__(name: str) -> Any:
    if name == "with_stored_client_secret":  # kept importable from here (heavy: imported on use)
        from ghl_desktop.app import with_stored_client_secret

        return with_stored_client_secret
    raise AttributeError(name)


def create_qt_application() -> QApplication:
    from PySide6.QtWidgets import QApplication

    from ghl_desktop.ui.resources import app_icon

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
    from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions, cluster_engine_stores, neonize_transport_factory

    if mode is not None:
        from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory

        return BridgeRuntime(app, simulated_transport_factory(mode.url),
                             options or RuntimeOptions(webhook_port=0, oauth={"port": 0}), open_url=open_url)
    from ghl_desktop.adapters.whatsapp.neonize import ensure_executor

    ensure_executor(asyncio.get_running_loop(), 50)
    # a cluster's window (PostgreSQL) keeps each number's engine store there too, so any worker can take it over
    engines = neonize_transport_factory(app.settings.sessions_dir, cluster_engine_stores(app))
    return BridgeRuntime(app, engines, options, open_url=open_url)


async def run_window(
    settings: Settings,
    secrets: SecretStore | None,
    *,
    sandbox: bool = False,
    sandbox_port: int = 0,
    logging_setup: LoggingSetup | None = None,
    open_url: OpenUrl | None = None,
    runtime_options: RuntimeOptions | None = None,
    on_window: Callable[[MainWindow], None] | None = None,
    instance: SingleInstance | None = None,
    tray: Tray | None = None,
    on_lifecycle: Callable[[Lifecycle], None] | None = None,
) -> str | None:
    """Run the window until it has shut down; returns None, or why the app could not start.

    ``secrets`` None: the database is a cluster's PostgreSQL and the App opens its sealed store
    (adapters/storage/secrets_db.py); the app's credentials then come from the environment."""
    from ghl_desktop.app import App, with_stored_client_secret
    from ghl_desktop.core.errors import GhlDesktopError
    from ghl_desktop.core.loop_watch import watch_from_env
    from ghl_desktop.sandbox_mode import point_sandbox_webhooks, running_sandbox_mode
    from ghl_desktop.services.setup_checks import SetupService
    from ghl_desktop.ui.first_run import install_first_run
    from ghl_desktop.ui.lifecycle import Lifecycle, UiState, apply_start_at_login
    from ghl_desktop.ui.main_window import MainWindow, open_in_browser
    from ghl_desktop.ui.notifications import DesktopNotifications
    from ghl_desktop.ui.notify import NoticeCenter
    from ghl_desktop.ui.resources import resources_dir
    from ghl_desktop.ui.tray import Tray

    open_url = open_url or open_in_browser
    if secrets is not None:
        settings = await asyncio.to_thread(with_stored_client_secret, settings, secrets)  # keyring: D-Bus, off the loop
    use_sandbox = sandbox or not settings.has_ghl_credentials
    if secrets is None and use_sandbox:
        return ("This window is a worker of the PostgreSQL database in GHL_DESKTOP_DB_URL: it needs the "
                "HighLevel app's GHL_CLIENT_ID and GHL_CLIENT_SECRET in the environment (a cluster keeps no "
                "desktop keyring), or unset GHL_DESKTOP_DB_URL to use this computer's own database.")
    async with contextlib.AsyncExitStack() as stack:
        watch = watch_from_env()  # GHL_DESKTOP_LOOP_WATCH=<ms>: log every stall of the loop (docs/event-loop.md)
        if watch is not None:
            stack.callback(watch.stop)
        mode: SandboxMode | None = None
        if use_sandbox:
            try:
                mode = await stack.enter_async_context(running_sandbox_mode(settings, sandbox_port, announce=log.info))
            except OSError as exc:
                return f"The built-in sandbox could not start: {exc}"
            settings = mode.settings
        try:
            app = await App.open(settings, secrets=secrets, logging_setup=logging_setup, console_log=False,
                                 sandbox=use_sandbox)
        except GhlDesktopError as exc:
            log.error("cannot start: %s", exc)
            return str(exc)
        runtime = build_runtime(app, mode, open_url, runtime_options)
        shown_tray = tray if tray is not None else Tray()
        window = MainWindow(app, runtime, tray=shown_tray, sandbox_url=mode.url if mode else None, open_url=open_url)
        # real mode: the first-run checklist above the panels (and the wizard on the very first start)
        setup = SetupService(settings, app.secrets)
        if not use_sandbox:
            await setup.loaded()  # the secrets its steps show, read off the loop (keyring: D-Bus)
        install_first_run(window, setup, sandbox=use_sandbox, parent=window)
        notifications = DesktopNotifications("ghl-desktop", resources_dir() / "ghl-desktop.png")
        notices = NoticeCenter(
            notifications, balloon=lambda title, text, warning: shown_tray.notify(title, text, warning=warning),
            reveal=lambda sid, lid: window.reveal(session_id=sid, location_id=lid), parent=window)
        lifecycle = Lifecycle(window, shown_tray, notices, UiState(settings.home), instance=instance, parent=window)
        lifecycle.restore()
        finished = asyncio.Event()
        window.shutdown_finished.connect(finished.set)
        if on_window is not None:
            on_window(window)
        if on_lifecycle is not None:
            on_lifecycle(lifecycle)
        if settings.start_at_login:
            try:
                log.info("start at login: %s", apply_start_at_login(True).where)
            except OSError as exc:
                log.warning("could not set up start at login: %s", exc)

        async def start() -> None:
            await runtime.start()
            if mode is not None:
                await point_sandbox_webhooks(mode.url, runtime.webhooks.url)

        window.show()
        from PySide6.QtCore import QTimer  # bench/startup.py times process start → this line

        QTimer.singleShot(0, lambda: log.info("window shown"))  # logged once the loop ran after show()
        window.start_bridge(start())
        await finished.wait()
        await notices.drain()
        await notifications.close()
    return None


def open_secrets(
    settings: Settings, sandbox: bool, ask: AskPassphrase | None = None
) -> tuple[SecretStore | None, bool]:
    """The secret store to run with and whether this is sandbox mode. Sandbox mode (``--sandbox`` or no
    client ID) never touches the real keyring/vault, so it never asks for a passphrase."""
    from ghl_desktop.ui.lifecycle import sandbox_secret_store, starts_in_sandbox

    decided = starts_in_sandbox(settings, sandbox)
    if decided is True:
        return sandbox_secret_store(settings), True
    from ghl_desktop.app import with_stored_client_secret
    from ghl_desktop.ui.passphrase import ask_with_dialog, unlock_secret_store

    secrets = unlock_secret_store(settings, ask or ask_with_dialog())
    if secrets is None:
        return None, False
    if decided is None and not with_stored_client_secret(settings, secrets).has_ghl_credentials:
        return sandbox_secret_store(settings), True  # a client ID but no secret anywhere: sandbox mode
    return secrets, False


def cluster_window(settings: Settings, sandbox: bool) -> bool:
    """Whether the window runs as one worker of a cluster (a PostgreSQL database, real mode): its tokens
    are sealed in the database, so no keyring or vault is opened and no passphrase asked."""
    from ghl_desktop.adapters.storage.secrets_db import is_cluster_url
    from ghl_desktop.ui.lifecycle import starts_in_sandbox

    return starts_in_sandbox(settings, sandbox) is not True and is_cluster_url(settings.database_url)


def run_gui(sandbox: bool = False, sandbox_port: int = 0, db_url: str | None = None) -> int:
    from dataclasses import replace

    from ghl_desktop.config import load_settings
    from ghl_desktop.logging_setup import configure_logging
    from ghl_desktop.ui.single_instance import SingleInstance

    settings = load_settings()
    if db_url:  # --db-url: e.g. a cluster's PostgreSQL, this window one more worker
        settings = replace(settings, db_url=db_url)
    logging_setup = configure_logging(settings)  # before anything imports neonize
    qt_app = create_qt_application()

    instance = SingleInstance(settings.home)
    if not instance.acquire():
        answered = SingleInstance.hand_off(settings.home)
        log.info("ghl-desktop already runs on %s; %s", settings.home,
                 "its window was brought to the front" if answered else "it did not answer")
        print(f"ghl-desktop is already running for {settings.home}"
              + ("; its window was brought to the front." if answered else "."))
        logging_setup.close()
        return 0

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QMessageBox

    from ghl_desktop.ui.qloop import QEventLoop

    secrets: SecretStore | None
    if cluster_window(settings, sandbox):
        secrets, use_sandbox = None, False  # the App opens the database's sealed store
    else:
        secrets, use_sandbox = open_secrets(settings, sandbox)
        if secrets is None:
            print("No vault passphrase was given, so ghl-desktop did not start.", file=sys.stderr)
            instance.release()
            logging_setup.close()
            return 1
    log.info("ghl-desktop %s starting (sandbox=%s, sandbox port=%s)", __version__, use_sandbox,
             sandbox_port or "auto")

    loop = QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    windows: list[MainWindow] = []
    # Ctrl+C in the terminal, or SIGTERM (logout, a service manager), shuts the window down the normal
    # way (all work finished, database closed) — quit(), not close(): close may only hide it to the tray.
    # The timer lets Python see the signal.
    previous_term = signal.getsignal(signal.SIGTERM)

    def shut_down(*_args: object) -> None:
        for window in windows:
            window.quit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, shut_down)
    wake = QTimer()
    wake.start(250)
    wake.timeout.connect(lambda: None)
    try:
        with loop:
            problem = loop.run_until_complete(run_window(
                settings, secrets, sandbox=use_sandbox, sandbox_port=sandbox_port, logging_setup=logging_setup,
                on_window=windows.append, instance=instance,
            ))
    finally:
        wake.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous_term)
        instance.release()
    if problem is not None:
        QMessageBox.critical(None, "ghl-desktop cannot start", problem)
    logging_setup.close()
    return 0 if problem is None else 1


__all__ = ["build_runtime", "cluster_window", "create_qt_application", "open_secrets", "run_gui", "run_window"]
