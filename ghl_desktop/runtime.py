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

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from ghl_desktop.adapters.ghl import (
    ClientOptions,
    GhlClient,
    OAuthConnector,
    OAuthOptions,
    TokenManager,
    create_http_client,
)
from ghl_desktop.adapters.ghl.gateway import GhlGateway, MediaDownloader
from ghl_desktop.adapters.ghl.rate import RateLimitConfig
from ghl_desktop.adapters.ghl.transport import parse_version_overrides
from ghl_desktop.adapters.storage.history import SqlHistoryRepository
from ghl_desktop.adapters.storage.tx import Transactions
from ghl_desktop.app import App
from ghl_desktop.core.models import WhatsAppSession
from ghl_desktop.core.whatsapp import EventHandler, WhatsAppTransport
from ghl_desktop.relay.client import RelayClient
from ghl_desktop.services.bridge import INBOUND, Bridge, BridgeOptions
from ghl_desktop.services.bridge.history import HISTORY, HistoryImport
from ghl_desktop.services.jobs import JobRunner, RunnerOptions
from ghl_desktop.services.ownership import (
    ClusterSessions,
    OwnershipOptions,
    OwnershipService,
    RoutedQueue,
    track_jobs,
    worker_name,
)
from ghl_desktop.services.sessions import SessionOptions, SessionService, TransportFactory
from ghl_desktop.webhooks.endpoint import WebhookServer
from ghl_desktop.webhooks.intake import WebhookIntake, WebhookReceived

log = logging.getLogger("ghl.runtime")

#: the desktop's bearer token for ghl-relay (printed by `ghl-relay token create`); a secret
RELAY_TOKEN_KEY = "relay:token"


#: how long a job failing with transient errors (a HighLevel outage) is retried before it is
#: dead-lettered, whatever its attempt count (the runner's own default, 0, is attempts-only for tests)
TRANSIENT_RETRY_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class RuntimeOptions:
    runner: RunnerOptions = field(default_factory=lambda: RunnerOptions(
        transient_retry_seconds=TRANSIENT_RETRY_SECONDS))
    sessions: SessionOptions = field(default_factory=SessionOptions)
    bridge: BridgeOptions = field(default_factory=BridgeOptions)
    #: None: settings.webhook_port; 0: a free port
    webhook_port: int | None = None
    oauth: dict[str, Any] = field(default_factory=dict)
    #: the HighLevel client's limits and retries (None: HighLevel's real ones); tests shrink them
    rate_limits: RateLimitConfig | None = None
    #: quitting: the whole stop (webhook endpoint, relay, jobs in flight, WhatsApp numbers) ends within
    #: about this long; jobs get most of it, the numbers the rest (both then cancel what is left)
    stop_deadline: float = 8.0


def bridge_options(options: BridgeOptions, settings: Any) -> BridgeOptions:
    """The bridge's options with the user's settings for groups and calls (a setting turns on what the
    caller's options left off; the reply text is the setting's when it rejects calls)."""
    reject = options.reject_calls or settings.reject_calls
    return replace(
        options, ignore_groups=options.ignore_groups or settings.ignore_groups, reject_calls=reject,
        reject_call_text=settings.reject_call_text if settings.reject_calls else options.reject_call_text,
    )


#: Timing knobs read from the environment by ``ghl-desktop headless`` (scripted acceptance runs, the
#: crash test, benchmarks): variable -> (part of RuntimeOptions, field, type). Unset keeps the default.
ENV_KNOBS: dict[str, tuple[str, str, type]] = {
    "GHL_DESKTOP_SEND_MIN_GAP": ("sessions", "send_min_gap", float),  # seconds between WhatsApp sends
    "GHL_DESKTOP_SEND_JITTER": ("sessions", "send_jitter", float),  # random extra seconds per send
    "GHL_DESKTOP_RECONNECT_BACKOFF": ("sessions", "backoff_initial", float),  # first WhatsApp redial wait
    "GHL_DESKTOP_RECONNECT_BACKOFF_MAX": ("sessions", "backoff_max", float),
    "GHL_DESKTOP_JOB_CONCURRENCY": ("runner", "concurrency", int),
    "GHL_DESKTOP_JOB_LEASE_SECONDS": ("runner", "lease_seconds", float),  # a dead process's jobs wait this
    "GHL_DESKTOP_JOB_POLL_INTERVAL": ("runner", "poll_interval", float),
    "GHL_DESKTOP_JOB_MAX_ATTEMPTS": ("runner", "max_attempts", int),
    "GHL_DESKTOP_JOB_BACKOFF_BASE": ("runner", "backoff_base", float),
    "GHL_DESKTOP_JOB_BACKOFF_CAP": ("runner", "backoff_cap", float),
    "GHL_DESKTOP_JOB_TRANSIENT_RETRY_SECONDS": ("runner", "transient_retry_seconds", float),
    "GHL_DESKTOP_SESSION_WAIT": ("bridge", "session_wait_seconds", float),  # retry when no number is live
}


def runtime_options_from_env(base: RuntimeOptions, environ: Mapping[str, str] | None = None) -> RuntimeOptions:
    """``base`` with the :data:`ENV_KNOBS` that are set applied; a bad value is a ValueError naming it."""
    env = os.environ if environ is None else environ
    parts: dict[str, dict[str, object]] = {}
    for name, (part, attr, kind) in ENV_KNOBS.items():
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{name} must be a {'whole ' if kind is int else ''}number, not {raw!r}") from None
        if value < 0 or (kind is int and value < 1):
            raise ValueError(f"{name} must be {'at least 1' if kind is int else 'zero or more'}, not {raw!r}")
        parts.setdefault(part, {})[attr] = value
    if not parts:
        return base
    return replace(base, **{part: replace(getattr(base, part), **values) for part, values in parts.items()})


def neonize_transport_factory(sessions_dir: Path, store_addresses: Any = None) -> TransportFactory:
    """Real WhatsApp: one neonize client per linked number, its store under the data dir (a cluster:
    ``store_addresses(session)``, the number's store in PostgreSQL — see :func:`cluster_engine_stores`)."""

    def make(session: WhatsAppSession, handler: EventHandler) -> WhatsAppTransport:
        from ghl_desktop.adapters.whatsapp.neonize import NeonizeTransport

        address = None if store_addresses is None else store_addresses(session)
        return NeonizeTransport(session.id, Path(session.store_path), handler, proxy=session.proxy,
                                store_address=address)

    return make


def is_cluster(app: App) -> bool:
    """A PostgreSQL database: this process is one worker of a cluster (issue 14, docs/cluster.md)."""
    return app.db.engine.dialect.name == "postgresql"


def cluster_ownership(app: App, sessions: SessionService) -> OwnershipService | None:
    """A cluster worker's number leases (services/ownership.py), named by GHL_DESKTOP_WORKER (``--worker``),
    timed by GHL_DESKTOP_HEARTBEAT_SECONDS / GHL_DESKTOP_TAKEOVER_SECONDS; None on one desktop (SQLite)."""
    if not is_cluster(app):
        return None
    from ghl_desktop.adapters.storage.ownership import ownership_repo

    own = OwnershipService(ownership_repo(app.db), app.db.aio.run, sessions, worker_name(), OwnershipOptions.from_env())
    sessions.may_connect = own.holds
    sessions.on_created = own.hold_new
    return own


def cluster_device_stores(app: App) -> Any:
    """For the simulated transport of a cluster worker: each number's paired device in the database's
    sealed secret store (any worker resumes it without a scan); None on one desktop."""
    if not is_cluster(app):
        return None
    from ghl_desktop.adapters.whatsapp.simulated import SecretDeviceStore

    return lambda session: SecretDeviceStore(app.secrets, app.db.aio.run, session.id)


def cluster_engine_stores(app: App) -> Any:
    """For neonize on a cluster worker: each number's whatsmeow store in the cluster's PostgreSQL, one schema
    per number (adapters/storage/engine_store.py; the schema is made when a worker or linker takes the
    number's lease); None on one desktop (the SQLite file in the data dir)."""
    if not is_cluster(app):
        return None
    from ghl_desktop.adapters.storage.engine_store import engine_store_address

    return lambda session: engine_store_address(app.db.url, session.id)


def sandbox_media_origins(app: App) -> tuple[str, ...]:
    """The one loopback origin attachments may come from: the in-process sandbox's own, in sandbox mode
    only (production refuses every non-public address, gateway.MediaDownloader)."""
    if not app.sandbox:
        return ()
    url = httpx.URL(app.settings.api_base)
    if url.host not in ("127.0.0.1", "localhost", "::1"):
        return ()
    return (f"{url.scheme}://{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}",)


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
        versions = parse_version_overrides(settings.api_versions)  # the same overrides for both
        self.tokens = TokenManager(app.secrets, app.db.locations, self.http, settings, version_overrides=versions,
                                   cluster=getattr(app, "token_cluster", None),  # PostgreSQL: cluster-wide refresh
                                   offload=app.db.aio.run)  # SQLite: a refresh's keyring + row writes off the loop
        self.client = GhlClient(settings, self.tokens, self.http, rate=self.options.rate_limits,
                                options=ClientOptions(version_overrides=versions))
        self.gateway = GhlGateway(self.client)
        self.sessions = SessionService(
            app.db.sessions, transport_factory, app.bus, sessions_dir=settings.sessions_dir,
            options=self.options.sessions, aio=app.db.aio.sessions,
        )
        if is_cluster(app):  # a number's whatsmeow store is a schema of the cluster's database: its device
            # keys go with the number (logout, link again, remove), not only its local files
            from ghl_desktop.adapters.storage.engine_store import drop_engine_store

            self.sessions.forget_store = lambda session_id: app.db.aio.run(drop_engine_store, app.db, session_id)
        # a cluster worker (PostgreSQL) connects only the numbers it holds, and a job that needs another
        # worker's number is handed to it (services/ownership.py); None on one desktop
        self.ownership = cluster_ownership(app, self.sessions)
        bridge_sessions: Any = self.sessions if self.ownership is None else ClusterSessions(
            self.sessions, self.ownership, owner=lambda: self.runner.owner)
        self.bridge = Bridge(
            app.db.aio, self.gateway, bridge_sessions,
            MediaDownloader(self.http, test_loopback_origins=sandbox_media_origins(app)), bus=app.bus,
            options=bridge_options(self.options.bridge, settings), on_enqueued=lambda key=None: self.runner.wake(key),
        )
        runner_options = self.options.runner
        if runner_options.max_wait_seconds is None:  # the setting, unless the caller chose (tests)
            runner_options = replace(runner_options, max_wait_seconds=settings.max_wait_seconds)
        if self.ownership is None:
            self.runner = JobRunner(app.db.aio.jobs, self.bridge.handlers, runner_options, bus=app.bus,
                                    prepare=self.bridge.prepares, follow=self.bridge.follows)
        else:  # WhatsApp-side jobs only for the numbers held here; their completion fenced by epoch
            self.runner = JobRunner(RoutedQueue(app.db.aio.jobs, self.ownership), track_jobs(self.bridge.handlers),
                                    runner_options, bus=app.bus, owner=f"{self.ownership.worker}:{os.urandom(3).hex()}",
                                    prepare=self.bridge.prepares)
        self.sessions.on_message = self.bridge.on_message
        self.sessions.on_receipt = self.bridge.on_receipt
        self.sessions.on_call = self.bridge.on_call
        self._wire_history(app, runner_options)
        self.intake = WebhookIntake(app.db.aio.jobs, backlog_limit=settings.webhook_backlog_limit, bus=app.bus)
        self.sessions.storage = self.intake.monitor  # one "disk full" state for webhooks and WhatsApp
        # a stored webhook wakes the runner at once instead of at its next poll
        app.bus.subscribe(WebhookReceived, lambda _event: self.runner.wake())
        self.webhooks = WebhookServer(settings, self.intake, port=self.options.webhook_port)
        oauth_kwargs: dict[str, Any] = {}
        if open_url is not None:
            oauth_kwargs["open_url"] = open_url
        self.oauth = OAuthConnector(
            settings, self.tokens, self.client, app.db.locations, offload=app.db.aio.run,
            options=OAuthOptions.from_settings(settings, **self.options.oauth), **oauth_kwargs,
        )
        self.relay: RelayClient | None = None
        relay_token = app.secrets.get(RELAY_TOKEN_KEY) if settings.relay_url else None
        if settings.relay_url and relay_token:
            # a cluster's workers each stream the install's events beside each other (relay/server.py)
            self.relay = RelayClient(settings.relay_url, relay_token, self.intake, bus=app.bus,
                                     worker=None if self.ownership is None else self.ownership.worker)
            if settings.oauth_via_relay:  # the relay's /oauth/callback hands the code to this desktop only
                self.oauth.relay = self.relay
        elif settings.relay_url:
            log.warning("a relay URL is set but no relay token is stored (%s); relay mode is off", RELAY_TOKEN_KEY)
        self._started = False

    def _wire_history(self, app: App, runner_options: RunnerOptions) -> None:
        """History on link (services/bridge/history.py): its sink, and its runner of one job at a time
        that leases only while the live runner is idle (behind live traffic, never ahead of it)."""
        store = SqlHistoryRepository(Transactions(app.db.engine), history_kind=HISTORY)
        self.history = HistoryImport(
            store, app.db.aio.run, self.bridge.handlers[INBOUND], days=lambda: app.settings.history_days,
            live_kinds=list(self.bridge.handlers), live_paused=lambda: self.runner.paused,
            ignore_groups=bridge_options(self.options.bridge, app.settings).ignore_groups, bus=app.bus,
            on_enqueued=lambda: self.history_runner.wake(),
        )
        self.history_runner = JobRunner(app.db.aio.jobs, self.history.handlers,
                                        replace(runner_options, concurrency=1), bus=app.bus, gate=self.history.gate)
        self.sessions.on_history = self.history.on_history

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.webhooks.start()
        self.runner.start()
        self.history_runner.start()
        if self.relay is not None:
            self.relay.start()
        if self.ownership is not None:
            await self.ownership.start()  # claims this worker's share of the numbers and connects it
        resumed = await self.sessions.resume_all()
        log.info("bridge running: webhooks at %s, %d WhatsApp number(s) resumed", self.webhooks.url, len(resumed))

    async def stop(self) -> None:
        """Finish in-flight work, then close everything this runtime opened."""
        if not self._started:
            if self.ownership is not None:  # a linking-only process (numbers link): give its number back
                await self.ownership.stop()
            await self.http.aclose()
            return
        self._started = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.stop_deadline
        await self.webhooks.stop()  # nothing new is accepted (HighLevel retries what it could not deliver)
        if self.relay is not None:
            await self.relay.stop()
        # jobs in flight first (they may still be sending on a number), then every number at once
        grace = min(self.options.runner.stop_grace_seconds, deadline - loop.time() - 1.0)
        await asyncio.gather(self.runner.stop(grace=max(0.0, grace)), self.history_runner.stop(grace=max(0.0, grace)))
        if self.ownership is not None:
            await self.ownership.stop()  # disconnect, then release every number for the other workers
        await self.sessions.close(within=max(0.5, deadline - loop.time()))
        await self.http.aclose()
        log.info("bridge stopped")
