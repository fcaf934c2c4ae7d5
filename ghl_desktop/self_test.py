"""``ghl-desktop --self-test``: the real app, offscreen, in a throw-away data dir — one line per step.

Meant for the double-click bundle (CI runs it from outside the source tree with a clean
environment) and for a user who wants to know whether this machine can run the app. Every step uses
the same code the window and ``headless --sandbox`` use; nothing is mocked:

    database    the SQLite database in the temporary data dir is created and migrated to the head
    engine      neonize's shared library loads and a WhatsApp client is constructed (no network);
                the process runs with NEONIZE_BOT_TAG=off from its start (cli.py re-execs for it)
    qr          a QR code is rendered the way the link dialog renders it, into a Qt pixmap
    notifications  the desktop-notification library loads and picks this OS's backend (nothing is
                shown; a bundle missing its data files would silently fall back to the tray balloon)
    webhooks    the direct-mode webhook endpoint listens on 127.0.0.1, answers /healthz, and stops
    sandbox     the in-process HighLevel sandbox + simulated WhatsApp network start; a location is
                connected through the OAuth loopback flow, a number is linked by a simulated QR scan,
                and one message goes each way: phone → HighLevel, agent reply → phone
    window      the main window opens (sandbox mode, the same data dir) and closes cleanly

Prints ``self-test: <step> ok (...)`` per step and ``self-test: passed``, exit 0; or
``self-test: <step> FAILED: <why>`` (plus the end of the log on stderr) and exit 1. The data dir is
deleted afterwards (kept, and its path printed, on failure). Environment variables that would point
the app somewhere else (``GHL_*``) are ignored: the self-test never touches the user's data, keyring
or HighLevel account.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets as pysecrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

#: one timeout per step (seconds): a step that hangs fails with its name instead of stalling CI
STEP_TIMEOUT = 120.0
#: the customer phone of the simulated network used for the round trip
SELF_TEST_CUSTOMER = "+15550177001"
INBOUND_TEXT = "self-test: hello from the phone"
OUTBOUND_TEXT = "self-test: hello from HighLevel"

STEPS = ("database", "engine", "qr", "notifications", "webhooks", "sandbox", "window")


class StepFailed(Exception):
    """A step's check did not hold (the message says what was expected)."""


def _say(line: str) -> None:
    print(line, flush=True)


def isolate_environment(home: Path) -> None:
    """Point the app at ``home`` only: drop every GHL_* variable (credentials, database URL, relay,
    ports), force Qt offscreen, keep secrets in a vault with a random passphrase."""
    for name in list(os.environ):
        if name.startswith("GHL_"):
            del os.environ[name]
    os.environ["GHL_DESKTOP_HOME"] = str(home)
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    os.environ.setdefault("QT_LOGGING_RULES", "qt.qpa.*=false")


async def _poll(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    """``check()`` until it returns something truthy; StepFailed naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise StepFailed(f"{what} within {within:.0f} s")
        await asyncio.sleep(0.1)


class SelfTest:
    def __init__(self, home: Path) -> None:
        from ghl_desktop.adapters.secrets import VaultSecretStore, vault_path
        from ghl_desktop.config import load_settings
        from ghl_desktop.logging_setup import configure_logging

        self.home = home
        self.settings = load_settings()
        # before anything imports neonize (it reconfigures logging on import); console stays clean
        self.logging = configure_logging(self.settings, console=False)
        # the vault, never the user's keyring: sandbox tokens must not land in a real keychain
        self.secrets = VaultSecretStore(vault_path(self.settings), pysecrets.token_urlsafe(16))

    # --- steps -------------------------------------------------------------------------------

    async def database(self) -> str:
        from ghl_desktop.adapters.storage.database import open_database
        from ghl_desktop.adapters.storage.migrate import head_revision

        db = open_database(self.settings.database_url, migrate=False)
        try:
            revision = db.migrate()
            if revision != head_revision():
                raise StepFailed(f"migrated to {revision}, the head is {head_revision()}")
            status = db.status()
            if not status.up_to_date:
                raise StepFailed(f"database not up to date after migrating: {status.summary()}")
        finally:
            db.close()
        return f"schema {revision}"

    async def engine(self) -> str:
        from ghl_desktop.adapters.whatsapp.neonize import NeonizeTransport, bot_tag_disabled
        from ghl_desktop.doctor import neonize_library_path

        if not bot_tag_disabled():
            raise StepFailed("NEONIZE_BOT_TAG=off is not in the start-up environment (the re-exec did not happen)")
        library, version = neonize_library_path()
        if library is None or not library.exists():
            raise StepFailed(f"neonize's library is missing ({library})")

        async def ignore(_event: Any) -> None:
            return None

        transport = NeonizeTransport("self-test", self.settings.sessions_dir / "self-test.db", ignore,
                                     journal=False)
        await transport.attach()  # loads the Go library, constructs the client; no connect
        try:
            if transport.client is None:
                raise StepFailed("no engine client after attach")
        finally:
            await transport.stop()
        # in the bundle neonize's download.py is inside the archive, not a file doctor can read
        version = version or str(getattr(sys.modules.get("neonize.download"), "__GONEONIZE_VERSION__", ""))
        return f"{library.name} {version or ''}".rstrip() + ", client constructed, no network"

    async def qr(self) -> str:
        from PySide6.QtGui import QColor, QPixmap

        from ghl_desktop.ui.widgets import qr_png

        pixmap = QPixmap()
        if not pixmap.loadFromData(qr_png("2@self-test,qr,code"), "PNG") or pixmap.isNull():
            raise StepFailed("the QR code PNG did not load into a Qt pixmap (image plugins missing?)")
        image = pixmap.toImage()
        border = 2 * 4  # qr_png's default border of 2 modules at 4 px
        if image.pixelColor(border + 1, border + 1) != QColor("black") or image.pixelColor(1, 1) != QColor("white"):
            raise StepFailed("the rendered QR code has no finder pattern where it should")
        return f"{image.width()}x{image.height()} px"

    async def notifications(self) -> str:
        try:
            import desktop_notifier
            from desktop_notifier.main import get_backend_class
        except ImportError as exc:
            raise StepFailed(f"desktop-notifier does not load ({exc}); notices would use the tray balloon") from exc
        backend = get_backend_class()  # chooses by platform; connects to nothing
        return f"{desktop_notifier.__name__} loads, backend {backend.__name__}"

    async def webhooks(self) -> str:
        import httpx

        from ghl_desktop.adapters.storage.database import open_database
        from ghl_desktop.webhooks.endpoint import HEALTH_PATH, WebhookServer
        from ghl_desktop.webhooks.intake import WebhookIntake

        db = open_database(self.settings.database_url, migrate=True)
        try:
            server = WebhookServer(self.settings, WebhookIntake(db.aio.jobs), port=0)
            url = await server.start()
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    answer = await http.get(url + HEALTH_PATH)
                if answer.status_code != 200:
                    raise StepFailed(f"{HEALTH_PATH} answered {answer.status_code}")
            finally:
                await server.stop()
            async with httpx.AsyncClient(timeout=5) as http:
                with contextlib.suppress(httpx.ConnectError):
                    await http.get(url + HEALTH_PATH)
                    raise StepFailed(f"{url} still answers after stop")
        finally:
            db.close()
        return f"{url} answered {HEALTH_PATH}, stopped"

    async def sandbox(self) -> str:
        import httpx

        from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
        from ghl_desktop.app import App
        from ghl_desktop.headless import SANDBOX_LINKED_PHONE, ensure_linked, hold_sandbox_webhooks
        from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions
        from ghl_desktop.sandbox.consent import ConsentClicker
        from ghl_desktop.sandbox_mode import point_sandbox_webhooks, running_sandbox_mode

        async with contextlib.AsyncExitStack() as stack:
            mode = await stack.enter_async_context(running_sandbox_mode(self.settings))
            app = App(mode.settings, secrets=self.secrets, logging_setup=self.logging, console_log=False,
                      sandbox=True)
            stack.push_async_callback(app.aclose)
            runtime = BridgeRuntime(app, simulated_transport_factory(mode.url),
                                    RuntimeOptions(webhook_port=0, oauth={"port": 0}), open_url=ConsentClicker())
            stack.push_async_callback(runtime.stop)
            stack.push_async_callback(hold_sandbox_webhooks, mode.url)
            await runtime.start()
            await point_sandbox_webhooks(mode.url, runtime.webhooks.url)
            await ensure_linked(runtime, mode.url, asyncio.Event())
            location = app.db.locations.list()[0]

            http = await stack.enter_async_context(httpx.AsyncClient(base_url=mode.url, timeout=10))
            (await http.post("/_sandbox/phones", json={"phone": SELF_TEST_CUSTOMER, "name": "Self-test"}))\
                .raise_for_status()
            sent = await http.post(f"/_sandbox/phones/{SELF_TEST_CUSTOMER}/send",
                                   json={"to": SANDBOX_LINKED_PHONE, "text": INBOUND_TEXT})
            if sent.status_code != 201:
                raise StepFailed(f"the simulated phone could not send: {sent.status_code} {sent.text[:200]}")

            async def inbound() -> dict[str, Any] | None:
                state = (await http.get("/_sandbox/state")).json()
                return next((m for m in state["messages"]
                             if m["direction"] == "inbound" and m["body"] == INBOUND_TEXT), None)

            message = await _poll(inbound, 60, "the phone's message did not reach HighLevel")
            reply = await http.post(f"/_sandbox/locations/{location.id}/reply",
                                    json={"contactId": message["contactId"], "message": OUTBOUND_TEXT})
            if reply.status_code != 201:
                raise StepFailed(f"the sandbox refused the agent's reply: {reply.status_code} {reply.text[:200]}")

            async def outbound() -> bool:
                inbox = (await http.get(f"/_sandbox/phones/{SELF_TEST_CUSTOMER}/inbox")).json()
                return any(m.get("text") == OUTBOUND_TEXT for m in inbox)

            await _poll(outbound, 60, "the agent's reply did not reach the phone")
            failures = (await http.get("/_sandbox/state")).json().get("validation_failures") or []
            if failures:
                raise StepFailed(f"the sandbox saw {len(failures)} request(s) that break HighLevel's spec")
        return f"{mode.url}: phone → HighLevel → phone"

    async def window(self) -> str:
        from PySide6.QtWidgets import QWidget

        from ghl_desktop.ui.main import run_window

        windows: list[QWidget] = []
        shown = asyncio.Event()

        def on_window(window: QWidget) -> None:
            windows.append(window)

            async def close_when_shown() -> None:
                # run_window shows the window once it is built; a Qt property, no signal for it
                while not window.isVisible():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                shown.set()
                await asyncio.sleep(1.0)  # let the bridge start under the open window
                window.close()

            asyncio.get_running_loop().create_task(close_when_shown())

        problem = await run_window(self.settings, self.secrets, sandbox=True, logging_setup=self.logging,
                                   open_url=lambda _url: True, on_window=on_window)
        if problem is not None:
            raise StepFailed(f"the window could not start: {problem}")
        if not windows or not shown.is_set():
            raise StepFailed("the main window was never shown")
        if windows[0].isVisible():
            raise StepFailed("the main window is still open")
        return f"{type(windows[0]).__name__} opened and closed"

    # --- running -----------------------------------------------------------------------------

    async def run(self) -> str | None:
        """Run every step; None, or the name of the step that failed."""
        for name in STEPS:
            step: Callable[[], Awaitable[str]] = getattr(self, name)
            started = time.monotonic()
            try:
                detail = await asyncio.wait_for(step(), STEP_TIMEOUT)
            except StepFailed as exc:
                _say(f"self-test: {name} FAILED: {exc}")
                return name
            except TimeoutError:
                _say(f"self-test: {name} FAILED: did not finish within {STEP_TIMEOUT:.0f} s")
                return name
            except Exception as exc:
                _say(f"self-test: {name} FAILED: {type(exc).__name__}: {exc}")
                import logging

                logging.getLogger("ghl.self_test").exception("step %s failed", name)
                return name
            _say(f"self-test: {name} ok ({detail}; {time.monotonic() - started:.1f} s)")
        return None


def _log_tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])
    return ""


def run_self_test() -> int:
    home = Path(tempfile.mkdtemp(prefix="ghl-self-test-"))
    isolate_environment(home)
    from ghl_desktop import __version__

    _say(f"self-test: ghl-desktop {__version__} ({'bundle' if getattr(sys, 'frozen', False) else 'source'}), "
         f"data dir {home}")
    failed: str | None = "start"
    log_file: Path | None = None
    try:
        from ghl_desktop.ui.main import create_qt_application
        from ghl_desktop.ui.qloop import QEventLoop

        test = SelfTest(home)
        log_file = test.logging.log_file
        qt_app = create_qt_application()
        loop = QEventLoop(qt_app)
        asyncio.set_event_loop(loop)
        try:
            with loop:
                failed = loop.run_until_complete(test.run())
        finally:
            test.logging.close()
    except Exception as exc:
        _say(f"self-test: {failed} FAILED: {type(exc).__name__}: {exc}")
    if failed is not None:
        if log_file is not None:
            tail = _log_tail(log_file)
            if tail:
                print(f"--- end of {log_file} ---\n{tail}", file=sys.stderr, flush=True)
        _say(f"self-test: failed at step '{failed}' (data dir kept: {home})")
        return 1
    shutil.rmtree(home, ignore_errors=True)
    _say("self-test: passed")
    return 0


__all__ = ["STEPS", "SelfTest", "StepFailed", "isolate_environment", "run_self_test"]
