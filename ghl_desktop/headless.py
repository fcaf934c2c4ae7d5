"""``ghl-desktop headless [--sandbox]``: the bridge with no window, logs on stdout.

With ``--sandbox`` the HighLevel sandbox and the simulated WhatsApp network run in-process, with their
own state in ``<data dir>/sandbox/`` and the same port on every start (so a restart — even after
SIGKILL — continues where it stopped). An empty data dir is set up through the real flows: the OAuth
loopback install (an HTTP client clicks the consent page instead of a person) and a simulated QR
scan. Every start prints ``sandbox: URL`` (sandbox mode) and then ``ready`` once messages flow.
SIGINT/SIGTERM finish the work in flight and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx

from ghl_desktop.app import App
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.core.errors import GhlDesktopError, VaultLocked
from ghl_desktop.core.models import SessionState, WhatsAppSession
from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions, neonize_transport_factory
from ghl_desktop.services.events import SessionChanged, SessionQr
from ghl_desktop.webhooks.endpoint import APP_PATH, PROVIDER_PATH

log = logging.getLogger("ghl.headless")

#: the simulated number the sandbox mode links (a phone of the simulated network)
SANDBOX_LINKED_PHONE = "+15550100001"
READY_TIMEOUT = 120.0


def run_headless(sandbox: bool = False, sandbox_port: int = 0) -> int:
    try:
        return asyncio.run(_main(sandbox=sandbox, sandbox_port=sandbox_port))
    except KeyboardInterrupt:
        return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _sandbox_port_file(home: Path) -> Path:
    return home / "sandbox" / "port"


@contextlib.asynccontextmanager
async def _sandbox(settings: Settings, port: int) -> AsyncIterator[tuple[Settings, str]]:
    from ghl_desktop.sandbox.server import running_sandbox

    state_dir = settings.home / "sandbox"
    state_dir.mkdir(parents=True, exist_ok=True)
    port_file = _sandbox_port_file(settings.home)
    if not port and port_file.exists():
        with contextlib.suppress(ValueError):
            port = int(port_file.read_text().strip())
    async with running_sandbox(host="127.0.0.1", port=port, state_dir=str(state_dir), locations=2) as sb:
        port_file.write_text(sb.url.rsplit(":", 1)[1])
        _say(f"sandbox: {sb.url}")
        yield replace(
            settings,
            api_base=sb.url,
            marketplace_base=sb.url,
            client_id=sb.client_id,
            client_secret=sb.client_secret,
            provider_id=sb.provider_id,
            webhook_ed25519_public_key=sb.public_key_pem,
        ), sb.url


async def _main(*, sandbox: bool, sandbox_port: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    settings = load_settings()
    async with contextlib.AsyncExitStack() as stack:
        sandbox_url: str | None = None
        if sandbox:
            settings, sandbox_url = await stack.enter_async_context(_sandbox(settings, sandbox_port))
        elif not settings.has_ghl_credentials:
            print("headless: no HighLevel credentials (GHL_CLIENT_ID / GHL_CLIENT_SECRET); "
                  "use --sandbox to try the app with the built-in sandbox", file=sys.stderr)
            return 2
        try:
            app = App(settings, console_log=sys.stdout, sandbox=sandbox)
        except VaultLocked as exc:
            print(f"headless: {exc}", file=sys.stderr)
            return 2
        stack.push_async_callback(app.aclose)
        if sandbox_url is not None:
            from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
            from ghl_desktop.sandbox.consent import ConsentClicker

            runtime = BridgeRuntime(app, simulated_transport_factory(sandbox_url),
                                    RuntimeOptions(webhook_port=0, oauth={"port": 0}), open_url=ConsentClicker())
        else:
            from ghl_desktop.adapters.whatsapp.neonize_executor import ensure_executor

            ensure_executor(loop, 50)
            def show_url(url: str) -> bool:
                _say(f"open this address to connect HighLevel: {url}")
                return True

            runtime = BridgeRuntime(app, neonize_transport_factory(settings.sessions_dir), open_url=show_url)
        stack.push_async_callback(runtime.stop)
        await runtime.start()
        try:
            if sandbox_url is not None:
                await point_sandbox_webhooks(sandbox_url, runtime.webhooks.url)
            await ensure_linked(runtime, sandbox_url, stop)
        except (GhlDesktopError, TimeoutError) as exc:
            print(f"headless: could not get ready: {exc}", file=sys.stderr)
            return 1
        if stop.is_set():
            return 0
        _say("ready")
        await stop.wait()
        log.info("stopping: finishing work in flight")
    return 0


async def point_sandbox_webhooks(sandbox_url: str, webhook_base: str) -> None:
    """The sandbox delivers agents' replies (and INSTALL/UNINSTALL) to this run's direct endpoint."""
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{sandbox_url}/_sandbox/config", json={
            "webhook_url": webhook_base + PROVIDER_PATH, "app_webhook_url": webhook_base + APP_PATH})
        answer.raise_for_status()


async def ensure_linked(runtime: BridgeRuntime, sandbox_url: str | None, stop: asyncio.Event) -> None:
    """A connected location and a connected WhatsApp number, set up through the real flows if missing."""
    db = runtime.app.db
    if not db.locations.list():
        if sandbox_url is None:
            _say("connect a HighLevel location: waiting for the browser consent")
        await runtime.oauth.connect()
    location = db.locations.list()[0]
    sessions = [s for s in runtime.sessions.list_sessions(location.id) if s.state is not SessionState.LOGGED_OUT]
    connected = asyncio.Event()

    def on_change(event: SessionChanged) -> None:
        if event.session.state is SessionState.CONNECTED:
            connected.set()

    unsubscribe = runtime.app.bus.subscribe(SessionChanged, on_change)
    try:
        if any(runtime.sessions.transport_for(s.id) and s.state is SessionState.CONNECTED
               for s in runtime.sessions.list_sessions(location.id)):
            return
        if not sessions:
            await _link_new_number(runtime, location.id, sandbox_url)
        waiter = asyncio.ensure_future(connected.wait())
        stopper = asyncio.ensure_future(stop.wait())
        done, pending = await asyncio.wait({waiter, stopper}, timeout=READY_TIMEOUT,
                                          return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not done:
            states = ", ".join(f"{s.id[:8]} {s.state.value}" for s in runtime.sessions.list_sessions(location.id))
            raise TimeoutError(f"no WhatsApp number connected within {READY_TIMEOUT:.0f} s ({states})")
    finally:
        unsubscribe()


async def _link_new_number(runtime: BridgeRuntime, location_id: str, sandbox_url: str | None) -> WhatsAppSession:
    if sandbox_url is None:
        session = await runtime.sessions.create_session(location_id)
        _say(f"scan the QR code for session {session.id} in the window, or pair by code")
        return session
    qr: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_qr(event: SessionQr) -> None:
        if not qr.done():
            qr.set_result(event.code)

    unsubscribe = runtime.app.bus.subscribe(SessionQr, on_qr)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            phone = await http.post(f"{sandbox_url}/_sandbox/phones",
                                    json={"phone": SANDBOX_LINKED_PHONE, "name": "Agency phone"})
            phone.raise_for_status()
            session = await runtime.sessions.create_session(location_id)
            code = await asyncio.wait_for(qr, 30)
            scan = await http.post(f"{sandbox_url}/_sandbox/whatsapp/scan",
                                   json={"qr": code, "phone": SANDBOX_LINKED_PHONE})
            scan.raise_for_status()
        return session
    finally:
        unsubscribe()
