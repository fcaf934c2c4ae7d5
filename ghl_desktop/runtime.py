"""The bridge's service graph, built once on top of an :class:`~ghl_desktop.app.App`.

Part of the composition root (it is the one place that picks concrete adapters): the HighLevel
client and token manager, the WhatsApp sessions service with its transport factory (neonize, or the
simulated network in sandbox mode), the bridge and its job runner, the direct-mode webhook endpoint
and, when configured, the relay client. The window and ``ghl-desktop headless`` both run this.

Start order: webhook endpoint (so nothing HighLevel sends is lost), job runner, sessions. Stop order
is the reverse of what feeds work in: stop taking webhooks, let the runner finish the jobs in flight,
stop the sessions (awaiting every engine's stop), close HTTP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ghl_desktop.adapters.ghl import GhlClient, OAuthConnector, OAuthOptions, TokenManager, create_http_client
from ghl_desktop.adapters.ghl.gateway import GhlGateway, MediaDownloader
from ghl_desktop.app import App
from ghl_desktop.core.models import WhatsAppSession
from ghl_desktop.core.whatsapp import EventHandler, WhatsAppTransport
from ghl_desktop.relay.client import RelayClient
from ghl_desktop.services.bridge import Bridge, BridgeOptions
from ghl_desktop.services.jobs import JobRunner, RunnerOptions
from ghl_desktop.services.sessions import SessionOptions, SessionService, TransportFactory
from ghl_desktop.webhooks.endpoint import WebhookServer
from ghl_desktop.webhooks.intake import WebhookIntake

log = logging.getLogger("ghl.runtime")

#: the desktop's bearer token for ghl-relay (printed by `ghl-relay token create`); a secret
RELAY_TOKEN_KEY = "relay:token"


@dataclass(frozen=True)
class RuntimeOptions:
    runner: RunnerOptions = field(default_factory=RunnerOptions)
    sessions: SessionOptions = field(default_factory=SessionOptions)
    bridge: BridgeOptions = field(default_factory=BridgeOptions)
    #: None: settings.webhook_port; 0: a free port
    webhook_port: int | None = None
    oauth: dict[str, Any] = field(default_factory=dict)


def neonize_transport_factory(sessions_dir: Path) -> TransportFactory:
    """Real WhatsApp: one neonize client per linked number, its store under the data dir."""

    def make(session: WhatsAppSession, handler: EventHandler) -> WhatsAppTransport:
        from ghl_desktop.adapters.whatsapp.neonize_transport import NeonizeTransport

        return NeonizeTransport(session.id, Path(session.store_path), handler, proxy=session.proxy)

    return make


class BridgeRuntime:
    def __init__(
        self,
        app: App,
        transport_factory: TransportFactory,
        options: RuntimeOptions | None = None,
        *,
        open_url: Any = None,
    ) -> None:
        self.app = app
        self.options = options or RuntimeOptions()
        settings = app.settings
        self.http = create_http_client(settings)
        self.tokens = TokenManager(app.secrets, app.db.locations, self.http, settings)
        self.client = GhlClient(settings, self.tokens, self.http)
        self.gateway = GhlGateway(self.client)
        self.sessions = SessionService(
            app.db.sessions, transport_factory, app.bus, sessions_dir=settings.sessions_dir,
            options=self.options.sessions,
        )
        self.runner: JobRunner
        self.bridge = Bridge(
            app.db, self.gateway, self.sessions, MediaDownloader(self.http), bus=app.bus,
            options=self.options.bridge, on_enqueued=self._wake,
        )
        self.runner = JobRunner(app.db.jobs, self.bridge.handlers, self.options.runner)
        self.sessions.on_message = self.bridge.on_message
        self.sessions.on_receipt = self.bridge.on_receipt
        self.intake = WebhookIntake(app.db.jobs, backlog_limit=settings.webhook_backlog_limit, bus=app.bus)
        self.webhooks = WebhookServer(settings, self.intake, port=self.options.webhook_port)
        oauth_kwargs: dict[str, Any] = {}
        if open_url is not None:
            oauth_kwargs["open_url"] = open_url
        self.oauth = OAuthConnector(
            settings, self.tokens, self.client, app.db.locations,
            options=OAuthOptions.from_settings(settings, **self.options.oauth), **oauth_kwargs,
        )
        self.relay: RelayClient | None = None
        relay_token = app.secrets.get(RELAY_TOKEN_KEY) if settings.relay_url else None
        if settings.relay_url and relay_token:
            self.relay = RelayClient(settings.relay_url, relay_token, self.intake, bus=app.bus)
        elif settings.relay_url:
            log.warning("a relay URL is set but no relay token is stored (%s); relay mode is off", RELAY_TOKEN_KEY)
        self._started = False

    def _wake(self) -> None:
        if hasattr(self, "runner"):
            self.runner.wake()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.webhooks.start()
        self.intake_wakes_runner()
        self.runner.start()
        if self.relay is not None:
            self.relay.start()
        resumed = await self.sessions.resume_all()
        log.info("bridge running: webhooks at %s, %d WhatsApp number(s) resumed", self.webhooks.url, len(resumed))

    def intake_wakes_runner(self) -> None:
        """A stored webhook wakes the runner at once instead of at its next poll."""
        from ghl_desktop.webhooks.intake import WebhookReceived

        self.app.bus.subscribe(WebhookReceived, lambda _event: self.runner.wake())

    async def stop(self) -> None:
        """Finish in-flight work, then close everything this runtime opened."""
        if not self._started:
            await self.http.aclose()
            return
        self._started = False
        await self.webhooks.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.runner.stop()
        await self.sessions.close()
        await self.http.aclose()
        log.info("bridge stopped")
