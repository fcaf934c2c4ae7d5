"""Direct mode: the desktop's own webhook endpoint (aiohttp), for users with their own tunnel.

``POST /ghl/provider/webhook`` (the provider's Delivery URL), ``POST /ghl/app/webhook`` (the app's
Default Webhook URL: INSTALL / UNINSTALL) and ``GET /healthz``. Binds 127.0.0.1 unless the user
chose another address. The relay mounts the same handlers, so both modes answer alike.

No request path ever answers 5xx on purpose: HighLevel treats anything but 429 as final, so an
unexpected failure while handling a delivery answers 429 (it will come again) and logs the bug.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Protocol

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


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """Read the raw body, refusing (413) as soon as it passes ``limit`` — never buffering more."""
    if request.content_length is not None and request.content_length > limit:
        raise WebhookTooLarge(f"body is over {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    try:
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
    except Exception as exc:  # broken chunked encoding, bad gzip, client gone
        raise MalformedWebhook("the request body could not be read") from exc
    return b"".join(chunks)


def _answer(status: int, payload: dict[str, object], headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


async def handle_delivery(route: Route, request: web.BaseRequest, gate: WebhookGate, sink: WebhookSink) -> web.Response:
    """Check, store, answer. The answer is sent only after ``sink.accept`` returned."""
    try:
        body = await read_body(request, gate.max_body_bytes)
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


def create_webhook_app(gate: WebhookGate, sink: WebhookSink) -> web.Application:
    # aiohttp's own body limit sits above ours so that our handler answers 413 itself
    app = web.Application(client_max_size=gate.max_body_bytes + 1)
    add_webhook_routes(app, gate, sink)

    async def healthz(_request: web.Request) -> web.Response:
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
    ) -> None:
        self.gate = gate or WebhookGate(
            SignatureVerifier.from_settings(settings),
            max_body_bytes=settings.webhook_max_body_bytes,
            timestamp_window=timedelta(seconds=settings.webhook_timestamp_window_seconds),
        )
        self.host = host or settings.webhook_host
        self.port = settings.webhook_port if port is None else port
        self.app = create_webhook_app(self.gate, IntakeSink(intake))
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
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"the webhook endpoint cannot listen on {self.host}:{self.port} "
                              f"({exc.strerror or exc}); choose another port in the settings") from exc
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
    "HEALTH_PATH",
    "PROVIDER_PATH",
    "IntakeSink",
    "WebhookServer",
    "WebhookSink",
    "add_webhook_routes",
    "create_webhook_app",
    "handle_delivery",
    "read_body",
]
