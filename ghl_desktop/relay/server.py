"""``ghl-relay``: HighLevel's webhooks in, a WebSocket out to desktops behind NAT.

Same delivery endpoints and checks as direct mode (``ghl_desktop.webhooks``); a delivery is answered
200 only after it is committed to the relay's database for every install that wants it. Desktops
connect to ``GET /v1/stream`` with ``Authorization: Bearer <token>``; the relay streams that install's
pending events in id order as ``{"id", "kind", "event"}`` text frames and deletes one only when the
desktop answers ``{"ack": id}``. A reconnecting desktop is sent every unacknowledged event again, in
order. A second connection with the same token replaces the first (close code 4001) — unless the two
name different workers of a cluster (``X-Ghl-Worker: NAME``, issue 14): then both stream, each is sent
every pending event, and the cluster's shared database stores each event once (the intake deduplicates);
the first acknowledgement deletes it.

``GET /oauth/callback?code&state`` receives HighLevel's OAuth redirect for users who cannot register a
loopback URI. The desktop first registers the sign-in's ``state`` with ``POST /v1/oauth/authorizations``
(bearer token, body ``{"state": ...}``); the redirect is then streamed as kind ``oauth.code`` to that
desktop only (expired after 10 minutes if it is not taken). A redirect whose state nobody registered
is answered 400 and stores nothing.

``GET /healthz`` is liveness only (``{"ok": true}``, 503 when the database is down) and says nothing
about installs; ``GET /v1/status`` (bearer token) gives that install's pending count and whether it is
connected. Open streams are re-checked every ``reauth_seconds``: a revoked token's stream is closed with
code 4003 (the desktop stops with "unauthorized").
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from ghl_desktop.adapters.storage.offloop import StorageExecutor
from ghl_desktop.core.errors import WebhookBacklogFull
from ghl_desktop.core.storage_health import StorageMonitor
from ghl_desktop.relay.store import MAX_EVENT_ID, Install, RelayStore
from ghl_desktop.webhooks.endpoint import (
    GUARD_KEY,
    HEALTH_PATH,
    ConnectionLimits,
    GuardedSite,
    add_webhook_routes,
    install_guard,
)
from ghl_desktop.webhooks.gate import VerifiedEvent, WebhookGate

log = logging.getLogger("ghl.relay")

STREAM_PATH = "/v1/stream"
OAUTH_CALLBACK_PATH = "/oauth/callback"
OAUTH_AUTHORIZATIONS_PATH = "/v1/oauth/authorizations"
STATUS_PATH = "/v1/status"
DEFAULT_BACKLOG_LIMIT = 100_000
#: unacknowledged frames in flight per connection; the desktop acks in order, so this only bounds memory
STREAM_WINDOW = 256
CLOSE_REPLACED = 4001
#: a cluster worker's name on its stream: streams of different workers of one install do not replace
#: each other (each gets every event; the shared database stores it once)
WORKER_HEADER = "X-Ghl-Worker"
CLOSE_REVOKED = 4003

T = TypeVar("T")


@dataclass
class RelayConfig:
    backlog_limit: int = DEFAULT_BACKLOG_LIMIT
    heartbeat_seconds: float = 30.0
    maintenance_seconds: float = 60.0
    #: how often open streams are checked against revoked tokens
    reauth_seconds: float = 30.0
    #: header/body timeouts and the connection cap (slowloris)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    stream_window: int = STREAM_WINDOW
    #: run store calls on a worker thread (the server's default). Off = inline on the loop, for hosts
    #: whose loop cannot take completions from foreign threads safely (the tests' qasync loop).
    db_thread: bool = True


class RelayState:
    """Shared by the handlers: the store (on one DB thread), live connections, wake-up events."""

    def __init__(self, store: RelayStore, config: RelayConfig) -> None:
        self.store = store
        self.config = config
        # the product's one storage-executor mechanism (adapters/storage/offloop.py): one writer thread
        # for SQLite, a small pool for PostgreSQL
        self._executor = (StorageExecutor(store.engine.dialect.name, name="relay-db")
                          if config.db_thread else None)
        self._wake: dict[int, set[asyncio.Event]] = {}
        #: install id → worker name ("" for a desktop) → its open stream
        self.connections: dict[int, dict[str, web.WebSocketResponse]] = {}
        self.installs: dict[int, Install] = {}
        self.monitor = StorageMonitor()

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the DB thread: keeps the loop responsive, serialises SQLite writers."""
        if self._executor is None:
            return fn(*args)
        return await self._executor.run(fn, *args)

    def listen(self, install_id: int) -> asyncio.Event:
        """A wake-up event for one stream connection of ``install_id``, set whenever it has work."""
        wake = asyncio.Event()
        self._wake.setdefault(install_id, set()).add(wake)
        return wake

    def unlisten(self, install_id: int, wake: asyncio.Event) -> None:
        self._wake.get(install_id, set()).discard(wake)

    def notify(self, install_ids: tuple[int, ...]) -> None:
        for install_id in install_ids:
            for wake in self._wake.get(install_id, ()):
                wake.set()

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # drains the submitted calls, joins the threads


class RelaySink:
    """:class:`ghl_desktop.webhooks.endpoint.WebhookSink` backed by the relay's store."""

    #: the backlog limit is a soft guard; counting every row on every delivery would cost O(backlog)
    COUNT_REFRESH_SECONDS = 1.0

    def __init__(self, state: RelayState) -> None:
        self.state = state
        self._pending = 0
        self._counted_at = float("-inf")

    async def _backlog(self) -> int:
        now = asyncio.get_running_loop().time()
        if now - self._counted_at >= self.COUNT_REFRESH_SECONDS:
            self._pending = await self.state.db(lambda: self.state.store.pending_count(webhooks_only=True))
            self._counted_at = now
        return self._pending

    async def accept(self, event: VerifiedEvent) -> bool:
        store = self.state.store
        if await self._backlog() >= self.state.config.backlog_limit:
            raise WebhookBacklogFull("the relay's backlog is full; try later")
        try:
            result = await self.state.db(store.store_event, event.kind, event.event, event.dedupe_key,
                                         event.location_id)
        except Exception as exc:
            log.exception("relay could not store %s", event.dedupe_key)
            problem = self.state.monitor.failed(exc)
            raise WebhookBacklogFull(f"relay {problem.text}; try later") from exc
        self.state.monitor.ok()
        if not result.matched:
            # Nobody would ever receive it: keep HighLevel retrying until a desktop is registered.
            log.warning("no desktop install takes location %s; deferring %s", event.location_id, event.dedupe_key)
            raise WebhookBacklogFull("no desktop is registered for this location yet")
        self.state.notify(result.new)
        self._pending += len(result.new)
        log.info("stored %s for %d install(s)%s", event.dedupe_key, len(result.new),
                 " (duplicate)" if not result.new else "",
                 extra={"kind": event.kind, "signature": str(event.scheme)})
        return bool(result.new)

    def refused(self, route: str, status: int, reason: str) -> None:
        log.info("refused delivery on %s: %d %s", route, status, reason, extra={"status": status})


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _install_of(request: web.Request, what: str) -> Install | None:
    state: RelayState = request.app[STATE_KEY]
    token = _bearer(request)
    install = await state.db(state.store.authenticate, token) if token else None
    if install is None:
        log.info("%s refused: missing or unknown token", what, extra={"peer": request.remote or "?"})
    return install


def _unauthorized() -> web.Response:
    return web.json_response({"error": "unauthorized"}, status=401)


async def _stream(request: web.Request) -> web.StreamResponse:
    state: RelayState = request.app[STATE_KEY]
    install = await _install_of(request, "stream")
    if install is None:
        return _unauthorized()
    worker = request.headers.get(WORKER_HEADER, "").strip()[:128]
    ws = web.WebSocketResponse(heartbeat=state.config.heartbeat_seconds, max_msg_size=64 * 1024)
    await ws.prepare(request)
    streams = state.connections.setdefault(install.id, {})
    previous = streams.get(worker)
    streams[worker] = ws
    state.installs[install.id] = install
    if previous is not None and not previous.closed:
        log.info("install %s reconnected; closing its previous stream", install.name)
        await previous.close(code=CLOSE_REPLACED, message=b"replaced by a newer connection")
    log.info("install %s connected%s", install.name, f" (worker {worker})" if worker else "",
             extra={"install": install.id})
    in_flight: set[int] = set()
    wake = state.listen(install.id)
    sender = asyncio.create_task(_send_pending(state, install, ws, wake, in_flight))
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
                ack = data.get("ack") if isinstance(data, dict) else None
            except ValueError:
                ack = None
            if not isinstance(ack, int) or isinstance(ack, bool) or not 0 < ack <= MAX_EVENT_ID:
                log.warning("install %s sent an unexpected frame", install.name)
                continue
            await state.db(state.store.ack, install.id, ack)
            in_flight.discard(ack)
            wake.set()
    finally:
        state.unlisten(install.id, wake)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        streams = state.connections.get(install.id, {})
        if streams.get(worker) is ws:
            del streams[worker]
            if not streams:
                state.connections.pop(install.id, None)
                state.installs.pop(install.id, None)
        log.info("install %s disconnected", install.name, extra={"install": install.id})
    return ws


async def _send_pending(state: RelayState, install: Install, ws: web.WebSocketResponse, wake: asyncio.Event,
                        in_flight: set[int]) -> None:
    """Send pending events in id order, at most ``stream_window`` unacknowledged at a time."""
    try:
        await _send_loop(state, install, ws, wake, in_flight)
    except asyncio.CancelledError:
        raise
    except Exception:
        # the reader would otherwise wait on a stream that no longer sends: end it, the desktop reconnects
        log.warning("stream to install %s failed; closing it", install.name, exc_info=True)
        await ws.close(code=1011, message=b"stream failed")


async def _send_loop(state: RelayState, install: Install, ws: web.WebSocketResponse, wake: asyncio.Event,
                     in_flight: set[int]) -> None:
    last_sent = 0
    while not ws.closed:
        wake.clear()
        room = state.config.stream_window - len(in_flight)
        if room > 0:
            events = await state.db(state.store.pending, install.id, last_sent, room)
            for pending in events:
                if ws.closed:
                    return
                await ws.send_str(pending.frame())
                in_flight.add(pending.id)
                last_sent = pending.id
            if events:
                continue
        await wake.wait()


async def _oauth_callback(request: web.Request) -> web.Response:
    state: RelayState = request.app[STATE_KEY]
    query = request.rel_url.query
    code, oauth_state, error = query.get("code"), query.get("state"), query.get("error")
    if not code and not error:
        return _page(400, "Missing code", "This address receives HighLevel's OAuth redirect; no code was given.")
    if (code and len(code) > 4096) or (oauth_state and len(oauth_state) > 1024) or (error and len(error) > 256):
        return _page(400, "Invalid request", "The redirect parameters are too long.")
    body: dict[str, Any] = {"state": oauth_state}
    if code:
        body["code"] = code
    else:
        body["error"] = error
        body["error_description"] = (query.get("error_description") or "")[:1024]
    try:
        install_id = await state.db(state.store.store_oauth_code, oauth_state, body)
    except Exception:
        log.exception("could not store an OAuth redirect")
        return _page(503, "Try again", "The relay could not save the sign-in right now. Please retry.")
    if install_id is None:
        # nobody started this sign-in (forged, replayed, expired): store nothing, count nothing
        log.info("refused an OAuth redirect whose state no desktop registered")
        return _page(400, "Unknown sign-in",
                     "This sign-in was not started from a desktop app connected to this relay, or it expired. "
                     "Start again from the app.")
    state.notify((install_id,))
    log.info("OAuth redirect received and queued for its install", extra={"install": install_id})
    if error:
        return _page(200, "Sign-in cancelled", "HighLevel reported an error; the desktop app will show it.")
    return _page(200, "Connected", "The desktop app has received the sign-in. You can close this window.")


async def _expect_authorization(request: web.Request) -> web.Response:
    """A desktop announces the ``state`` of a sign-in it is starting; only it will get that code."""
    state: RelayState = request.app[STATE_KEY]
    install = await _install_of(request, "OAuth registration")
    if install is None:
        return _unauthorized()
    try:
        async with asyncio.timeout(state.config.limits.body_timeout):
            data = await request.json()
        oauth_state = data.get("state") if isinstance(data, dict) else None
    except (ValueError, RecursionError, TimeoutError):
        oauth_state = None
    if not isinstance(oauth_state, str) or not 16 <= len(oauth_state) <= 1024:
        return web.json_response({"error": "state must be a string of 16-1024 characters"}, status=400)
    await state.db(state.store.expect_authorization, install.id, oauth_state)
    log.info("install %s started a sign-in through the relay", install.name, extra={"install": install.id})
    return web.json_response({"ok": True, "redirect_path": OAUTH_CALLBACK_PATH})


def _page(status: int, title: str, text: str) -> web.Response:
    doc = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
           f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>")
    return web.Response(status=status, text=doc, content_type="text/html")


async def _healthz(request: web.Request) -> web.Response:
    """Liveness for the hosting platform: no counts, nothing about installs (unauthenticated)."""
    state: RelayState = request.app[STATE_KEY]
    try:
        await state.db(state.store.ping)
    except Exception:
        log.exception("health check: database unavailable")
        return web.json_response({"ok": False, "error": "database unavailable"}, status=503)
    if state.monitor.problem is not None:  # the last write failed (disk full…): deliveries get 429
        return web.json_response({"ok": False, "storage": state.monitor.problem.text}, status=503)
    return web.json_response({"ok": True})


async def _status(request: web.Request) -> web.Response:
    """The calling install's own figures (bearer token)."""
    state: RelayState = request.app[STATE_KEY]
    install = await _install_of(request, "status")
    if install is None:
        return _unauthorized()
    pending = await state.db(state.store.pending_count, install.id)
    return web.json_response({"ok": True, "install": install.name, "pending": pending,
                              "connected": bool(state.connections.get(install.id)),
                              "streams": len(state.connections.get(install.id, {}))})


async def close_revoked_streams(state: RelayState) -> int:
    """Close every open stream whose token was revoked since it connected; returns how many."""
    closed = 0
    for install_id, streams in list(state.connections.items()):
        if await state.db(state.store.is_active, install_id):
            continue
        name = state.installs.get(install_id)
        log.info("token of install %s was revoked; closing its stream", name.name if name else install_id)
        for ws in list(streams.values()):
            await ws.close(code=CLOSE_REVOKED, message=b"token revoked")
            closed += 1
    return closed


STATE_KEY = web.AppKey("relay_state", RelayState)


async def _maintenance(app: web.Application) -> Any:
    state = app[STATE_KEY]

    async def loop() -> None:
        while True:
            try:
                seen, codes = await state.db(state.store.prune)
                if seen or codes:
                    log.info("pruned %d old dedupe keys and %d expired OAuth codes", seen, codes)
            except Exception:
                log.exception("relay maintenance failed")
            await asyncio.sleep(state.config.maintenance_seconds)

    async def reauth() -> None:
        while True:
            await asyncio.sleep(state.config.reauth_seconds)
            try:
                await close_revoked_streams(state)
            except Exception:
                log.exception("checking open streams against revoked tokens failed")

    tasks = [asyncio.create_task(loop()), asyncio.create_task(reauth())]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close_streams(app: web.Application) -> None:
    """On shutdown, end open streams first so the graceful wait does not sit on them."""
    for streams in list(app[STATE_KEY].connections.values()):
        for ws in list(streams.values()):
            await ws.close(code=1001, message=b"relay shutting down")


def create_relay_app(store: RelayStore, gate: WebhookGate, config: RelayConfig | None = None) -> web.Application:
    state = RelayState(store, config or RelayConfig())
    app = web.Application(client_max_size=gate.max_body_bytes + 1)
    app[STATE_KEY] = state
    install_guard(app, state.config.limits)
    add_webhook_routes(app, gate, RelaySink(state))
    app.router.add_get(STREAM_PATH, _stream)
    app.router.add_get(OAUTH_CALLBACK_PATH, _oauth_callback)
    app.router.add_post(OAUTH_AUTHORIZATIONS_PATH, _expect_authorization)
    app.router.add_get(HEALTH_PATH, _healthz)
    app.router.add_get(STATUS_PATH, _status)
    app.cleanup_ctx.append(_maintenance)
    app.on_shutdown.append(_close_streams)
    return app


class RelayServer:
    """Start/stop the relay on the running loop (the CLI, tests and the load bench use this)."""

    def __init__(self, store: RelayStore, gate: WebhookGate, *, host: str = "127.0.0.1", port: int = 0,
                 config: RelayConfig | None = None) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.app = create_relay_app(store, gate, config)
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    @property
    def url(self) -> str:
        if self.bound_port is None:
            raise RuntimeError("the relay is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.bound_port}"

    async def start(self) -> str:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = GuardedSite(runner, self.host, self.port, self.app[GUARD_KEY])
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        log.info("relay listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.app[STATE_KEY].shutdown()
        self.bound_port = None


__all__ = [
    "CLOSE_REVOKED",
    "OAUTH_AUTHORIZATIONS_PATH",
    "OAUTH_CALLBACK_PATH",
    "STATUS_PATH",
    "STREAM_PATH",
    "WORKER_HEADER",
    "RelayConfig",
    "RelayServer",
    "RelaySink",
    "close_revoked_streams",
    "create_relay_app",
]
