"""Several WhatsApp numbers on one HighLevel location: which number carries an agent's reply (pure).

The rule (issue 15, "several numbers per location"):

1. the number that contact last wrote to (sticky per contact: the newest inbound message of the chat
   names the number that received it; the messages are durable, so this holds through a restart);
2. else the location's default number (a setting per location, :class:`NumberRouting`);
3. else (no default chosen) any connected number of the location.

When the number chosen by 1 or 2 is not connected the reply *waits* — with a reason such as
``+15550100001 is disconnected`` that the message log shows — instead of silently switching numbers,
unless the location's "fall back to another number" setting is on: then it goes from a connected
number of that location, and the log says so.

A location with a single linked number never comes here (the bridge's one-number path is unchanged).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from ghl_desktop.core.models import Message, SessionState, WhatsAppSession


@dataclass(frozen=True, slots=True)
class NumberRouting:
    """The per-location settings of replies on a location with several numbers."""

    location_id: str
    #: the number a contact who never wrote in gets replies from (None: any connected number)
    default_session_id: str | None = None
    #: a reply whose number is down goes from another connected number instead of waiting
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """Where a reply goes: ``session`` (send now; ``note`` says why it is not the usual number), or
    ``waiting`` on ``session`` (its reason: the chosen number is down), or nothing to choose from
    (``session`` None and ``waiting`` None: no connected number at all, the caller's usual path)."""

    session: WhatsAppSession | None
    waiting: str | None = None
    note: str | None = None
    #: why this number: "sticky", "default", "any" or "fallback"
    why: str = "any"


def linked_numbers(sessions: Sequence[WhatsAppSession]) -> list[WhatsAppSession]:
    """The sessions that are numbers (paired: they have a phone); a number being linked is not one yet."""
    return [s for s in sessions if s.phone]


def number_label(session: WhatsAppSession) -> str:
    return session.phone or f"number {session.id[:8]}"


def down_words(session: WhatsAppSession) -> str:
    """``disconnected``, ``logged out — link it again``: why a number cannot send now, as the log says it."""
    state = session.state
    if state is SessionState.LOGGED_OUT:
        return "logged out — link it again"
    if state is SessionState.TEMPORARILY_BANNED:
        until = f" until {session.state_until.strftime('%Y-%m-%d %H:%M')} UTC" if session.state_until else ""
        return f"temporarily banned{until}"
    if state is SessionState.CLIENT_OUTDATED:
        return "refused by WhatsApp (update the app)"
    if state is SessionState.REPLACED:
        return "in use by another client"
    if state is SessionState.FAILED:
        return "failed to start"
    if state is SessionState.PHONE_OFFLINE:
        return "disconnected (its phone is offline)"
    return "disconnected"


def choose_number(
    numbers: Sequence[WhatsAppSession],
    live: Collection[str],
    *,
    sticky_id: str | None,
    routing: NumberRouting,
) -> RouteChoice:
    """The number of ``numbers`` (a location's linked numbers, oldest first) a reply goes from.
    ``live``: the ids of the connected ones; ``sticky_id``: the number the contact last wrote to."""
    by_id = {s.id: s for s in numbers}
    connected = [s for s in numbers if s.id in live]
    preferred: WhatsAppSession | None = None
    why = "any"
    if sticky_id is not None and sticky_id in by_id:
        preferred, why = by_id[sticky_id], "sticky"
    elif routing.default_session_id is not None and routing.default_session_id in by_id:
        preferred, why = by_id[routing.default_session_id], "default"
    if preferred is None:
        return RouteChoice(connected[0] if connected else None)
    if preferred.id in live:
        return RouteChoice(preferred, why=why)
    reason = f"{number_label(preferred)} is {down_words(preferred)}"
    others = [s for s in connected if s.id != preferred.id]
    if routing.fallback and others:
        other = others[0]
        return RouteChoice(other, note=f"sent from {number_label(other)} instead: {reason} "
                                       "(fall back to another number is on)", why="fallback")
    return RouteChoice(preferred, waiting=reason, why=why)


class RoutingRepository(Protocol):
    """The per-location reply settings and the per-contact stickiness (``adapters/storage/routing.py``)."""

    def get(self, location_id: str) -> NumberRouting: ...
    def set_default(self, location_id: str, session_id: str | None) -> NumberRouting: ...
    def set_fallback(self, location_id: str, fallback: bool) -> NumberRouting: ...
    def last_inbound_session(self, location_id: str, chats: Sequence[str],
                             session_ids: Sequence[str]) -> str | None: ...
    def assign(self, message_id: int, session_id: str, *, note: str | None,
               wa_message_id: str | None = None) -> Message: ...


class AsyncRoutingRepository(Protocol):
    """:class:`RoutingRepository` run off the loop (``db.aio.routing``)."""

    async def get(self, location_id: str) -> NumberRouting: ...
    async def set_default(self, location_id: str, session_id: str | None) -> NumberRouting: ...
    async def set_fallback(self, location_id: str, fallback: bool) -> NumberRouting: ...
    async def last_inbound_session(self, location_id: str, chats: Sequence[str],
                                   session_ids: Sequence[str]) -> str | None: ...
    async def assign(self, message_id: int, session_id: str, *, note: str | None,
                     wa_message_id: str | None = None) -> Message: ...
