"""The WhatsApp side in domain terms: what a transport emits and what it can be asked to do.

Two transports implement :class:`WhatsAppTransport`: the real engine (neonize, in
``adapters/whatsapp/neonize/``) and the simulated network client used by the sandbox
and the tests. Everything above them sees only these types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from ghl_desktop.core.models import MessageKind

# --- events a transport emits -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QrCode:
    """A fresh QR payload to show; it replaces the previous one (they rotate)."""

    code: str
    expires_in: float  # seconds this code stays valid


@dataclass(frozen=True, slots=True)
class PairCode:
    """A phone-number pairing code to type on the phone (alternative to the QR)."""

    code: str


@dataclass(frozen=True, slots=True)
class Paired:
    jid: str
    phone: str | None


@dataclass(frozen=True, slots=True)
class Connected:
    jid: str | None = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class LoggedOut:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StreamReplaced:
    pass


@dataclass(frozen=True, slots=True)
class TemporarilyBanned:
    code: int
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class ClientOutdated:
    pass


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    reason: str
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class KeepAliveLost:
    pass


@dataclass(frozen=True, slots=True)
class KeepAliveRestored:
    pass


@dataclass(frozen=True, slots=True)
class MediaInfo:
    mimetype: str | None = None
    file_name: str | None = None
    size: int | None = None
    seconds: int | None = None  # audio/video duration
    #: opaque handle the transport understands to download the bytes later (e.g. serialized proto)
    handle: bytes | None = None


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One normalized WhatsApp message (customer → us, or typed on the linked phone: ``from_me``)."""

    id: str
    chat: str  # chat JID (person or group)
    sender: str  # sender JID as WhatsApp gave it (may be ...@lid)
    sender_phone: str | None  # E.164 when known (SenderAlt, store, or a phone JID); never invented
    sender_lid: str | None
    push_name: str | None
    timestamp: datetime
    kind: MessageKind
    text: str | None = None  # body or caption
    media: MediaInfo | None = None
    quoted_id: str | None = None
    target_id: str | None = None  # reaction/edit/revoke: the message acted on
    reaction: str | None = None  # emoji; "" means the reaction was removed
    latitude: float | None = None
    longitude: float | None = None
    location_name: str | None = None
    vcard: str | None = None
    contact_name: str | None = None
    from_me: bool = False
    is_group: bool = False
    #: group subject when known (``chat`` is the group JID; ``sender``/``sender_phone``/``push_name``
    #: name the member who wrote)
    group_name: str | None = None
    #: POLL: the question and its option names; POLL_VOTE: the option names selected (decrypted by the
    #: engine; an empty tuple means the vote was withdrawn) and ``target_id`` = the poll's message id
    poll_name: str | None = None
    poll_options: tuple[str, ...] = ()
    poll_selected: tuple[str, ...] = ()
    #: view-once media (the media is carried once; WhatsApp will not show it again)
    view_once: bool = False
    #: sent in a chat with disappearing messages on; ``expiration`` = seconds the message lives (0/None
    #: when unknown)
    ephemeral: bool = False
    expiration: int | None = None
    #: True when this message came from a history sync (not live); see :class:`HistorySync`
    from_history: bool = False


class CallOutcome(StrEnum):
    OFFERED = "offered"  # ringing now (CallOffer); a later event for the same call_id settles it
    MISSED = "missed"  # ended without being answered (CallTerminate, reason timeout / caller hung up)
    REJECTED = "rejected"  # declined (by the phone, or by us through ``reject_call``)
    ANSWERED = "answered"  # taken on a linked device


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A WhatsApp voice/video call to the linked number. Several events per ``call_id`` (offered, then
    missed/rejected/answered); consumers carry one line per call (dedupe on ``call_id``)."""

    call_id: str
    caller: str  # caller JID as WhatsApp gave it (may be ...@lid)
    caller_phone: str | None  # E.164 when known
    video: bool
    outcome: CallOutcome
    timestamp: datetime
    is_group: bool = False
    push_name: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryChat:
    chat: str  # chat JID
    phone: str | None  # E.164 of the other side (person chats), when known
    name: str | None
    #: messages oldest first, each an IncomingMessage with ``from_history=True``, original timestamp
    #: and ``from_me`` for what the linked phone sent
    messages: tuple[IncomingMessage, ...]
    is_group: bool = False


@dataclass(frozen=True, slots=True)
class HistorySync:
    """One history-sync batch offered after linking. Batches arrive in ``chunk_order``; ``progress``
    is 0..100 when WhatsApp says it (None otherwise). Messages may overlap live ones: dedupe on id."""

    chats: tuple[HistoryChat, ...]
    sync_type: str = ""  # e.g. "INITIAL_BOOTSTRAP", "RECENT", "FULL", "ON_DEMAND"
    chunk_order: int = 0
    progress: int | None = None


class ReceiptKind(StrEnum):
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"


@dataclass(frozen=True, slots=True)
class Receipt:
    chat: str
    message_ids: tuple[str, ...]
    kind: ReceiptKind
    timestamp: datetime
    sender: str | None = None


TransportEvent = (
    QrCode
    | PairCode
    | Paired
    | Connected
    | Disconnected
    | LoggedOut
    | StreamReplaced
    | TemporarilyBanned
    | ClientOutdated
    | ConnectFailed
    | KeepAliveLost
    | KeepAliveRestored
    | IncomingMessage
    | Receipt
    | CallEvent
    | HistorySync
)

#: Called on the event loop for every event. For IncomingMessage the handler must be idempotent per
#: message id: neonize acknowledges to WhatsApp before the handler runs, so NeonizeTransport journals
#: and replays (at-least-once); the simulated transport acks only after the handler returned.
EventHandler = Callable[[TransportEvent], Awaitable[None]]


# --- what a transport can be asked to do --------------------------------------------------------


class PresenceKind(StrEnum):
    COMPOSING = "composing"
    RECORDING = "recording"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class OutgoingMedia:
    data: bytes
    mimetype: str
    file_name: str | None = None
    kind: MessageKind = MessageKind.DOCUMENT  # IMAGE, VIDEO, AUDIO, VOICE, DOCUMENT, STICKER
    caption: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class TransportOptions:
    proxy: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class WhatsAppTransport(Protocol):
    """One linked number. ``start`` connects (showing QR codes when unpaired) and returns once the
    connection attempt is under way; events arrive through the handler given at construction."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def logout(self) -> None: ...
    async def pair_phone(self, phone: str) -> str: ...
    # ``message_id``: an id chosen (and stored) by the caller before sending, so a retry after a crash
    # re-sends the SAME id and the recipient dedupes it as WhatsApp does. Engines that cannot take a
    # caller-chosen id (neonize 0.5.2) ignore it and return their own id.
    async def send_text(
        self, chat: str, text: str, *, quoted_id: str | None = None, message_id: str | None = None
    ) -> SendResult: ...
    async def send_media(
        self, chat: str, media: OutgoingMedia, *, quoted_id: str | None = None, message_id: str | None = None
    ) -> SendResult: ...
    async def send_reaction(self, chat: str, target_id: str, emoji: str, *, from_me: bool) -> SendResult: ...
    async def edit(self, chat: str, target_id: str, text: str) -> SendResult: ...
    async def revoke(self, chat: str, target_id: str) -> SendResult: ...
    async def mark_read(self, chat: str, sender: str, message_ids: list[str]) -> None: ...
    async def send_presence(self, chat: str, presence: PresenceKind) -> None: ...
    async def resolve_lid(self, lid: str) -> str | None:
        """Phone number (E.164) for a LID when the engine knows it, else None."""
        ...

    async def is_on_whatsapp(self, phone: str) -> str | None:
        """The JID for an E.164 phone number when it has WhatsApp, else None."""
        ...

    async def download(self, media: MediaInfo) -> bytes: ...
    async def reject_call(self, caller: str, call_id: str) -> None:
        """Decline a ringing call (``CallEvent.caller`` / ``call_id``)."""
        ...

    async def group_subject(self, jid: str) -> str | None:
        """A group's subject (the name its members see), or None when it has none or cannot be
        asked now (not connected, unknown group): the caller keeps its placeholder name then."""
        ...
