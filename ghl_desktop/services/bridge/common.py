"""What the bridge's three kinds of work share: job kinds, the neighbours' protocols, the events it
publishes, its options, and ``BridgeWork`` — the state and the helpers (log a message, fail it,
enqueue a status push) every part uses."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ghl_desktop.core import jobs
from ghl_desktop.core.convert import (
    NoteOptions,
    ghl_status,
)
from ghl_desktop.core.errors import (
    MediaTooLarge,
    NotOnWhatsApp,
    SessionLoggedOut,
)
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import (
    LocationState,
    Message,
    MessageKind,
    MessageStatus,
    NewJob,
)
from ghl_desktop.core.ports import (
    ContactRepository,
    HighLevelGateway,
    JobQueue,
    LocationRepository,
    MediaFetcher,
    MessageRepository,
    SessionRepository,
)
from ghl_desktop.core.whatsapp import (
    OutgoingMedia,
    ReceiptKind,
    SendResult,
    WhatsAppTransport,
)

log = logging.getLogger("ghl.bridge")

# the job kinds (their payloads are typed in core.jobs)
INBOUND = jobs.INBOUND
OUTBOUND = jobs.OUTBOUND
STATUS = jobs.STATUS
APP_EVENT = jobs.APP_EVENT

MEDIA_KINDS = {
    MessageKind.IMAGE, MessageKind.VIDEO, MessageKind.AUDIO, MessageKind.VOICE,
    MessageKind.DOCUMENT, MessageKind.STICKER,
}
RECEIPT_STATUS = {
    ReceiptKind.DELIVERED: MessageStatus.DELIVERED,
    ReceiptKind.READ: MessageStatus.READ,
    ReceiptKind.PLAYED: MessageStatus.PLAYED,
}


# --- what the bridge needs from its neighbours ---------------------------------------------------


class SessionAccess(Protocol):
    """The sessions service, as the bridge sees it."""

    def transport_for(self, session_id: str) -> WhatsAppTransport | None:
        """The live transport of a *connected* session, else None (lookups such as is_on_whatsapp;
        never for sending: sends go through send_text / send_media, which pace them)."""
        ...

    async def send_text(self, session_id: str, chat: str, text: str, *, quoted_id: str | None = None,
                        message_id: str | None = None) -> SendResult:
        """Send in the number's pacing slot: one send at a time, the gap counted from the end of the
        previous one (services/pacing.py)."""
        ...

    async def send_media(self, session_id: str, chat: str, media: OutgoingMedia, *, quoted_id: str | None = None,
                         message_id: str | None = None) -> SendResult:
        ...


class Repositories(Protocol):
    @property
    def locations(self) -> LocationRepository: ...
    @property
    def sessions(self) -> SessionRepository: ...
    @property
    def contacts(self) -> ContactRepository: ...
    @property
    def messages(self) -> MessageRepository: ...
    @property
    def jobs(self) -> JobQueue: ...


@dataclass(frozen=True, slots=True)
class MessageLogged:
    """A message was stored or changed (the message-log panel listens)."""

    message: Message


@dataclass(frozen=True, slots=True)
class LocationsChanged:
    """HighLevel installed/uninstalled the app somewhere; the locations list should be refreshed."""

    location_id: str | None
    kind: str


@dataclass(frozen=True)
class BridgeOptions:
    notes: NoteOptions = field(default_factory=NoteOptions)
    #: WhatsApp media posted to HighLevel (the initiate/complete path allows 100 MB on WHATSAPP)
    max_inbound_media_bytes: int = 100 * 1024 * 1024
    #: agent attachments sent to WhatsApp (WhatsApp's own document limit)
    max_outbound_media_bytes: int = 100 * 1024 * 1024
    contact_tags: tuple[str, ...] = ("whatsapp",)
    group_tag: str = "whatsapp-group"
    session_wait_seconds: float = 10.0
    message_types: frozenset[str] = field(default_factory=lambda: frozenset({"SMS", "Custom", "WhatsApp"}))


def part_key(ghl_message_id: str, index: int) -> str:
    """The marker row's HighLevel-id key of part ``index`` of a multi-attachment reply."""
    return f"{ghl_message_id}#part{index}"


def new_wa_message_id() -> str:
    """A WhatsApp-style message id (``3EB0`` + 18 hex), chosen before sending."""
    return "3EB0" + secrets.token_hex(9).upper()


class BridgeWork:
    """State and helpers shared by the inbound, outbound and status work (``Bridge`` combines them)."""

    def __init__(
        self,
        repos: Repositories,
        ghl: HighLevelGateway,
        sessions: SessionAccess,
        fetch_media: MediaFetcher,
        *,
        bus: EventBus | None = None,
        options: BridgeOptions = BridgeOptions(),
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self._repos = repos
        self._ghl = ghl
        self._sessions = sessions
        self._fetch = fetch_media
        self._bus = bus or EventBus()
        self._options = options
        self._on_enqueued = on_enqueued or (lambda: None)

    async def _fail(self, row: Message, reason: str) -> None:
        assert row.id is not None
        updated = self._repos.messages.update(row.id, status=MessageStatus.FAILED, error=reason)
        self._logged(updated)
        if updated.ghl_message_id:
            self._enqueue_status(updated, MessageStatus.FAILED, reason)

    def _enqueue_status(self, row: Message, status: MessageStatus, error: str | None) -> None:
        word = ghl_status(status)
        if word is None or row.ghl_message_id is None:
            return
        self._repos.jobs.enqueue(NewJob(
            kind=STATUS,
            payload=jobs.StatusPayload(row.location_id, row.ghl_message_id, word, error).to_json(),
            dedupe_key=f"status:{row.location_id}:{row.ghl_message_id}:{word}",
            ordering_key=f"status:{row.location_id}:{row.ghl_message_id}",
        ))
        self._on_enqueued()

    def _location_blocked(self, location_id: str) -> str | None:
        """Why inbound work for this location cannot reach HighLevel until a person acts, else None."""
        location = self._repos.locations.get(location_id)
        if location is None or location.state is LocationState.CONNECTED:
            return None
        if location.state is LocationState.UNINSTALLED:
            return "the app was uninstalled from its location"  # the health row's words (services/health.py)
        return "location needs reconnect"

    def _logged(self, message: Message) -> None:
        self._bus.publish(MessageLogged(message))


def media_kind_of(content_type: str) -> MessageKind:
    major = content_type.split("/", 1)[0]
    return {"image": MessageKind.IMAGE, "video": MessageKind.VIDEO, "audio": MessageKind.AUDIO}.get(
        major, MessageKind.DOCUMENT)


def extension_for(mimetype: str | None) -> str:
    import mimetypes

    return (mimetypes.guess_extension(mimetype.split(";")[0]) if mimetype else None) or ""


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def readable_error(error: Exception) -> str:
    if isinstance(error, NotOnWhatsApp):
        return str(error) or "the recipient is not on WhatsApp"
    if isinstance(error, SessionLoggedOut):
        return "the WhatsApp number was logged out on the phone — link it again"
    if isinstance(error, MediaTooLarge):
        return f"attachment too large for WhatsApp: {error}"
    return f"{type(error).__name__}: {error}"
