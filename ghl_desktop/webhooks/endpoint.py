"""Direct mode: the desktop's own webhook endpoint (aiohttp), for users with their own tunnel.

``POST /ghl/provider/webhook`` (the provider's Delivery URL), ``POST /ghl/app/webhook`` (the app's
Default Webhook URL: INSTALL / UNINSTALL) and ``GET /healthz``. Binds 127.0.0.1 unless the user
chose another address. The relay mounts the same handlers, so both modes answer alike.

No request path ever answers 5xx on purpose: HighLevel treats anything but 429 as final, so an
unexpected failure while handling a delivery answers 429 (it will come again) and logs the bug.

Slow and idle clients (issue 10.5, slowloris): both this endpoint and the relay listen through a
:class:`GuardedSite`. A new connection must deliver a complete request head within ``header_timeout``
and the body within ``body_timeout`` (408), else it is closed; after its first request a keep-alive
connection is left to aiohttp's keep-alive timeout (closing it early would race a reverse proxy's
next request on it). At most ``max_connections`` are open at once (by default well under the process's file
descriptor limit); when a new connection would pass the cap, the oldest connection that has not yet
sent a request head is closed to make room — so idle attackers are what gets dropped, a genuine
delivery still gets in. Only when every connection is busy with a request is the newcomer refused.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from aiohttp import web

from ghl_desktop.config import Settings
from ghl_desktop.core.errors import ConfigError, MalformedWebhook, WebhookBacklogFull, WebhookError, WebhookTooLarge
from ghl_desktop.webhooks.gate import Route, VerifiedEvent, WebhookGate
from ghl_desktop.webhooks.intake import WebhookIntake
from ghl_desktop.webhooks.verify import SignatureVerifier

log = logging.getLogger("ghl.webhooks")

PROVIDER_PATH = "/ghl/provider/webhook"
APP_PATH = "/ghl/app/webhook"
HEALTH_PATH = "/healthz"
#: what HighLevel is told to wait before retrying a 429 (it retries about every 10 minutes anyway)
RETRY_AFTER_SECONDS = 600


def _default_max_connections() -> int:
    """Well under the file-descriptor limit (the database, logs and outgoing HTTP need some too)."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 512
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1024
    return max(16, min(1024, soft * 3 // 4 - 16))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = field(default_factory=_default_max_connections)
    #: from connecting to a complete first request head
    header_timeout: float = 10.0
    #: to read a whole request body once its head arrived
    body_timeout: float = 30.0


class WebhookTimeout(WebhookError):
    http_status = 408


class _GuardedProtocol(asyncio.Protocol):
    """Stands between the event loop and aiohttp's protocol for one connection (see ConnectionGuard)."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.busy = 0
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.admitted = False
        self.served = 0  # requests completed on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)


class ConnectionGuard:
    """Header timeout, connection cap and idle eviction for one listening site."""

    def __init__(self, limits: ConnectionLimits | None = None) -> None:
        self.limits = limits or ConnectionLimits()
        self._conns: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self.evicted = 0  # idle connections closed to make room
        self.refused = 0  # connections refused because every slot was busy
        self.timed_out = 0  # connections closed for not sending a request head in time

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, factory())

    def admit(self, conn: _GuardedProtocol) -> bool:
        assert conn.transport is not None
        if len(self._conns) >= self.limits.max_connections:
            idle = [c for c in self._conns.values() if c.busy == 0]
            if not idle:
                self.refused += 1
                log.warning("connection cap (%d) reached with every connection busy; refusing one",
                            self.limits.max_connections)
                return False
            # never-served connections first (slowloris), then the longest idle keep-alive one
            oldest = min(idle, key=lambda c: (c.served > 0, c.idle_since))
            self.evicted += 1
            self._drop(oldest)
        self._conns[conn.transport] = conn
        self._arm(conn)
        return True

    def _arm(self, conn: _GuardedProtocol) -> None:
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = loop.call_later(self.limits.header_timeout, self._expire, conn)

    def _expire(self, conn: _GuardedProtocol) -> None:
        if conn.busy == 0 and conn.transport is not None and conn.transport in self._conns:
            self.timed_out += 1
            self._drop(conn)

    def _drop(self, conn: _GuardedProtocol) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        if conn.transport is not None:
            self._conns.pop(conn.transport, None)
            conn.transport.abort()

    def forget(self, conn: _GuardedProtocol) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        if conn.transport is not None and self._conns.get(conn.transport) is conn:
            del self._conns[conn.transport]

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        conn = self._conns.get(request.transport) if request.transport is not None else None
        if conn is None:
            return await handler(request)
        conn.busy += 1
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        try:
            return await handler(request)
        finally:
            conn.busy -= 1
            conn.served += 1
            conn.idle_since = asyncio.get_running_loop().time()
            # A connection that completed a request (HighLevel, a reverse proxy) is left to aiohttp's
            # keep-alive timeout: closing it early would race the proxy's next request on it (a 502,
            # which HighLevel treats as final). Under pressure it is still evicted, after the idle
            # never-served ones.


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` whose connections pass through a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard,
                 **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        # start_serving=False, then serve: a cancellation (the window closed while the bridge was
        # starting) can no longer lose the listening socket inside create_server; stop() closes it
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.wrap(server), self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port, start_serving=False)
        await self._server.start_serving()


def install_guard(app: web.Application, limits: ConnectionLimits | None = None) -> ConnectionGuard:
    """Create the guard of ``app`` (before it is frozen) and register its middleware."""
    guard = ConnectionGuard(limits)
    app.middlewares.append(guard.middleware)
    app[GUARD_KEY] = guard
    return guard


GUARD_KEY = web.AppKey("connection_guard", ConnectionGuard)


class WebhookSink(Protocol):
    """Where verified events go: the desktop's JobQueue (:class:`IntakeSink`) or the relay's store."""

    async def accept(self, event: VerifiedEvent) -> bool:
        """Store durably; True if new, False if a duplicate. Raise WebhookBacklogFull to get a 429."""
        ...

    def refused(self, route: str, status: int, reason: str) -> None: ...


class IntakeSink:
    """Adapts :class:`WebhookIntake` (the desktop's queue) to :class:`WebhookSink`."""

    def __init__(self, intake: WebhookIntake) -> None:
        self.intake = intake

    async def accept(self, event: VerifiedEvent) -> bool:
        return (await self.intake.store(event, via="direct")).created

    def refused(self, route: str, status: int, reason: str) -> None:
        self.intake.refused(route, status, reason)


async def read_body(request: web.BaseRequest, limit: int, within_seconds: float | None = None) -> bytes:
    """Read the raw body, refusing (413) as soon as it passes ``limit`` — never buffering more — and
    (408) when it has not all arrived within ``within_seconds``."""
    if request.content_length is not None and request.content_length > limit:
        raise WebhookTooLarge(f"body is over {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(within_seconds):
            while True:
                chunk = await request.content.read(64 * 1024)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    raise WebhookTooLarge(f"body is over {limit} bytes")
                chunks.append(chunk)
    except WebhookError:
        raise
    except TimeoutError as exc:
        raise WebhookTimeout("the request body did not arrive in time") from exc
    except Exception as exc:  # broken chunked encoding, bad gzip, client gone
        raise MalformedWebhook("the request body could not be read") from exc
    return b"".join(chunks)


def _answer(status: int, payload: dict[str, object], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


async def handle_delivery(route: Route, request: web.BaseRequest, gate: WebhookGate, sink: WebhookSink) -> web.Response:
    """Check, store, answer. The answer is sent only after ``sink.accept`` returned."""
    guard = request.app.get(GUARD_KEY) if isinstance(request, web.Request) else None
    try:
        body = await read_body(request, gate.max_body_bytes, guard.limits.body_timeout if guard else None)
        event = gate.check(route, body, request.headers)
        created = await sink.accept(event)
    except WebhookBacklogFull as exc:
        log.warning("webhook on %s deferred (429): %s", route, exc.message)
        sink.refused(str(route), 429, exc.message)
        return _answer(429, {"error": exc.message}, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    except WebhookError as exc:
        log.info("webhook on %s refused (%d): %s", route, exc.http_status, exc.message)
        sink.refused(str(route), exc.http_status, exc.message)
        return _answer(exc.http_status, {"error": exc.message})
    except Exception:
        log.exception("unexpected failure handling a webhook on %s; answering 429 so it is retried", route)
        sink.refused(str(route), 429, "internal error")
        return _answer(429, {"error": "temporarily unavailable"}, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    return _answer(200, {"ok": True, "duplicate": not created})


def add_webhook_routes(app: web.Application, gate: WebhookGate, sink: WebhookSink) -> None:
    """Mount the two delivery endpoints (shared by direct mode and the relay)."""

    async def provider(request: web.Request) -> web.Response:
        return await handle_delivery(Route.PROVIDER, request, gate, sink)

    async def app_event(request: web.Request) -> web.Response:
        return await handle_delivery(Route.APP, request, gate, sink)

    app.router.add_post(PROVIDER_PATH, provider)
    app.router.add_post(APP_PATH, app_event)


def create_webhook_app(gate: WebhookGate, sink: WebhookSink, limits: ConnectionLimits | None = None,
                       storage_problem: Callable[[], str | None] | None = None) -> web.Application:
    # aiohttp's own body limit sits above ours so that our handler answers 413 itself
    app = web.Application(client_max_size=gate.max_body_bytes + 1)
    install_guard(app, limits)
    add_webhook_routes(app, gate, sink)

    async def healthz(_request: web.Request) -> web.Response:
        problem = storage_problem() if storage_problem is not None else None
        if problem is not None:  # e.g. disk full: deliveries get 429 until it is fixed
            return _answer(503, {"ok": False, "storage": problem})
        return _answer(200, {"ok": True})

    app.router.add_get(HEALTH_PATH, healthz)
    return app


class WebhookServer:
    """The direct-mode endpoint as a start/stop service on the running (qasync) loop."""

    def __init__(
        self,
        settings: Settings,
        intake: WebhookIntake,
        *,
        gate: WebhookGate | None = None,
        host: str | None = None,
        port: int | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.gate = gate or WebhookGate(
            SignatureVerifier.from_settings(settings),
            max_body_bytes=settings.webhook_max_body_bytes,
            timestamp_window=timedelta(seconds=settings.webhook_timestamp_window_seconds),
        )
        self.host = host or settings.webhook_host
        self.port = settings.webhook_port if port is None else port
        monitor = intake.monitor
        self.app = create_webhook_app(self.gate, IntakeSink(intake), limits,
                                      lambda: monitor.problem.text if monitor.problem else None)
        self.guard = self.app[GUARD_KEY]
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    @property
    def url(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("the webhook server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._bound_port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> str:
        """Listen; returns the base URL. Port 0 picks a free port (tests)."""
        if self._runner is not None:
            return self.url
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = GuardedSite(runner, self.host, self.port, self.guard)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"the webhook endpoint cannot listen on {self.host}:{self.port} "
                              f"({exc.strerror or exc}); choose another port in the settings") from exc
        except BaseException:  # cancelled while starting: close what was opened, then go on cancelling
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self._bound_port = sockets[0].getsockname()[1] if sockets else self.port
        log.info("webhook endpoint listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self._bound_port = None
        if runner is not None:
            await runner.cleanup()
            log.info("webhook endpoint stopped")


__all__ = [
    "APP_PATH",
    "GUARD_KEY",
    "HEALTH_PATH",
    "PROVIDER_PATH",
    "ConnectionGuard",
    "ConnectionLimits",
    "GuardedSite",
    "IntakeSink",
    "WebhookServer",
    "WebhookSink",
    "WebhookTimeout",
    "add_webhook_routes",
    "create_webhook_app",
    "handle_delivery",
    "install_guard",
    "read_body",
]
