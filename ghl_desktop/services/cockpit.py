"""The one UI-facing service API: what the window reads and does, Qt-free.

Widgets call only this (and listen to :class:`~ghl_desktop.ui.bridge.ServiceBridge`): they never
touch ``app.db`` or the repositories, and never decode job payloads. One :class:`Cockpit` is built
per window from the :class:`~ghl_desktop.app.App` and, when the bridge runs in that window, the
:class:`~ghl_desktop.runtime.BridgeRuntime`. Without a runtime (the bare shell in tests) the reads
work and every action raises :class:`NoRuntime` with a sentence saying why.

Reads: :meth:`locations`, :meth:`numbers`, :meth:`status`, :meth:`snapshot` (one computed health
per number and location, from ``cockpit.health`` — the HealthMonitor — when there is one, else
derived here from the stored states so the rows are never a stale green "Connected").

Actions (async): :meth:`connect_location` (probes HighLevel first: an unreachable network is a
readable error in seconds, not a 300 s wait), :meth:`cancel_connect`, :meth:`reconnect_location`,
:meth:`link_number`, :meth:`pair_number`, :meth:`cancel_link`, :meth:`logout`, :meth:`remove`,
:meth:`retry_number`, :meth:`link_again`.

``cockpit.log`` is the message log service and ``cockpit.health`` the health monitor; both are
built here (one place) when their modules exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ghl_desktop.core.errors import GhlDesktopError
from ghl_desktop.core.models import Location, LocationState, SessionState, WhatsAppSession
from ghl_desktop.services.health import (
    OK,
    Health,
    HealthAction,
    HealthLevel,
    HealthSnapshot,
    LocationHealth,
    NumberHealth,
)

if TYPE_CHECKING:
    from ghl_desktop.app import App
    from ghl_desktop.runtime import BridgeRuntime

log = logging.getLogger("ghl.cockpit")

#: how long the reachability probe before a real-mode Connect waits for HighLevel
PROBE_TIMEOUT_SECONDS = 5.0
#: pending jobs looked at to count what waits per location (the rest is "many")
WAITING_SCAN_LIMIT = 5000

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


def _local(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone().strftime("%a %d %b %H:%M")


def ban_text(until: datetime | None) -> str:
    """The ban sentence the row and the notice share: until when (LOCAL time) and what to do."""
    when = f" until {_local(until)} (your time)" if until is not None else ""
    return (f"WhatsApp temporarily banned this number{when}. Do not link it elsewhere meanwhile; "
            "press Retry after that time — sending less often avoids another ban.")


def waiting_suffix(waiting: int) -> str:
    return f" — {waiting} waiting" if waiting else ""


def number_health(session: WhatsAppSession, location: Location | None, waiting: int = 0) -> Health:
    """One number's health derived from the stored states (used until/unless a HealthMonitor runs).

    A number whose location cannot take messages is not "ok", however well WhatsApp is connected."""
    state = session.state
    if location is None or location.state is LocationState.UNINSTALLED:
        return Health(HealthLevel.NEEDS_YOU, "bridging stalled: the app was uninstalled from its location"
                      + waiting_suffix(waiting), HealthAction.RECONNECT_LOCATION)
    if location.state is LocationState.NEEDS_RECONNECT and state not in (
            SessionState.LOGGED_OUT, SessionState.WAITING_FOR_SCAN):
        return Health(HealthLevel.NEEDS_YOU, "bridging stalled: location needs reconnect" + waiting_suffix(waiting),
                      HealthAction.RECONNECT_LOCATION)
    if state is SessionState.CONNECTED:
        return OK
    if state is SessionState.TEMPORARILY_BANNED:
        return Health(HealthLevel.NEEDS_YOU, ban_text(session.state_until), HealthAction.WAIT, session.updated_at)
    if state is SessionState.LOGGED_OUT:
        return Health(HealthLevel.NEEDS_YOU, "Logged out — link the number again to resume bridging",
                      HealthAction.LINK_AGAIN, session.updated_at)
    if state is SessionState.REPLACED:
        return Health(HealthLevel.NEEDS_YOU, "Another WhatsApp client took over this number — Retry takes it back",
                      HealthAction.RETRY_NUMBER, session.updated_at)
    if state is SessionState.CLIENT_OUTDATED:
        return Health(HealthLevel.NEEDS_YOU, "WhatsApp refuses this app version — update ghl-desktop",
                      HealthAction.UPDATE_APP, session.updated_at)
    if state is SessionState.FAILED:
        action = HealthAction.RETRY_NUMBER if session.jid else HealthAction.LINK_AGAIN
        return Health(HealthLevel.NEEDS_YOU, session.detail or "Failed", action, session.updated_at)
    if state is SessionState.WAITING_FOR_SCAN:
        return Health(HealthLevel.DEGRADED, "Waiting for the QR code to be scanned", None, session.updated_at)
    return Health(HealthLevel.DEGRADED, (session.detail or str(state)) + waiting_suffix(waiting),
                  HealthAction.WAIT, session.updated_at)


def location_health(location: Location, waiting: int = 0) -> Health:
    if location.state is LocationState.NEEDS_RECONNECT:
        return Health(HealthLevel.NEEDS_YOU, "HighLevel refused the saved sign-in: reconnect this location"
                      + waiting_suffix(waiting), HealthAction.RECONNECT_LOCATION, location.updated_at)
    if location.state is LocationState.UNINSTALLED:
        return Health(HealthLevel.NEEDS_YOU, "The app was uninstalled from this location: connect it again"
                      + waiting_suffix(waiting), HealthAction.RECONNECT_LOCATION, location.updated_at)
    return OK


class Cockpit:
    def __init__(self, app: App, runtime: BridgeRuntime | None = None, *,
                 probe_timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.runtime = runtime
        self.probe_timeout = probe_timeout
        self._connect_task: asyncio.Task[list[Location]] | None = None
        #: H2's MessageLogService and H1's HealthMonitor, built here once their modules exist
        self.log: Any = self._build_log()
        self.health: Any = self._build_health()

    def _build_log(self) -> Any:
        try:
            from ghl_desktop.services.message_log import MessageLogService  # type: ignore[import-not-found]
        except ImportError:
            return None
        return MessageLogService.for_app(self.app, self.runtime) if hasattr(MessageLogService, "for_app") \
            else None

    def _build_health(self) -> Any:
        return None

    # -- reads --

    @property
    def available(self) -> bool:
        """The actions work (a bridge runs in this window)."""
        return self.runtime is not None and not self.app.closed

    @property
    def sandbox(self) -> bool:
        return self.app.sandbox

    def locations(self) -> list[Location]:
        return [] if self.app.closed else self.app.db.locations.list()

    def numbers(self) -> list[WhatsAppSession]:
        return [] if self.app.closed else self.app.db.sessions.list()

    def number(self, session_id: str) -> WhatsAppSession | None:
        return None if self.app.closed else self.app.db.sessions.get(session_id)

    def location_names(self) -> dict[str, str]:
        return {loc.id: loc.name for loc in self.locations()}

    def linkable_locations(self) -> list[Location]:
        """Locations a new number can bridge to (connected ones)."""
        return [loc for loc in self.locations() if loc.state is LocationState.CONNECTED]

    def snapshot(self) -> HealthSnapshot:
        """One health per number and location (the HealthMonitor's when it runs)."""
        monitor = self.health
        if monitor is not None:
            current = getattr(monitor, "snapshot", None)
            value = current() if callable(current) else current
            if isinstance(value, HealthSnapshot):
                return value
        return self.derived_snapshot()

    def derived_snapshot(self) -> HealthSnapshot:
        locations = self.locations()
        by_id = {loc.id: loc for loc in locations}
        sessions = self.numbers()
        waiting = self._waiting_by_location(sessions)
        numbers = tuple(
            NumberHealth(s.id, s.phone, s.location_id,
                         number_health(s, by_id.get(s.location_id), waiting.get(s.location_id, 0)),
                         waiting.get(s.location_id, 0))
            for s in sessions)
        locs = tuple(LocationHealth(loc.id, loc.name, location_health(loc, waiting.get(loc.id, 0)),
                                    waiting.get(loc.id, 0)) for loc in locations)
        failed = 0 if self.app.closed else self.app.db.jobs.count("dead")
        return HealthSnapshot(numbers=numbers, locations=locs, failed_messages=failed, taken_at=datetime.now(UTC))

    def _waiting_by_location(self, sessions: list[WhatsAppSession]) -> dict[str, int]:
        """Pending work per location: WhatsApp → HighLevel jobs name their session, the others the location."""
        if self.app.closed:
            return {}
        location_of = {s.id: s.location_id for s in sessions}
        counts: dict[str, int] = {}
        for job in self.app.db.jobs.list("pending", limit=WAITING_SCAN_LIMIT):
            payload = job.payload
            event = payload.get("event") if isinstance(payload.get("event"), dict) else payload
            location = (location_of.get(str(payload.get("session_id"))) or payload.get("location_id")
                        or (event.get("locationId") if isinstance(event, dict) else None))
            if location:
                counts[str(location)] = counts.get(str(location), 0) + 1
        return counts

    def status(self) -> CockpitStatus:
        status = self.app.status()
        snapshot = self.snapshot()
        needs = sum(1 for n in snapshot.numbers if n.health.level is HealthLevel.NEEDS_YOU)
        needs += sum(1 for loc in snapshot.locations if loc.health.level is HealthLevel.NEEDS_YOU)
        return CockpitStatus(
            sandbox=status.sandbox, secret_store=status.secret_store, database=status.database,
            locations=status.locations, numbers=status.sessions, pending_jobs=status.pending_jobs,
            failed_messages=snapshot.failed_messages, needs_you=needs,
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


__all__ = [
    "NO_RUNTIME",
    "Cockpit",
    "CockpitStatus",
    "HighLevelUnreachable",
    "NoRuntime",
    "ban_text",
    "location_health",
    "number_health",
]
