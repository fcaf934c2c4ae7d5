"""Operator commands that change a database (a cluster's, with ``--db-url``), one line per fact on stdout.

    ghl-desktop locations connect [--db-url URL] [--sandbox-url URL]
        consent: URL                      open it (a person, or a test's HTTP client, approves there)
        connected: LOCATION_ID NAME       one line per location the consent installed

    ghl-desktop numbers link --location ID [--pair-phone E164] [--db-url URL] [--sandbox-url URL]
        qr: PAYLOAD                       every QR code WhatsApp shows (scan the latest)
        pair-code: CODE                   with --pair-phone: type it on the phone instead
        linked: +PHONE                    the number is paired; its session is left for the workers

Both run only the flow they name: no job runner, no webhook endpoint, no other number is connected. The
tokens and the paired device go where the workers read them (the database's sealed secret store on
PostgreSQL; the data dir's secret store and engine store otherwise). ``--sandbox-url`` points the process
at an already running ``ghl-desktop sandbox`` (HighLevel and the simulated WhatsApp network) instead of
real HighLevel/WhatsApp. Exit codes: 0 done, 1 the flow failed or timed out, 2 bad arguments/configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from ghl_desktop.config import Settings, load_settings
from ghl_desktop.core.errors import ConfigError, GhlDesktopError
from ghl_desktop.services.sessions import TransportFactory

log = logging.getLogger("ghl.operator")

#: how long ``numbers link`` waits for the scan / the pairing code to be entered
LINK_TIMEOUT = 300.0
#: how long ``locations connect`` waits for the consent
CONNECT_TIMEOUT = 600.0


def _say(line: str) -> None:
    print(line, flush=True)


def _fail(command: str, message: str) -> None:
    print(f"ghl-desktop {command}: {message}", file=sys.stderr, flush=True)


async def operator_settings(db_url: str | None, sandbox_url: str | None) -> Settings:
    """The settings an operator command runs with: ``--db-url`` over ``GHL_DESKTOP_DB_URL``, and the
    sandbox's API base and app credentials with ``--sandbox-url``."""
    settings = load_settings()
    if db_url:
        settings = replace(settings, db_url=db_url)
    if sandbox_url:
        from ghl_desktop.sandbox_mode import external_sandbox_settings

        settings = await external_sandbox_settings(settings, sandbox_url)
    return settings


@contextlib.asynccontextmanager
async def operator_runtime(db_url: str | None, sandbox_url: str | None,
                           open_url: Callable[[str], Any] | None = None) -> AsyncIterator[Any]:
    """An App and a BridgeRuntime that is never started: its OAuth connector and session service only."""
    from ghl_desktop.adapters.secrets import open_secret_store
    from ghl_desktop.adapters.storage.secrets_db import is_cluster_url
    from ghl_desktop.app import App, with_stored_client_secret
    from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions, neonize_transport_factory
    from ghl_desktop.sandbox_mode import sandbox_secret_store

    settings = await operator_settings(db_url, sandbox_url)
    cluster = is_cluster_url(settings.database_url)
    secrets = None
    if not cluster:  # a cluster's tokens are sealed in its database (the App opens that store)
        secrets = await asyncio.to_thread(sandbox_secret_store if sandbox_url else open_secret_store, settings)
        if not sandbox_url:
            settings = with_stored_client_secret(settings, secrets)
    if not sandbox_url and not settings.has_ghl_credentials:
        raise ConfigError("no HighLevel credentials (GHL_CLIENT_ID / GHL_CLIENT_SECRET); "
                              "use --sandbox-url with a running `ghl-desktop sandbox` to try it")
    app = await asyncio.to_thread(lambda: App(settings, secrets=secrets, console_log=False,
                                              sandbox=bool(sandbox_url)))
    try:
        factory: TransportFactory
        if sandbox_url:
            from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
            from ghl_desktop.runtime import cluster_device_stores

            factory = simulated_transport_factory(sandbox_url, device_stores=cluster_device_stores(app))
        else:
            from ghl_desktop.adapters.whatsapp.neonize import ensure_executor

            ensure_executor(asyncio.get_running_loop(), 8)
            from ghl_desktop.runtime import cluster_engine_stores

            factory = neonize_transport_factory(settings.sessions_dir, cluster_engine_stores(app))
        runtime = BridgeRuntime(app, factory, RuntimeOptions(), open_url=open_url)
        try:
            yield runtime
        finally:
            await runtime.sessions.close()
            await runtime.stop()
    finally:
        await app.aclose()


async def _until_stopped(work: Any, limit: float) -> Any:
    """``work`` unless SIGINT/SIGTERM or ``limit`` seconds come first (then TimeoutError / CancelledError)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        return await asyncio.wait_for(task, limit)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


async def _outcome(command: str, work: Awaitable[int], *, stopped: str, too_late: str) -> int:
    """A command's exit code: ``work``'s, or 1 when it was stopped (SIGINT/SIGTERM) or ran out of time,
    2 for a configuration error and 1 for any other failure, each said in one line on stderr."""
    try:
        return await work
    except asyncio.CancelledError:
        _fail(command, stopped)
    except TimeoutError:
        _fail(command, too_late)
    except GhlDesktopError as exc:
        _fail(command, str(exc))
        return 2 if _is_config_error(exc) else 1
    return 1


async def _connect(db_url: str | None, sandbox_url: str | None) -> int:
    def show(url: str) -> bool:
        _say(f"consent: {url}")
        return True

    async def work() -> int:
        async with operator_runtime(db_url, sandbox_url, open_url=show) as runtime:
            locations = await _until_stopped(runtime.oauth.connect(), CONNECT_TIMEOUT)
        for location in locations:
            _say(f"connected: {location.id} {location.name}")
        return 0

    return await _outcome("locations connect", work(), stopped="stopped before the consent was given",
                          too_late=f"no consent within {CONNECT_TIMEOUT:.0f} s")


async def _link(db_url: str | None, sandbox_url: str | None, location_id: str, pair_phone: str | None) -> int:
    from ghl_desktop.core.models import SessionState
    from ghl_desktop.services.events import SessionChanged, SessionPairCode, SessionQr

    command = "numbers link"

    async def work() -> int:
        async with operator_runtime(db_url, sandbox_url) as runtime:
            known = {loc.id for loc in await runtime.app.db.aio.run(runtime.app.db.locations.list)}
            if location_id not in known:
                _fail(command, f"location {location_id} is not connected in this database "
                               "(run `ghl-desktop locations connect` first)")
                return 2
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            session_id: list[str] = []

            def mine(sid: str) -> bool:
                return not session_id or sid == session_id[0]

            def on_qr(event: SessionQr) -> None:
                if mine(event.session_id) and not pair_phone:  # with --pair-phone the code is what counts
                    _say(f"qr: {event.code}")

            def on_code(event: SessionPairCode) -> None:
                if mine(event.session_id):
                    _say(f"pair-code: {event.code}")

            def on_change(event: SessionChanged) -> None:
                s = event.session
                if not mine(s.id) or done.done():
                    return
                if s.phone and s.state in (SessionState.CONNECTED, SessionState.CONNECTING):
                    done.set_result(s.phone)
                elif s.state in (SessionState.LOGGED_OUT, SessionState.FAILED):
                    done.set_exception(GhlDesktopError(f"linking stopped: {s.detail or s.state.value}"))

            bus = runtime.app.bus
            unsubscribe = [bus.subscribe(SessionQr, on_qr), bus.subscribe(SessionPairCode, on_code),
                           bus.subscribe(SessionChanged, on_change)]
            try:
                session = await runtime.sessions.create_session(location_id)
                session_id.append(session.id)
                if pair_phone:
                    await runtime.sessions.pair_by_phone(session.id, pair_phone)
                phone = await _until_stopped(done, LINK_TIMEOUT)
            finally:
                for off in unsubscribe:
                    off()
        _say(f"linked: {phone}")
        return 0

    return await _outcome(command, work(), stopped="stopped before the number was linked",
                          too_late=f"not linked within {LINK_TIMEOUT:.0f} s")


def _is_config_error(exc: BaseException) -> bool:
    return isinstance(exc, ConfigError)


def run_connect(db_url: str | None, sandbox_url: str | None) -> int:
    return asyncio.run(_connect(db_url, sandbox_url))


def run_link(db_url: str | None, sandbox_url: str | None, location_id: str, pair_phone: str | None) -> int:
    return asyncio.run(_link(db_url, sandbox_url, location_id, pair_phone))


__all__ = ["operator_settings", "run_connect", "run_link"]
