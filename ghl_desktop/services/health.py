"""One computed health per WhatsApp number and per HighLevel location — Qt-free.

The window's rows, the tray icon/tooltip/menu and the desktop notifications all read the same
:class:`HealthSnapshot`; nothing else decides whether something is "ok".

Levels (worst wins): ``ok`` < ``degraded`` (it heals by itself, or it is only slower) <
``needs_you`` (nothing moves until a person acts). Each non-ok health carries one readable
sentence (``reason``) and what to do (``action``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


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
    taken_at: datetime | None = field(default=None, compare=False)

    @property
    def worst(self) -> HealthLevel:
        levels = [n.health.level for n in self.numbers] + [loc.health.level for loc in self.locations]
        if self.relay is not None:
            levels.append(self.relay.level)
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


__all__ = [
    "OK",
    "Health",
    "HealthAction",
    "HealthChanged",
    "HealthLevel",
    "HealthSnapshot",
    "LocationHealth",
    "NoticeRequested",
    "NumberHealth",
]
