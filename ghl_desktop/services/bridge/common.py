"""What the bridge's three kinds of work share: job kinds, the neighbours' protocols, the events it
publishes, its options, and ``BridgeWork`` — the state and the helpers (log a message, fail it,
enqueue a status push) every part uses."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

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
    Location,
    LocationState,
    Message,
    MessageKind,
    MessageStatus,
    NewJob,
)
from ghl_desktop.core.ports import (
    AsyncContactRepository,
    AsyncJobQueue,
    AsyncLocationRepository,
    AsyncMessageRepository,
    AsyncSessionRepository,
    ContactRepository,
    HighLevelGateway,
    JobQueue,
    LocationRepository,
    MediaFetcher,
    MessageRepository,
    SessionRepository,
)
from ghl_desktop.core.routing import AsyncRoutingRepository, RoutingRepository
from ghl_desktop.core.whatsapp import (
    OutgoingMedia,
    ReceiptKind,
    SendResult,
    WhatsAppTransport,
)

log = logging.getLogger("ghl.bridge")

T = TypeVar("T")

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


class SyncRepositories(Protocol):
    """The blocking repositories: only inside a function handed to ``Repositories.run`` (it runs on
    the storage executor's thread, never on the loop)."""

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
    @property
    def routing(self) -> RoutingRepository: ...


class Repositories(Protocol):
    """The storage as the bridge takes it (``db.aio``): every call awaited, run off the loop. Reads
    that belong together go in one ``run(fn)`` (one hop to the storage thread instead of several)."""

    @property
    def locations(self) -> AsyncLocationRepository: ...
    @property
    def sessions(self) -> AsyncSessionRepository: ...
    @property
    def contacts(self) -> AsyncContactRepository: ...
    @property
    def messages(self) -> AsyncMessageRepository: ...
    @property
    def jobs(self) -> AsyncJobQueue: ...
    @property
    def routing(self) -> AsyncRoutingRepository: ...
    @property
    def sync(self) -> SyncRepositories: ...

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


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
    #: group chats are not bridged at all (Settings.ignore_groups)
    ignore_groups: bool = False
    #: calls are declined at once and the caller gets ``reject_call_text`` (Settings.reject_calls)
    reject_calls: bool = False
    reject_call_text: str = "Sorry, we cannot take calls on WhatsApp. Please write us a message."
    #: a group whose subject could not be learnt is asked again after this long (bridge/groups.py)
    group_subject_retry_seconds: float = 60.0


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
        on_enqueued: Callable[..., None] | None = None,
    ) -> None:
        self._repos = repos
        self._ghl = ghl
        self._sessions = sessions
        self._fetch = fetch_media
        self._bus = bus or EventBus()
        self._options = options
        #: called after a job was stored, with its ordering key where there is one (JobRunner.wake)
        self._on_enqueued: Callable[..., None] = on_enqueued or (lambda key=None: None)

    async def _fail(self, row: Message, reason: str) -> None:
        assert row.id is not None
        updated, enqueued = await self._repos.run(self._fail_stored, row.id, reason)
        self._logged(updated)
        if enqueued:
            self._on_enqueued()

    def _fail_stored(self, message_id: int, reason: str) -> tuple[Message, bool]:
        """(storage thread) Mark the message failed and enqueue the failed status for HighLevel."""
        repos = self._repos.sync
        updated = repos.messages.update(message_id, status=MessageStatus.FAILED, error=reason)
        job = status_job(updated, MessageStatus.FAILED, reason) if updated.ghl_message_id else None
        if job is not None:
            repos.jobs.enqueue(job)
        return updated, job is not None

    async def _enqueue_status(self, row: Message, status: MessageStatus, error: str | None) -> None:
        job = status_job(row, status, error)
        if job is None:
            return
        await self._repos.jobs.enqueue(job)
        self._on_enqueued()

    def _logged(self, message: Message) -> None:
        self._bus.publish(MessageLogged(message))


def status_job(row: Message, status: MessageStatus, error: str | None) -> NewJob | None:
    """The ``ghl.status`` job that pushes ``status`` of ``row`` to HighLevel (None: nothing to push)."""
    word = ghl_status(status)
    if word is None or row.ghl_message_id is None:
        return None
    return NewJob(
        kind=STATUS,
        payload=jobs.StatusPayload(row.location_id, row.ghl_message_id, word, error).to_json(),
        dedupe_key=f"status:{row.location_id}:{row.ghl_message_id}:{word}",
        ordering_key=f"status:{row.location_id}:{row.ghl_message_id}",
    )


def location_blocked(location: Location | None) -> str | None:
    """Why inbound work for this location cannot reach HighLevel until a person acts, else None."""
    if location is None or location.state is LocationState.CONNECTED:
        return None
    if location.state is LocationState.UNINSTALLED:
        return "the app was uninstalled from its location"  # the health row's words (services/health.py)
    return "location needs reconnect"


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
