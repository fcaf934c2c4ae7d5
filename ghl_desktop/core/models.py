"""Domain records shared by every layer. Frozen dataclasses; storage maps them to tables.

Timestamps are timezone-aware UTC ``datetime`` objects everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


class LocationState(StrEnum):
    """Where one connected HighLevel sub-account stands."""

    CONNECTED = "connected"  # tokens valid (or refreshable); traffic flows
    NEEDS_RECONNECT = "needs_reconnect"  # refresh token rejected (invalid_grant): user must reconnect
    UNINSTALLED = "uninstalled"  # the app was uninstalled from this location in HighLevel


class SessionState(StrEnum):
    """Where one linked WhatsApp number stands; the UI and the tray read only this."""

    WAITING_FOR_SCAN = "waiting_for_scan"  # QR shown (or pairing code issued), rotating until scanned/timeout
    CONNECTING = "connecting"  # dialling WhatsApp for a paired number
    CONNECTED = "connected"  # bridging messages
    RECONNECTING = "reconnecting"  # dropped; retrying by itself with capped backoff
    PHONE_OFFLINE = "phone_offline"  # linked, but keep-alives to the phone time out
    LOGGED_OUT = "logged_out"  # unlinked on the phone: the user must pair again (final)
    TEMPORARILY_BANNED = "temporarily_banned"  # WhatsApp banned the number until an expiry (final until then)
    REPLACED = "replaced"  # another client took over this session (stream replaced; final)
    CLIENT_OUTDATED = "client_outdated"  # WhatsApp refuses this engine version: update the app (final)
    FAILED = "failed"  # could not start at all (bad store, pairing timed out); details in ``detail``

    @property
    def is_final(self) -> bool:
        """Final states never reconnect by themselves."""
        return self in _FINAL_STATES

    @property
    def is_healthy(self) -> bool:
        return self is SessionState.CONNECTED


_FINAL_STATES = frozenset(
    {
        SessionState.LOGGED_OUT,
        SessionState.TEMPORARILY_BANNED,
        SessionState.REPLACED,
        SessionState.CLIENT_OUTDATED,
        SessionState.FAILED,
    }
)

_ANY_LIVE = frozenset(
    {
        SessionState.CONNECTING,
        SessionState.CONNECTED,
        SessionState.RECONNECTING,
        SessionState.PHONE_OFFLINE,
    }
)

#: From a final state: try again, pair again, or the user logs the number out.
_RESTARTABLE = frozenset({SessionState.CONNECTING, SessionState.WAITING_FOR_SCAN, SessionState.LOGGED_OUT})

#: Allowed transitions. A restart from a final state goes through WAITING_FOR_SCAN (re-pair) or
#: CONNECTING (user pressed "retry", e.g. after a ban expired).
SESSION_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.WAITING_FOR_SCAN: frozenset(
        {SessionState.WAITING_FOR_SCAN, SessionState.CONNECTING, SessionState.CONNECTED, SessionState.FAILED,
         SessionState.RECONNECTING, SessionState.CLIENT_OUTDATED, SessionState.TEMPORARILY_BANNED}
    ),
    SessionState.CONNECTING: frozenset(_FINAL_STATES | _ANY_LIVE | {SessionState.WAITING_FOR_SCAN}),
    SessionState.CONNECTED: frozenset(_FINAL_STATES | _ANY_LIVE),
    SessionState.RECONNECTING: frozenset(_FINAL_STATES | _ANY_LIVE | {SessionState.WAITING_FOR_SCAN}),
    SessionState.PHONE_OFFLINE: frozenset(_FINAL_STATES | _ANY_LIVE),
    SessionState.LOGGED_OUT: frozenset({SessionState.WAITING_FOR_SCAN}),
    SessionState.TEMPORARILY_BANNED: _RESTARTABLE,
    SessionState.REPLACED: _RESTARTABLE,
    SessionState.CLIENT_OUTDATED: _RESTARTABLE,
    SessionState.FAILED: _RESTARTABLE,
}


def can_transition(old: SessionState, new: SessionState) -> bool:
    return new in SESSION_TRANSITIONS[old]


class Direction(StrEnum):
    INBOUND = "inbound"  # customer -> WhatsApp -> HighLevel
    OUTBOUND = "outbound"  # HighLevel agent (or the phone itself) -> WhatsApp


class MessageKind(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    VOICE = "voice"  # push-to-talk voice note
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACT = "contact"
    REACTION = "reaction"
    EDIT = "edit"
    REVOKE = "revoke"
    POLL = "poll"  # poll creation: IncomingMessage.poll_name / poll_options
    POLL_VOTE = "poll_vote"  # a vote: target_id = the poll's message id, poll_selected = option names
    UNSUPPORTED = "unsupported"


class MessageStatus(StrEnum):
    """Lifecycle of one message as the user sees it; never set ahead of the real event."""

    RECEIVED = "received"  # inbound stored, not yet in HighLevel
    PENDING = "pending"  # outbound stored, not yet handed to WhatsApp
    SENT = "sent"  # WhatsApp accepted it (server ack) / inbound posted to HighLevel
    DELIVERED = "delivered"  # delivery receipt from the recipient's phone
    READ = "read"  # read receipt
    PLAYED = "played"  # voice note played
    FAILED = "failed"  # permanent failure; ``error`` says why

    @property
    def rank(self) -> int:
        return _STATUS_RANK[self]


_STATUS_RANK = {
    MessageStatus.RECEIVED: 0,
    MessageStatus.PENDING: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.READ: 3,
    MessageStatus.PLAYED: 4,
    MessageStatus.FAILED: 5,
}


#: A job held up by something only a person or time fixes (its HighLevel location needs reconnecting or
#: was uninstalled, its WhatsApp number is banned) keeps ``last_error = WAITING_PREFIX + reason`` while it
#: waits: the health rows and the message log read the reason (``Job.waiting_reason``), and such jobs do
#: not count toward the webhook backlog that answers HighLevel 429 (``JobQueue.count_backlog``).
WAITING_PREFIX = "waiting: "


class JobState(StrEnum):
    PENDING = "pending"  # waiting for ``next_attempt_at``
    RUNNING = "running"  # leased by a worker until ``lease_until``
    DONE = "done"
    DEAD = "dead"  # gave up after max attempts or a permanent error; ``last_error`` says why


@dataclass(frozen=True, slots=True)
class Location:
    """A HighLevel sub-account connected through the app. Tokens live in the SecretStore only."""

    id: str
    name: str
    company_id: str | None = None
    provider_id: str | None = None
    state: LocationState = LocationState.CONNECTED
    token_expires_at: datetime | None = None
    installed_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class WhatsAppSession:
    """One linked (or being-linked) WhatsApp number, bound to one location."""

    id: str
    location_id: str
    state: SessionState
    store_path: str
    phone: str | None = None  # E.164 of the linked number, once paired
    jid: str | None = None
    detail: str | None = None  # human-readable reason for the current state
    state_until: datetime | None = None  # e.g. ban expiry
    proxy: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class ContactLink:
    """Who a WhatsApp chat partner is in HighLevel, per location."""

    location_id: str
    phone: str | None  # E.164, None when only a LID is known (never invented)
    wa_jid: str | None = None
    wa_lid: str | None = None
    ghl_contact_id: str | None = None
    ghl_conversation_id: str | None = None
    name: str | None = None
    is_group: bool = False
    on_whatsapp: bool | None = None  # cached is-on-WhatsApp answer
    id: int | None = None
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Message:
    """One message crossing the bridge, in either direction.

    Uniqueness: (session_id, wa_message_id) and (location_id, ghl_message_id) are unique where set,
    which makes a duplicate row impossible whatever the retry path."""

    location_id: str
    direction: Direction
    kind: MessageKind
    chat_jid: str
    session_id: str | None = None
    wa_message_id: str | None = None
    ghl_message_id: str | None = None
    sender_jid: str | None = None
    body: str | None = None
    media_ref: str | None = None  # path/URL of media, never the bytes
    media_mime: str | None = None
    media_name: str | None = None
    media_size: int | None = None
    quoted_wa_id: str | None = None
    from_me: bool = False
    status: MessageStatus = MessageStatus.RECEIVED
    error: str | None = None
    sent_at: datetime | None = None  # the timestamp WhatsApp / HighLevel gave
    id: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue. ``dedupe_key`` makes enqueueing the same work twice a no-op;
    jobs sharing an ``ordering_key`` run strictly one after another, oldest first."""

    kind: str
    payload: dict[str, Any]
    dedupe_key: str | None = None
    ordering_key: str | None = None
    run_at: datetime | None = None
    #: the WhatsApp number (session id) whose connection this job needs: in a cluster only the worker
    #: holding that number leases it (services/ownership.py); None: any worker
    route: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    state: JobState
    attempts: int
    next_attempt_at: datetime
    dedupe_key: str | None = None
    ordering_key: str | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    route: str | None = None  # see NewJob.route

    @property
    def waiting_reason(self) -> str | None:
        """Why this pending job is held up (a location to reconnect, a banned number), else None."""
        if self.state is not JobState.PENDING or not self.last_error:
            return None
        if not self.last_error.startswith(WAITING_PREFIX):
            return None
        return self.last_error[len(WAITING_PREFIX):]
