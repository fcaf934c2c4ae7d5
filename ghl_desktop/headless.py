"""``ghl-desktop headless [--sandbox | --sandbox-url URL] [--db-url URL]``: the bridge with no window, logs on stdout.

With ``--sandbox-url`` the process works against an already running ``ghl-desktop sandbox`` (HighLevel
and the simulated WhatsApp network) and does nothing automatic: locations and numbers are set up with
``ghl-desktop locations connect`` / ``numbers link``; it prints ``webhooks: URL`` and ``ready``.

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

import httpx

from ghl_desktop.adapters.ghl.tls import ssl_context_async
from ghl_desktop.adapters.secrets import open_secret_store
from ghl_desktop.adapters.storage.secrets_db import is_cluster_url
from ghl_desktop.app import App, with_stored_client_secret
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.core.errors import ConfigError, GhlDesktopError, SecretStoreError
from ghl_desktop.core.loop_watch import watch_from_env
from ghl_desktop.core.models import SessionState, WhatsAppSession
from ghl_desktop.core.ports import SecretStore
from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions, neonize_transport_factory, runtime_options_from_env
from ghl_desktop.sandbox_mode import (
    external_sandbox_settings,
    point_sandbox_webhooks,
    running_sandbox_mode,
    sandbox_secret_store,
)
from ghl_desktop.services.events import SessionChanged, SessionQr

log = logging.getLogger("ghl.headless")

#: the simulated number the sandbox mode links (a phone of the simulated network)
SANDBOX_LINKED_PHONE = "+15550100001"
READY_TIMEOUT = 120.0


def run_headless(sandbox: bool = False, sandbox_port: int = 0, *, sandbox_url: str | None = None,
                 db_url: str | None = None) -> int:
    try:
        return asyncio.run(_main(sandbox=sandbox, sandbox_port=sandbox_port, sandbox_url=sandbox_url, db_url=db_url))
    except KeyboardInterrupt:
        return 0


def _say(line: str) -> None:
    print(line, flush=True)


@contextlib.asynccontextmanager
async def _sandbox(settings: Settings, port: int) -> AsyncIterator[tuple[Settings, str]]:
    async with running_sandbox_mode(settings, port, announce=_say) as mode:
        yield mode.settings, mode.url


async def _main(*, sandbox: bool, sandbox_port: int, sandbox_url: str | None = None,
                db_url: str | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    settings = load_settings()
    if db_url:  # --db-url: a cluster's PostgreSQL (or another SQLite file) instead of GHL_DESKTOP_DB_URL
        settings = replace(settings, db_url=db_url)
    external = sandbox_url  # --sandbox-url: an already running `ghl-desktop sandbox`
    if external:
        try:
            settings = await external_sandbox_settings(settings, external)
        except ConfigError as exc:
            print(f"headless: {exc}", file=sys.stderr)
            return 2
    try:
        options = runtime_options_from_env(RuntimeOptions())  # GHL_DESKTOP_SEND_MIN_GAP etc. (runtime.ENV_KNOBS)
    except ValueError as exc:
        print(f"headless: {exc}", file=sys.stderr)
        return 2
    async with contextlib.AsyncExitStack() as stack:
        watch = watch_from_env()  # GHL_DESKTOP_LOOP_WATCH=<ms>: log every stall of the loop (docs/event-loop.md)
        if watch is not None:
            stack.callback(watch.stop)
        sandbox_url = external.rstrip("/") if external else None
        # a worker of a cluster (PostgreSQL) keeps its tokens sealed in the database: the App opens that
        # store (adapters/storage/secrets_db.py), no keyring or vault is needed
        cluster = not sandbox and is_cluster_url(settings.database_url)
        secrets: SecretStore | None = None
        if external and not cluster:  # the tokens `locations connect --sandbox-url` kept (never the real store)
            secrets = await asyncio.to_thread(sandbox_secret_store, settings)
        elif not cluster:
            try:
                # opened first: a client secret saved in the window's Settings lives there
                secrets = await asyncio.to_thread(open_secret_store, settings)  # keyring: D-Bus, vault: a file
            except SecretStoreError as exc:
                print(f"headless: {exc}", file=sys.stderr)
                return 2
        if sandbox:
            settings, sandbox_url = await stack.enter_async_context(_sandbox(settings, sandbox_port))
        elif external:
            pass  # the sandbox's app credentials are in ``settings`` already
        else:
            if secrets is not None:
                settings = await asyncio.to_thread(with_stored_client_secret, settings, secrets)
            if not settings.has_ghl_credentials:
                print("headless: no HighLevel credentials (GHL_CLIENT_ID / GHL_CLIENT_SECRET); "
                      "use --sandbox to try the app with the built-in sandbox", file=sys.stderr)
                return 2
        try:
            app = await App.open(settings, secrets=secrets, console_log=sys.stdout, sandbox=sandbox or bool(external))
        except ConfigError as exc:  # a cluster worker without GHL_DESKTOP_SECRET_KEY
            print(f"headless: {exc}", file=sys.stderr)
            return 2
        stack.push_async_callback(app.aclose)
        if sandbox_url is not None:
            from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
            from ghl_desktop.runtime import cluster_device_stores
            from ghl_desktop.sandbox.consent import ConsentClicker

            # several workers of one sandbox may share a machine: each endpoint on a free port
            factory = simulated_transport_factory(sandbox_url, device_stores=cluster_device_stores(app))
            runtime = BridgeRuntime(app, factory,
                                    replace(options, webhook_port=0, oauth={"port": 0}), open_url=ConsentClicker())
        else:
            from ghl_desktop.adapters.whatsapp.neonize import ensure_executor

            ensure_executor(loop, 50)
            def show_url(url: str) -> bool:
                _say(f"open this address to connect HighLevel: {url}")
                return True

            from ghl_desktop.runtime import cluster_engine_stores

            engines = neonize_transport_factory(settings.sessions_dir, cluster_engine_stores(app))  # PG: stores there
            runtime = BridgeRuntime(app, engines, options, open_url=show_url)
        stack.push_async_callback(runtime.stop)
        if sandbox and sandbox_url is not None:
            # runs before runtime.stop (LIFO): replies made while the endpoint closes wait for the next run
            stack.push_async_callback(hold_sandbox_webhooks, sandbox_url)
        try:
            await runtime.start()
        except GhlDesktopError as exc:  # e.g. the webhook port is taken: say so, no traceback
            print(f"headless: {exc}", file=sys.stderr)
            return 2
        if external:
            # a worker of a running sandbox: no automatic connect-and-link (`locations connect`, `numbers
            # link`), and the sandbox's webhook address is the operator's (one worker, a relay, a balancer)
            _say(f"webhooks: {runtime.webhooks.url}")
            _say("ready")
            await stop.wait()
            log.info("stopping: finishing work in flight")
            return 0
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


async def hold_sandbox_webhooks(sandbox_url: str) -> None:
    """Shutdown in sandbox mode: the in-process sandbox outlives our webhook endpoint by a moment; a
    reply an agent makes then is kept pending in the sandbox's state and delivered on the next start
    (instead of hitting the closed port, which HighLevel treats as a final failure)."""
    try:
        async with httpx.AsyncClient(timeout=5, verify=await ssl_context_async()) as http:
            (await http.post(f"{sandbox_url}/_sandbox/config", json={"hold_webhooks": True})).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("could not ask the sandbox to hold webhooks during shutdown: %s", exc)


async def ensure_linked(runtime: BridgeRuntime, sandbox_url: str | None, stop: asyncio.Event) -> None:
    """A connected location and a connected WhatsApp number, set up through the real flows if missing."""
    db = runtime.app.db.aio  # storage calls run on the storage executor, off the loop
    if not await db.locations.list():
        if sandbox_url is None:
            _say("connect a HighLevel location: waiting for the browser consent")
        await runtime.oauth.connect()
    location = (await db.locations.list())[0]
    sessions = [s for s in await db.sessions.list(location.id) if s.state is not SessionState.LOGGED_OUT]
    connected = asyncio.Event()

    def on_change(event: SessionChanged) -> None:
        if event.session.state is SessionState.CONNECTED:
            connected.set()

    unsubscribe = runtime.app.bus.subscribe(SessionChanged, on_change)
    try:
        if any(runtime.sessions.transport_for(s.id) and s.state is SessionState.CONNECTED
               for s in await db.sessions.list(location.id)):
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
            states = ", ".join(f"{s.id[:8]} {s.state.value}" for s in await db.sessions.list(location.id))
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
        async with httpx.AsyncClient(timeout=10, verify=await ssl_context_async()) as http:
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
