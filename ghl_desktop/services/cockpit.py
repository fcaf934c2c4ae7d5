"""The one UI-facing service API: what the window reads and does, Qt-free.

Widgets call only this (and listen to :class:`~ghl_desktop.ui.bridge.ServiceBridge`): they never
touch ``app.db`` or the repositories, and never decode job payloads. One :class:`Cockpit` is built
per window from the :class:`~ghl_desktop.app.App` and, when the bridge runs in that window, the
:class:`~ghl_desktop.runtime.BridgeRuntime`. Without a runtime (the bare shell in tests) the reads
work and every action raises :class:`NoRuntime` with a sentence saying why.

Reads (async: the database work runs on the storage executor, ``app.db.aio``, never on the loop
thread the window shares — docs/event-loop.md): :meth:`overview` (locations, numbers and the status
bar's counts in one hop: what the window's refresh shows), :meth:`locations`, :meth:`numbers`,
:meth:`number`, :meth:`location_names`, :meth:`linkable_locations`, :meth:`status`,
:meth:`refresh_health` (one computed health per number and location, from ``cockpit.health`` — the
HealthMonitor — so a number whose location needs reconnecting is never a green "Connected");
:meth:`snapshot` is the latest computed health, without touching the database.

Actions (async): :meth:`connect_location` (probes HighLevel first: an unreachable network is a
readable error in seconds, not a 300 s wait), :meth:`cancel_connect`, :meth:`reconnect_location`,
:meth:`link_number`, :meth:`pair_number`, :meth:`cancel_link`, :meth:`logout`, :meth:`remove`,
:meth:`retry_number`, :meth:`link_again`, :meth:`renew_code`.

``cockpit.log`` is the message log service and ``cockpit.health`` the health monitor; both are
built here (one place).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ghl_desktop.core.errors import GhlDesktopError
from ghl_desktop.core.history import HistoryProgress
from ghl_desktop.core.models import JobState, Location, LocationState, SessionState, WhatsAppSession
from ghl_desktop.core.routing import NumberRouting
from ghl_desktop.services.health import HealthLevel, HealthMonitor, HealthSnapshot
from ghl_desktop.services.message_log import MessageLogService

if TYPE_CHECKING:
    from ghl_desktop.app import App
    from ghl_desktop.runtime import BridgeRuntime

log = logging.getLogger("ghl.cockpit")

#: how long the reachability probe before a real-mode Connect waits for HighLevel
PROBE_TIMEOUT_SECONDS = 5.0

NO_RUNTIME = "Not available: the bridge is not running in this window."


class NoRuntime(GhlDesktopError):
    """An action was asked of a window without a running bridge."""


class HighLevelUnreachable(GhlDesktopError):
    """The network or HighLevel cannot be reached (probed before a sign-in starts)."""


@dataclass(frozen=True, slots=True)
class CockpitStatus:
    """What the status bar and the banners show."""

    sandbox: bool
    secret_store: str
    database: str
    locations: int
    numbers: int
    pending_jobs: int
    failed_messages: int
    needs_you: int


@dataclass(frozen=True, slots=True)
class Overview:
    """What the window shows after a refresh, read in one hop."""

    locations: list[Location]
    numbers: list[WhatsAppSession]
    status: CockpitStatus
    #: a cluster's window (PostgreSQL, issue 14): session id → the worker holding the number's lease
    #: (a number nobody holds right now is missing); None on one desktop, which holds every number
    holders: dict[str, str] | None = None

    @property
    def location_names(self) -> dict[str, str]:
        return {loc.id: loc.name for loc in self.locations}

    @property
    def linkable_locations(self) -> list[Location]:
        return [loc for loc in self.locations if loc.state is LocationState.CONNECTED]


class Cockpit:
    def __init__(self, app: App, runtime: BridgeRuntime | None = None, *,
                 probe_timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.runtime = runtime
        self.probe_timeout = probe_timeout
        self._connect_task: asyncio.Task[list[Location]] | None = None
        from ghl_desktop.app import display_database_url

        #: the status bar's database label and secret store (fixed for the app's life: no I/O per refresh)
        self._database = display_database_url(app.db.display_url)
        self._secret_store = app.secrets.description
        self._last_status: CockpitStatus | None = None
        #: H2's MessageLogService and H1's HealthMonitor, built here once their modules exist
        self.log: MessageLogService = MessageLogService.for_app(app, runtime)
        self.health: HealthMonitor = self._build_health()

    def _build_health(self) -> HealthMonitor:
        return HealthMonitor.for_app(self.app, self.runtime)

    def close(self) -> None:
        """Stop listening (the window is closing)."""
        self.health.stop()

    # -- reads --

    @property
    def available(self) -> bool:
        """The actions work (a bridge runs in this window)."""
        return self.runtime is not None and not self.app.closed

    @property
    def sandbox(self) -> bool:
        return self.app.sandbox

    async def locations(self) -> list[Location]:
        if self.app.closed:
            return []
        return await self.app.db.aio.locations.list()

    async def numbers(self) -> list[WhatsAppSession]:
        if self.app.closed:
            return []
        return await self.app.db.aio.sessions.list()

    async def number(self, session_id: str) -> WhatsAppSession | None:
        if self.app.closed:
            return None
        return await self.app.db.aio.sessions.get(session_id)

    async def location_names(self) -> dict[str, str]:
        return {loc.id: loc.name for loc in await self.locations()}

    async def linkable_locations(self) -> list[Location]:
        """Locations a new number can bridge to (connected ones)."""
        return [loc for loc in await self.locations() if loc.state is LocationState.CONNECTED]

    def snapshot(self) -> HealthSnapshot:
        """The latest computed health (the HealthMonitor's, the tray reads the same), without touching
        the database; :meth:`refresh_health` re-computes."""
        return self.health.last

    async def refresh_health(self) -> HealthSnapshot:
        """Recompute now (after a change no event announces, e.g. a poll), the reads off the loop."""
        return await self.health.refresh_async()

    def last_snapshot(self) -> HealthSnapshot:
        """The latest computed health, without touching the database."""
        return self.health.last

    def last_status(self) -> CockpitStatus:
        """The status of the latest :meth:`overview` (before any: the fixed parts — mode, secret store,
        database — and zero counts), without touching the database."""
        return self._last_status if self._last_status is not None else self._status(0, 0, 0)

    async def status(self) -> CockpitStatus:
        """The status bar's counts (one hop); "needs you" from the latest computed health."""
        return (await self.overview()).status

    async def overview(self) -> Overview:
        """Locations, numbers and the status counts, in one hop to the storage executor."""
        app = self.app
        if app.closed:
            return Overview([], [], self._status(0, 0, 0))

        def read() -> tuple[list[Location], list[WhatsAppSession], int, dict[str, str] | None]:
            db = app.db
            holders = None
            if db.engine.dialect.name == "postgresql":  # one worker of a cluster: who holds which number
                from ghl_desktop.adapters.storage.ownership import ownership_repo

                holders = ownership_repo(db).holders()
            return db.locations.list(), db.sessions.list(), db.jobs.count(JobState.PENDING.value), holders

        locations, numbers, pending, holders = await app.db.aio.run(read)
        self._last_status = self._status(len(locations), len(numbers), pending)
        return Overview(locations, numbers, self._last_status, holders)

    def _status(self, locations: int, numbers: int, pending: int) -> CockpitStatus:
        snapshot = self.health.last
        needs = sum(1 for n in snapshot.numbers if n.health.level is HealthLevel.NEEDS_YOU)
        needs += sum(1 for loc in snapshot.locations if loc.health.level is HealthLevel.NEEDS_YOU)
        app = self.app
        return CockpitStatus(
            sandbox=app.sandbox, secret_store=self._secret_store, database=self._database,
            locations=locations, numbers=numbers,
            pending_jobs=pending, failed_messages=snapshot.failed_messages, needs_you=needs,
        )

    @property
    def authorize_url(self) -> str | None:
        """The sign-in page of the Connect in progress (for a "Nothing opened?" link)."""
        return self.runtime.oauth.authorize_url if self.runtime is not None else None

    @property
    def connecting(self) -> bool:
        return self._connect_task is not None and not self._connect_task.done()

    # -- actions --

    def _require(self) -> BridgeRuntime:
        if self.runtime is None or self.app.closed:
            raise NoRuntime(NO_RUNTIME)
        return self.runtime

    async def probe_highlevel(self) -> None:
        """Can this computer reach HighLevel? Any HTTP answer counts; no answer in
        ``probe_timeout`` seconds (or no route, no DNS) is :class:`HighLevelUnreachable`."""
        import httpx

        runtime = self._require()
        settings = self.app.settings
        targets = [settings.api_base.rstrip("/") + "/oauth/token", settings.marketplace_base.rstrip("/") + "/"]

        async def one(url: str) -> None:
            host = urlsplit(url).netloc or url
            try:
                await runtime.http.get(url, timeout=self.probe_timeout)
            except httpx.TimeoutException as exc:
                raise HighLevelUnreachable(
                    f"HighLevel ({host}) did not answer within {self.probe_timeout:g} s. Check the internet "
                    "connection (or the proxy/firewall), then try again.") from exc
            except httpx.HTTPError as exc:
                reason = str(exc).strip() or type(exc).__name__
                raise HighLevelUnreachable(
                    f"HighLevel ({host}) cannot be reached: {reason}. Check the internet connection "
                    "(or the proxy/firewall), then try again.") from exc

        await asyncio.gather(*(one(url) for url in targets))

    async def connect_location(self, on_url: Callable[[str], None] | None = None) -> list[Location]:
        """The OAuth install in the browser. ``on_url`` gets the sign-in page once it is known."""
        runtime = self._require()
        if not self.app.sandbox:
            await self.probe_highlevel()
        oauth = runtime.oauth
        flow = asyncio.get_running_loop().create_task(oauth.connect(), name="oauth-connect")
        self._connect_task = flow
        shown: str | None = None
        try:
            while not flow.done():
                url = oauth.authorize_url
                if url and url != shown and on_url is not None:
                    shown = url
                    on_url(url)
                await asyncio.wait({flow}, timeout=0.1)
        except asyncio.CancelledError:
            flow.cancel()  # the connector closes its loopback listener on the way out
            await asyncio.gather(flow, return_exceptions=True)
            raise
        return flow.result()

    def cancel_connect(self) -> bool:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            return True
        return False

    async def reconnect_location(self, location_id: str, on_url: Callable[[str], None] | None = None,
                                 ) -> list[Location]:
        """Sign in again for a location whose tokens HighLevel refused (the same install flow)."""
        return await self.connect_location(on_url)

    async def link_number(self, location_id: str, pair_phone: str | None = None) -> WhatsAppSession:
        runtime = self._require()
        return await runtime.sessions.create_session(location_id, pair_phone=pair_phone)

    async def pair_number(self, session_id: str, phone: str) -> str:
        return await self._require().sessions.pair_by_phone(session_id, phone)

    async def cancel_link(self, session_id: str) -> None:
        await self._require().sessions.logout(session_id)

    async def logout(self, session_id: str) -> None:
        await self._require().sessions.logout(session_id)

    async def remove(self, session_id: str) -> None:
        await self._require().sessions.remove(session_id)

    async def retry_number(self, session_id: str) -> None:
        await self._require().sessions.retry(session_id)

    async def link_again(self, session_id: str) -> None:
        await self._require().sessions.link_again(session_id)

    async def renew_code(self, session_id: str) -> None:
        """A fresh QR code for a number being linked whose code expired (whatever its state now)."""
        sessions = self._require().sessions
        session = await self.number(session_id)
        if session is not None and session.state is SessionState.WAITING_FOR_SCAN:
            await sessions.logout(session_id)  # ends this linking attempt (its codes ran out)
        await sessions.link_again(session_id)

    # -- several numbers per location (issue 15; helper `multi`) ----------------------------------------
    # A reply goes from the number its contact last wrote to, else from the location's default number;
    # when that number is down it waits unless "fall back to another number" is on (core/routing.py).
    # Stored in the database (``location_routing``), so they work without a running bridge too.

    async def number_routing(self, location_id: str) -> NumberRouting:
        """The location's reply settings: its default number (a session id, or None) and fallback."""
        return await self.app.db.aio.routing.get(location_id)

    async def set_default_number(self, location_id: str, session_id: str | None) -> NumberRouting:
        """Make ``session_id`` (a number of this location; None: none) the default for new contacts."""
        return await self.app.db.aio.routing.set_default(location_id, session_id)

    async def set_number_fallback(self, location_id: str, fallback: bool) -> NumberRouting:
        """A reply whose number is down goes from another connected number (True) or waits (False)."""
        return await self.app.db.aio.routing.set_fallback(location_id, fallback)

    # -- end of several numbers per location ------------------------------------------------------------


    # -- history on link (issue 15; helper `history`) ------------------------------------------------------
    # The chats WhatsApp offers when a number is linked are imported into HighLevel as far back as the
    # number's history days (its own value, else the setting ``history_days``; 0: off). Progress and
    # Cancel go through the running bridge (services/bridge/history.py).

    @property
    def history_days_setting(self) -> int:
        """The app-wide ``history_days`` (a number without its own value follows it; 0: off)."""
        return int(self.app.settings.history_days)

    async def history_progress(self, session_id: str | None = None) -> list[HistoryProgress]:
        """Imported / total per number that has an import or days of its own ([] without a bridge)."""
        if self.runtime is None or self.app.closed:
            return []
        return await self.runtime.history.progress([session_id] if session_id else None)

    async def set_history_days(self, session_id: str, days: int | None) -> None:
        """The number's own history days (0..90; 0: no import for it; None: follow the setting)."""
        await self._require().history.set_days(session_id, days)

    async def cancel_history(self, session_id: str) -> int:
        """Stop the number's import; returns how many waiting messages will not be imported."""
        return await self._require().history.cancel(session_id)

    # -- end of history on link -------------------------------------------------------------------------


__all__ = [
    "NO_RUNTIME",
    "Cockpit",
    "CockpitStatus",
    "HighLevelUnreachable",
    "NoRuntime",
    "Overview",
]
