"""One computed health per WhatsApp number and per HighLevel location — Qt-free.

The window's rows, the tray icon/tooltip/menu and the desktop notifications all read the same
:class:`HealthSnapshot`; nothing else decides whether something is "ok".

Levels (worst wins): ``ok`` < ``degraded`` (it heals by itself, or it is only slower) <
``needs_you`` (nothing moves until a person acts). Each non-ok health carries one readable
sentence (``reason``) and what to do (``action``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any, Protocol, TypeAlias

from ghl_desktop.core import jobs
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import Location, LocationState, SessionState, WhatsAppSession, utcnow
from ghl_desktop.core.storage_health import StorageProblem, StorageRecovered

log = logging.getLogger("ghl.health")


#: what one refresh reads: locations, sessions, and (inbound per session, outbound per location, failed)
_Reads: TypeAlias = "tuple[list[Location], list[WhatsAppSession], tuple[dict[str, int], dict[str, int], int]]"


class HealthLevel(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    NEEDS_YOU = "needs_you"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @staticmethod
    def worst_of(levels: list[HealthLevel] | tuple[HealthLevel, ...]) -> HealthLevel:
        worst = HealthLevel.OK
        for level in levels:
            if level.rank > worst.rank:
                worst = level
        return worst


_RANK = {HealthLevel.OK: 0, HealthLevel.DEGRADED: 1, HealthLevel.NEEDS_YOU: 2}


class HealthAction(StrEnum):
    """What the row's button / the tray entry offers for a non-ok health."""

    RECONNECT_LOCATION = "reconnect_location"  # HighLevel refused the sign-in, or the app was uninstalled
    LINK_AGAIN = "link_again"  # logged out on the phone: pair again
    RETRY_NUMBER = "retry_number"  # replaced / failed / ban over: take the number back
    WAIT = "wait"  # banned until …, or reconnecting by itself
    RETRY_FAILED = "retry_failed"  # messages gave up: retry the dead letters
    UPDATE_APP = "update_app"  # WhatsApp refuses this app version
    RESUME = "resume"  # bridging was paused by the user
    RELAY_TOKEN = "relay_token"  # the relay refused this computer's token: paste a new one in Settings

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    HealthAction.RECONNECT_LOCATION: "Reconnect",
    HealthAction.LINK_AGAIN: "Link again",
    HealthAction.RETRY_NUMBER: "Retry",
    HealthAction.WAIT: "Wait",
    HealthAction.RETRY_FAILED: "Retry failed messages",
    HealthAction.UPDATE_APP: "Update ghl-desktop",
    HealthAction.RESUME: "Resume bridging",
    HealthAction.RELAY_TOKEN: "Open Settings",
}


@dataclass(frozen=True, slots=True)
class Health:
    level: HealthLevel = HealthLevel.OK
    reason: str = ""  # one readable sentence; "" when ok
    action: HealthAction | None = None
    since: datetime | None = None  # when this condition began (UTC), None when unknown / ok

    @property
    def ok(self) -> bool:
        return self.level is HealthLevel.OK


OK = Health()


@dataclass(frozen=True, slots=True)
class NumberHealth:
    session_id: str
    phone: str | None
    location_id: str
    health: Health
    waiting: int = 0  # messages queued for this number (not yet delivered)

    @property
    def label(self) -> str:
        return self.phone or "New number"


@dataclass(frozen=True, slots=True)
class LocationHealth:
    location_id: str
    name: str
    health: Health
    waiting: int = 0  # messages queued for this location (both directions)


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    numbers: tuple[NumberHealth, ...] = ()
    locations: tuple[LocationHealth, ...] = ()
    failed_messages: int = 0  # dead-lettered messages waiting for a person
    paused: bool = False  # bridging paused by the user (no new jobs leased)
    #: the link to ghl-relay (None in direct mode / not known yet)
    relay: Health | None = None
    #: the local database cannot be written (disk full…): nothing new is stored until it clears
    storage: Health | None = None
    taken_at: datetime | None = field(default=None, compare=False)

    @property
    def worst(self) -> HealthLevel:
        levels = [n.health.level for n in self.numbers] + [loc.health.level for loc in self.locations]
        if self.relay is not None:
            levels.append(self.relay.level)
        if self.storage is not None:
            levels.append(self.storage.level)
        if self.failed_messages:
            levels.append(HealthLevel.DEGRADED)
        if self.paused:
            levels.append(HealthLevel.DEGRADED)
        return HealthLevel.worst_of(levels)

    @property
    def down_numbers(self) -> tuple[NumberHealth, ...]:
        return tuple(n for n in self.numbers if not n.health.ok)

    @property
    def attention(self) -> tuple[NumberHealth | LocationHealth, ...]:
        """What needs a look, worst first (numbers before locations at the same level)."""
        items: list[NumberHealth | LocationHealth] = [*self.down_numbers]
        items += [loc for loc in self.locations if not loc.health.ok]
        return tuple(sorted(items, key=lambda item: -item.health.level.rank))

    def summary(self) -> str:
        """``"5 numbers · 1 down · 2 messages failed"`` (the tray's tooltip)."""
        count = len(self.numbers)
        parts = [f"{count} number{'s' if count != 1 else ''}"]
        down = len(self.down_numbers)
        if down:
            parts.append(f"{down} down")
        locations_down = sum(1 for loc in self.locations if not loc.health.ok)
        if locations_down:
            plural = locations_down != 1
            parts.append(f"{locations_down} location{'s' if plural else ''} need{'' if plural else 's'} you")
        if self.failed_messages:
            parts.append(f"{self.failed_messages} message{'s' if self.failed_messages != 1 else ''} failed")
        if self.relay is not None and not self.relay.ok:
            parts.append("relay down")
        if self.storage is not None and not self.storage.ok:
            parts.append("disk full" if "disk full" in self.storage.reason.lower() else "storage failing")
        if self.paused:
            parts.append("paused")
        return " · ".join(parts)

    def number(self, session_id: str) -> NumberHealth | None:
        return next((n for n in self.numbers if n.session_id == session_id), None)

    def location(self, location_id: str) -> LocationHealth | None:
        return next((loc for loc in self.locations if loc.location_id == location_id), None)


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """Published on the EventBus whenever the snapshot differs from the previous one."""

    snapshot: HealthSnapshot


@dataclass(frozen=True, slots=True)
class NoticeRequested:
    """A desktop notification to show (already debounced: grace period, once per condition)."""

    key: str  # the condition ("session:<id>:logged_out", …); the same key is never sent twice until it clears
    title: str
    text: str
    level: HealthLevel
    session_id: str | None = None
    location_id: str | None = None


# --- the monitor ---------------------------------------------------------------------------------

#: bus events re-compute the health at most this often (bursts of messages are coalesced)
EVENT_COALESCE_SECONDS = 0.5

#: the job kinds that carry one message each (services.bridge's INBOUND / OUTBOUND)
INBOUND_KIND = jobs.INBOUND
OUTBOUND_KIND = jobs.OUTBOUND

#: states a number leaves and comes back from by itself: notified only after the grace period
_TRANSIENT = frozenset({SessionState.RECONNECTING, SessionState.PHONE_OFFLINE, SessionState.CONNECTING})


class LocationSource(Protocol):
    def list(self) -> list[Location]: ...


class SessionSource(Protocol):
    def list(self, location_id: str | None = None) -> list[WhatsAppSession]: ...


class WorkCounts(Protocol):
    """The job queue, as far as health needs it (read-only counts)."""

    def count_by_payload(self, kind: str, path: Sequence[str], states: Sequence[str] = ...) -> dict[str, int]: ...


class Pausable(Protocol):
    def pause(self) -> None: ...
    def resume(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Condition:
    """One thing that may deserve a notice; ``key`` identifies it until it clears."""

    key: str
    title: str
    text: str
    level: HealthLevel
    transient: bool
    session_id: str | None = None
    location_id: str | None = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _waiting(n: int) -> str:
    """The rows' compact suffix: `` — 3 waiting``."""
    return f" — {n} waiting" if n else ""


def _waiting_long(n: int) -> str:
    """The notices' suffix: `` — 3 messages waiting``."""
    return f" — {_plural(n, 'message')} waiting" if n else ""


def ban_text(until: datetime | None, tz: tzinfo | None = None) -> str:
    """The ban sentence the row and the notice share: until when (LOCAL time) and what to do."""
    when = f" until {until.astimezone(tz):%a %d %b %H:%M} (your time)" if until is not None else ""
    return (f"WhatsApp temporarily banned this number{when}. Do not link it elsewhere meanwhile; "
            "press Retry after that time — sending less often avoids another ban.")


def format_local(moment: datetime, now: datetime, tz: tzinfo | None = None) -> str:
    """``14:05`` today, ``Fri 4 Dec 14:05`` otherwise — in the user's time zone (``tz``; None: local)."""
    local = moment.astimezone(tz)
    today = now.astimezone(tz).date()
    clock = f"{local:%H:%M}"
    if local.date() == today:
        return f"{clock} today"
    if local.date() == today + timedelta(days=1):
        return f"{clock} tomorrow"
    return f"{local:%a} {local.day} {local:%b} {clock}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)} s"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class HealthMonitor:
    """Computes the :class:`HealthSnapshot` from the stored sessions, locations and queued work, and
    turns conditions into debounced :class:`NoticeRequested` events.

    Debounce: a transient drop (reconnecting, phone offline, relay reconnecting) is notified only
    once it has lasted ``grace_seconds``; a state that needs a person is notified at once; one
    condition (its ``key``) is notified once, and again only after it cleared.

    Qt-free and clock-injected: tests call :meth:`refresh` after moving the clock. In the app,
    :meth:`start` subscribes to the bus and keeps a timer for the grace periods.
    """

    def __init__(
        self,
        *,
        locations: LocationSource,
        sessions: SessionSource,
        jobs: WorkCounts | None = None,
        bus: EventBus | None = None,
        grace_seconds: float = 60.0,
        clock: Callable[[], datetime] = utcnow,
        tz: tzinfo | None = None,
        pausable: Pausable | None = None,
        poll_seconds: float = 10.0,
        closed: Callable[[], bool] | None = None,
        offload: Callable[[Callable[[], _Reads]], Awaitable[_Reads]] | None = None,
    ) -> None:
        self._locations = locations
        self._sessions = sessions
        self._jobs = jobs
        self._bus = bus
        self.grace_seconds = max(0.0, grace_seconds)
        self._clock = clock
        self._tz = tz
        self._pausable = pausable
        self._poll_seconds = poll_seconds
        self._closed = closed or (lambda: False)
        #: runs the refresh's reads off the loop (the app's storage executor: ``db.aio.run``); the
        #: refreshes the bus and the poll trigger then never query the database on the loop thread
        self._offload = offload
        self._in_flight: asyncio.Task[None] | None = None
        self._again = False
        self._paused = False
        self._relay_state: str | None = None
        self._relay_detail: str | None = None
        self._relay_was_connected = False
        self._storage_problem: str | None = None
        self._first_seen: dict[str, datetime] = {}
        self._seen: set[str] = set()
        self._lock = threading.RLock()
        self._notified: set[str] = set()
        self._snapshot = HealthSnapshot()
        self._unsubscribe: list[Callable[[], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.TimerHandle | None = None
        self._last_refresh = float("-inf")
        #: the latest refresh's reads: an input outside the database (Pause, relay, storage) re-computes
        #: from them at once, on the loop, while a refresh with fresh reads runs off it
        self._last_reads: _Reads | None = None
        #: how many times the health was computed (a burst of events must not mean a burst of queries)
        self.refreshes = 0
        self._poll: asyncio.Task[None] | None = None
        #: every notice requested so far (the window's history, tests)
        self.notices: list[NoticeRequested] = []

    @classmethod
    def for_app(cls, app: Any, runtime: Any | None = None) -> HealthMonitor:
        """The monitor of one window: the app's repositories, bus and grace setting; the runtime's job
        runner is what Pause stops. Started (subscribed to the bus) already."""
        runner = getattr(runtime, "runner", None) if runtime is not None else None
        monitor = cls(
            locations=app.db.locations, sessions=app.db.sessions, jobs=app.db.jobs, bus=app.bus,
            grace_seconds=float(app.settings.notify_grace_seconds), pausable=runner,
            closed=lambda: bool(app.closed), offload=app.db.aio.run,
        )
        monitor.start()
        return monitor

    # --- reads ---------------------------------------------------------------------------------

    @property
    def snapshot(self) -> HealthSnapshot:
        """The health now (re-computed: a few small queries). Hot paths use :attr:`last` or the
        ``HealthChanged`` event's snapshot instead."""
        return self.refresh()

    @property
    def last(self) -> HealthSnapshot:
        """The snapshot of the latest refresh, without touching the database."""
        return self._snapshot

    @property
    def paused(self) -> bool:
        return self._paused

    # --- bridging pause ------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop leasing new work (jobs in flight finish); health says "paused"."""
        if self._paused:
            return
        self._paused = True
        if self._pausable is not None:
            self._pausable.pause()
        log.info("bridging paused by the user")
        self._changed()

    def resume(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._pausable is not None:
            self._pausable.resume()
        log.info("bridging resumed")
        self._changed()

    # --- inputs that are not in the database ---------------------------------------------------

    def set_relay_state(self, state: str | None, detail: str | None = None) -> None:
        """The relay link's state (relay.client.RelayLinkState value), None in direct mode."""
        self._relay_state = str(state) if state is not None else None
        self._relay_detail = detail
        if self._relay_state == "connected":
            self._relay_was_connected = True
        self._changed()

    def set_storage_problem(self, text: str | None) -> None:
        """Durable writes fail (``text`` says why, e.g. disk full), or work again (None)."""
        self._storage_problem = text
        self._changed()

    def _changed(self) -> None:
        """An input that is not in the database changed: re-compute, with the reads off the loop thread
        when the monitor runs on a loop with an ``offload`` (the tray's Pause, relay and storage events)."""
        if self._offload is not None and _loop_running() and self._unsubscribe:
            if self._last_reads is not None:  # shown at once (e.g. "paused"), from the latest reads
                with self._lock:
                    self._refresh(self._last_reads)
            self._refresh_soon()
        else:
            self.refresh()

    # --- wiring --------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the bus (any change re-computes, coalesced), poll the counts now and then."""
        if self._bus is not None and not self._unsubscribe:
            from ghl_desktop.relay.client import RelayStateChanged

            def relay(event: RelayStateChanged) -> None:
                self.set_relay_state(event.state.value, event.detail)

            self._unsubscribe.append(self._bus.subscribe(RelayStateChanged, relay))
            self._unsubscribe.append(self._bus.subscribe(
                StorageProblem, lambda event: self.set_storage_problem(event.text)))
            self._unsubscribe.append(self._bus.subscribe(
                StorageRecovered, lambda _event: self.set_storage_problem(None)))
            self._unsubscribe.append(self._bus.subscribe(object, self._on_event))
        if self._offload is not None and _loop_running():
            self._refresh_soon()  # the first computation's reads off the loop (a window built on it)
        else:
            self.refresh()

    def _ensure_poll(self) -> None:
        if self._poll is not None or self._poll_seconds <= 0 or not self._unsubscribe:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # started before the loop runs: the first refresh on the loop starts the poll
        self._poll = loop.create_task(self._poll_loop(), name="health-poll")

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        for handle in (self._timer, self._soon):
            if handle is not None:
                handle.cancel()
        self._timer = self._soon = None
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._in_flight is not None:
            self._in_flight.cancel()
            self._in_flight = None

    def _on_event(self, event: object) -> None:
        if isinstance(event, (HealthChanged, NoticeRequested)):
            return
        if self._soon is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.refresh()
                return
            # at most one re-computation per EVENT_COALESCE_SECONDS however many events arrive (a burst
            # of messages); the first one after a quiet spell runs on the next loop iteration
            wait = max(0.0, self._last_refresh + EVENT_COALESCE_SECONDS - loop.time())
            self._soon = loop.call_later(wait, self._refresh_soon)

    def _refresh_soon(self) -> None:
        self._soon = None
        if self._offload is None:
            self._safe_refresh()
            return
        if self._in_flight is not None and not self._in_flight.done():
            self._again = True  # one more once the running one is done
            return
        self._in_flight = asyncio.get_running_loop().create_task(self._refresh_off_loop(), name="health-refresh")

    async def _refresh_off_loop(self) -> None:
        while True:
            self._again = False
            await self._safe_refresh_async()
            if not self._again or not self._unsubscribe:
                return

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception("health refresh failed")

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            await self._safe_refresh_async()

    async def _safe_refresh_async(self) -> None:
        try:
            await self.refresh_async()
        except Exception:
            if not self._closed():  # quitting: the database closed under the refresh
                log.exception("health refresh failed")

    async def refresh_async(self) -> HealthSnapshot:
        """:meth:`refresh` with its queries run by ``offload`` (off the loop thread) when there is one."""
        if self._offload is None or self._closed():
            return self.refresh()
        reads = await self._offload(self._read)
        with self._lock:
            return self._refresh(reads)

    # --- the computation -----------------------------------------------------------------------

    def refresh(self) -> HealthSnapshot:
        """Re-compute; publish HealthChanged when it changed and NoticeRequested for what is due.

        One computation at a time (a read from another thread waits), so the debounce memory is never
        updated by two computations at once (which could make a condition look cleared)."""
        with self._lock:
            return self._refresh()

    def _read(self) -> _Reads:
        """The refresh's queries (on the storage thread when offloaded)."""
        return self._locations.list(), self._sessions.list(), self._counts()

    def _refresh(self, reads: _Reads | None = None) -> HealthSnapshot:
        if self._closed():
            self.stop()
            return self._snapshot
        self.refreshes += 1
        try:
            self._last_refresh = asyncio.get_running_loop().time()
        except RuntimeError:
            pass
        self._ensure_poll()
        now = self._clock()
        self._seen = set()
        if reads is None:
            reads = self._read()
        self._last_reads = reads
        locations, sessions, (inbound, outbound, failed) = reads
        by_location = {loc.id: loc for loc in locations}
        conditions: list[_Condition] = []

        numbers: list[NumberHealth] = []
        per_location_sessions: dict[str, list[WhatsAppSession]] = {}
        for session in sessions:
            per_location_sessions.setdefault(session.location_id, []).append(session)
        for session in sessions:
            siblings = per_location_sessions.get(session.location_id, [])
            waiting = inbound.get(session.id, 0)
            if len(siblings) == 1:  # replies for the location can only go out through this number
                waiting += outbound.get(session.location_id, 0)
            location = by_location.get(session.location_id)
            health, condition = self._number_health(session, location, waiting, now)
            numbers.append(NumberHealth(session.id, session.phone, session.location_id, health, waiting))
            if condition is not None:
                conditions.append(condition)

        location_health: list[LocationHealth] = []
        for loc in locations:
            siblings = per_location_sessions.get(loc.id, [])
            waiting = sum(inbound.get(s.id, 0) for s in siblings) + outbound.get(loc.id, 0)
            health, condition = self._location_health(loc, siblings, waiting, outbound.get(loc.id, 0), now)
            location_health.append(LocationHealth(loc.id, loc.name, health, waiting))
            if condition is not None:
                conditions.append(condition)

        relay = self._relay_health(now, conditions)
        storage = self._storage_health(now, conditions)
        if failed:
            conditions.append(_Condition(
                "failed", f"{_plural(failed, 'message')} failed",
                "They gave up after their retries. Open Dead letters in ghl-desktop to see why and retry them.",
                HealthLevel.DEGRADED, transient=False))

        due = self._debounce(conditions, now)
        # the "since" of a health is when its condition began (as this monitor saw it)
        snapshot = HealthSnapshot(
            numbers=tuple(numbers), locations=tuple(location_health), failed_messages=failed,
            paused=self._paused, relay=relay, storage=storage, taken_at=now,
        )
        changed = snapshot != self._snapshot
        self._snapshot = snapshot
        if changed:
            self._publish(HealthChanged(snapshot))
        for condition in due:
            notice = NoticeRequested(condition.key, condition.title, condition.text, condition.level,
                                     condition.session_id, condition.location_id)
            self.notices.append(notice)
            log.info("notice: %s — %s", notice.title, notice.text)
            self._publish(notice)
        self._schedule_grace(now)
        return snapshot

    def _counts(self) -> tuple[dict[str, int], dict[str, int], int]:
        if self._jobs is None:
            return {}, {}, 0
        inbound = self._jobs.count_by_payload(INBOUND_KIND, jobs.INBOUND_SESSION_PATH)
        outbound = self._jobs.count_by_payload(OUTBOUND_KIND, jobs.OUTBOUND_LOCATION_PATH)
        failed = sum(self._jobs.count_by_payload(INBOUND_KIND, jobs.INBOUND_SESSION_PATH, ("dead",)).values())
        failed += sum(self._jobs.count_by_payload(OUTBOUND_KIND, jobs.OUTBOUND_LOCATION_PATH, ("dead",)).values())
        return inbound, outbound, failed

    def _since(self, key: str, now: datetime) -> datetime:
        """When the condition ``key`` began, as this monitor saw it (kept while it lasts)."""
        self._seen.add(key)
        return self._first_seen.setdefault(key, now)

    def _number_health(
        self, session: WhatsAppSession, location: Location | None, waiting: int, now: datetime
    ) -> tuple[Health, _Condition | None]:
        who = session.phone or "A new number"
        sid, lid = session.id, session.location_id
        state = session.state
        wait, long_wait = _waiting(waiting), _waiting_long(waiting)

        def condition(kind: str, title: str, text: str, level: HealthLevel, transient: bool) -> _Condition:
            return _Condition(f"session:{sid}:{kind}", title, text, level, transient, sid, lid)

        if state in _TRANSIENT:
            key = f"session:{sid}:down"
            since = self._since(key, now)
            lasted = (now - since).total_seconds()
            lasting = f" for {_duration(lasted)}" if lasted >= 60 else ""
            if state is SessionState.PHONE_OFFLINE:
                reason = f"The phone is offline; messages wait until it is back{wait}"
                title = f"{who}: phone offline"
                text = f"The phone of {who} has been offline{lasting}; messages wait until it is back{long_wait}."
            elif state is SessionState.CONNECTING:
                reason = f"Connecting to WhatsApp…{wait}"
                title = f"{who} is not connected"
                text = f"{who} has been connecting to WhatsApp{lasting}{long_wait}; ghl-desktop keeps trying."
            else:
                detail = f" ({session.detail})" if session.detail else ""
                reason = f"Reconnecting to WhatsApp{detail}{wait}"
                title = f"{who} disconnected"
                text = (f"{who} has been reconnecting to WhatsApp{lasting}{detail}{long_wait}; "
                        "ghl-desktop keeps trying by itself.")
            health = Health(HealthLevel.DEGRADED, reason, HealthAction.WAIT, since)
            return health, condition("down", title, text, HealthLevel.DEGRADED, transient=True)

        if state is SessionState.WAITING_FOR_SCAN:
            return Health(HealthLevel.DEGRADED, "Waiting for the QR code to be scanned", None,
                          self._since(f"session:{sid}:scan", now)), None

        if state is SessionState.LOGGED_OUT:
            reason = f"Logged out — link the number again to resume bridging{wait}"
            return self._need(sid, "logged_out", now, reason, HealthAction.LINK_AGAIN), condition(
                "logged_out", f"{who} was logged out",
                f"{who} was logged out of WhatsApp on the phone. Press Link again in ghl-desktop{long_wait}.",
                HealthLevel.NEEDS_YOU, transient=False)

        if state is SessionState.TEMPORARILY_BANNED:
            until = session.state_until
            if until is not None and until <= now:
                reason = f"The WhatsApp ban ended at {format_local(until, now, self._tz)} — press Retry{wait}"
                action = HealthAction.RETRY_NUMBER
            else:
                reason = ban_text(until, self._tz)
                action = HealthAction.WAIT
            text = f"{reason.replace('this number', who, 1)}{long_wait.replace(' — ', ' ', 1)}"
            return self._need(sid, "banned", now, reason, action), condition(
                "banned", f"{who} banned by WhatsApp", text, HealthLevel.NEEDS_YOU, transient=False)

        if state is SessionState.REPLACED:
            reason = f"Another WhatsApp client took over this number — Retry takes it back{wait}"
            return self._need(sid, "replaced", now, reason, HealthAction.RETRY_NUMBER), condition(
                "replaced", f"{who} taken over",
                f"Another WhatsApp client (WhatsApp Web, another computer) took {who} over; ghl-desktop stopped "
                f"using it. Press Retry to take it back{long_wait}.", HealthLevel.NEEDS_YOU, transient=False)

        if state is SessionState.CLIENT_OUTDATED:
            reason = f"WhatsApp refuses this app version — update ghl-desktop{wait}"
            return self._need(sid, "outdated", now, reason, HealthAction.UPDATE_APP), condition(
                "outdated", "ghl-desktop needs an update",
                f"WhatsApp refuses this version of ghl-desktop for {who}: install the latest version{long_wait}.",
                HealthLevel.NEEDS_YOU, transient=False)

        if state is SessionState.FAILED and not (session.jid or session.phone):
            # a link that never finished (the code expired, the pairing was cancelled): the person is at
            # the linking screen already — shown on the row, never a desktop notice
            return Health(HealthLevel.DEGRADED, f"Linking did not finish: {session.detail or 'stopped'}",
                          HealthAction.LINK_AGAIN, self._since(f"session:{sid}:unlinked", now)), None

        if state is SessionState.FAILED:
            detail = session.detail or "it could not start"
            reason = f"Stopped: {detail} — press Retry{wait}"
            return self._need(sid, "failed", now, reason, HealthAction.RETRY_NUMBER), condition(
                "failed", f"{who} stopped", f"{who} stopped: {detail}. Press Retry in ghl-desktop{long_wait}.",
                HealthLevel.NEEDS_YOU, transient=False)

        # CONNECTED: healthy unless its HighLevel side is stalled
        if location is not None and location.state is not LocationState.CONNECTED:
            if location.state is LocationState.UNINSTALLED:
                why = "the app was uninstalled from its location"
            else:
                why = "location needs reconnect"
            # the location's own condition notifies; the number's row shows the stall and the button
            reason = f"bridging stalled: {why}{wait}"
            return self._need(sid, f"stalled:{location.state}", now, reason, HealthAction.RECONNECT_LOCATION), None
        return OK, None

    def _need(self, sid: str, kind: str, now: datetime, reason: str, action: HealthAction) -> Health:
        return Health(HealthLevel.NEEDS_YOU, reason, action, self._since(f"session:{sid}:{kind}", now))

    def _location_health(
        self, loc: Location, sessions: list[WhatsAppSession], waiting: int, replies_waiting: int, now: datetime
    ) -> tuple[Health, _Condition | None]:
        wait, long_wait = _waiting(waiting), _waiting_long(waiting)
        key = f"location:{loc.id}:{loc.state}"
        if loc.state is LocationState.NEEDS_RECONNECT:
            reason = f"HighLevel refused the saved sign-in: reconnect this location{wait}"
            return Health(HealthLevel.NEEDS_YOU, reason, HealthAction.RECONNECT_LOCATION, self._since(key, now)), \
                _Condition(key, f"{loc.name}: HighLevel needs you to reconnect",
                           f"HighLevel refused the saved sign-in for {loc.name}; bridging is stalled. "
                           f"Press Reconnect in ghl-desktop{long_wait}.", HealthLevel.NEEDS_YOU, False, None, loc.id)
        if loc.state is LocationState.UNINSTALLED:
            reason = f"The app was uninstalled from this location: connect it again{wait}"
            level = HealthLevel.NEEDS_YOU if sessions or waiting else HealthLevel.DEGRADED
            condition = _Condition(
                key, f"{loc.name}: app uninstalled in HighLevel",
                f"The app was uninstalled from {loc.name} in HighLevel; its WhatsApp numbers are not bridged. "
                f"Install it again and press Reconnect in ghl-desktop{long_wait}.", level, False, None, loc.id,
            ) if level is HealthLevel.NEEDS_YOU else None
            return Health(level, reason, HealthAction.RECONNECT_LOCATION, self._since(key, now)), condition
        live = [s for s in sessions if s.state is SessionState.CONNECTED]
        if replies_waiting and not live:
            key = f"location:{loc.id}:no_number"
            replies = "1 reply" if replies_waiting == 1 else f"{replies_waiting} replies"
            reason = f"{replies} waiting for a connected WhatsApp number"
            return Health(HealthLevel.DEGRADED, reason, HealthAction.WAIT, self._since(key, now)), None
        return OK, None

    def _relay_health(self, now: datetime, conditions: list[_Condition]) -> Health | None:
        state = self._relay_state
        if state is None or state == "stopped":
            return None
        if state == "connected":
            return OK
        if state == "unauthorized":
            reason = "The relay refused this computer's token: paste a new relay token in Settings"
            conditions.append(_Condition(
                "relay:unauthorized", "Relay refused the token",
                f"{reason}. HighLevel replies wait in the relay meanwhile.", HealthLevel.NEEDS_YOU, False))
            since = self._since("relay:unauthorized", now)
            return Health(HealthLevel.NEEDS_YOU, reason, HealthAction.RELAY_TOKEN, since)
        detail = f" ({self._relay_detail})" if self._relay_detail else ""
        reason = f"Reconnecting to the relay{detail}; HighLevel replies wait there meanwhile"
        if self._relay_was_connected:
            conditions.append(_Condition("relay:down", "Relay connection lost", reason, HealthLevel.DEGRADED, True))
        return Health(HealthLevel.DEGRADED, reason, HealthAction.WAIT, self._since("relay:down", now))

    def _storage_health(self, now: datetime, conditions: list[_Condition]) -> Health | None:
        if self._storage_problem is None:
            return None
        disk_full = "disk full" in self._storage_problem.lower() or "no space" in self._storage_problem.lower()
        reason = (f"The disk holding ghl-desktop's data is full ({self._storage_problem}): free some space — "
                  "nothing is lost, messages wait and are stored as soon as there is room"
                  if disk_full else
                  f"ghl-desktop cannot write its database ({self._storage_problem}); messages wait until it can")
        conditions.append(_Condition("storage", "Disk full" if disk_full else "Storage failing", reason,
                                     HealthLevel.NEEDS_YOU, transient=False))
        return Health(HealthLevel.NEEDS_YOU, reason, HealthAction.WAIT, self._since("storage", now))

    def _debounce(self, conditions: list[_Condition], now: datetime) -> list[_Condition]:
        present = {c.key for c in conditions}
        due: list[_Condition] = []
        for c in conditions:
            first = self._since(c.key, now)
            if c.key in self._notified:
                continue
            if c.transient and (now - first).total_seconds() < self.grace_seconds:
                continue
            self._notified.add(c.key)
            due.append(c)
        # a condition that is gone has cleared: it may notify again when it comes back
        self._notified &= present
        for key in list(self._first_seen):
            if key not in self._seen:
                del self._first_seen[key]
        return due

    def _schedule_grace(self, now: datetime) -> None:
        """Wake up when the oldest pending transient condition reaches its grace period."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = [
            first for key, first in self._first_seen.items()
            if key not in self._notified and key.endswith((":down",))
        ]
        if not pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.05, self.grace_seconds - (now - min(pending)).total_seconds() + 0.05)
        self._timer = loop.call_later(delay, self._safe_refresh)

    def _publish(self, event: object) -> None:
        if self._bus is not None:
            self._bus.publish(event)


__all__ = [
    "OK",
    "Health",
    "HealthAction",
    "HealthChanged",
    "HealthLevel",
    "HealthMonitor",
    "HealthSnapshot",
    "LocationHealth",
    "NoticeRequested",
    "NumberHealth",
    "ban_text",
    "format_local",
]
