"""The bridge: WhatsApp ⇄ HighLevel, durable and exactly-once as the user sees it.

Edges (called from the transports and the webhook intake) only *store*: a message row plus the job
that will carry it across, in one transaction, before anything is acknowledged. Workers (job
handlers run by :class:`~ghl_desktop.services.jobs.JobRunner`) do the network work and are
idempotent, so a job that runs twice — after a crash, a lease expiry, or a manual retry — never makes
a second message appear:

- ``wa.inbound``: resolve the HighLevel contact, upload media, post the provider message with
  ``altId`` = WhatsApp id. On a retry it first asks HighLevel whether that ``altId`` already exists.
- ``ghl.outbound_message``: an agent's reply from a provider webhook. The WhatsApp message id is
  chosen and stored *before* sending, so a retry re-sends the same id (deduplicated by WhatsApp / the
  simulated network; neonize cannot take our id — see the transport's notes for the remaining window).
- ``ghl.status``: push delivered / read / failed to HighLevel, ordered per message.
- ``ghl.app_event``: INSTALL / UNINSTALL.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from ghl_desktop.core.convert import (
    NoteOptions,
    ghl_status,
    inbound_text,
    incoming_from_payload,
    incoming_to_payload,
    is_group_jid,
    jid_for_phone,
    media_note,
    phone_from_jid,
)
from ghl_desktop.core.errors import (
    GhlContactNotFound,
    GhlDesktopError,
    GhlPayloadTooLarge,
    MediaTooLarge,
    NotOnWhatsApp,
    SessionLoggedOut,
    UnsupportedMedia,
    WhatsAppError,
)
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import (
    ContactLink,
    Direction,
    Job,
    LocationState,
    Message,
    MessageKind,
    MessageStatus,
    NewJob,
    SessionState,
    WhatsAppSession,
)
from ghl_desktop.core.ports import (
    ContactRepository,
    FetchedMedia,
    HighLevelGateway,
    JobQueue,
    LocationRepository,
    MediaFetcher,
    MessageRepository,
    SessionRepository,
)
from ghl_desktop.core.whatsapp import (
    IncomingMessage,
    OutgoingMedia,
    Receipt,
    ReceiptKind,
    SendResult,
    WhatsAppTransport,
)
from ghl_desktop.services.jobs import JobHandler, RetryLater

log = logging.getLogger("ghl.bridge")

INBOUND = "wa.inbound"
OUTBOUND = "ghl.outbound_message"
STATUS = "ghl.status"
APP_EVENT = "ghl.app_event"

_MEDIA_KINDS = {
    MessageKind.IMAGE, MessageKind.VIDEO, MessageKind.AUDIO, MessageKind.VOICE,
    MessageKind.DOCUMENT, MessageKind.STICKER,
}
_RECEIPT_STATUS = {
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


class Bridge:
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

    @property
    def handlers(self) -> dict[str, JobHandler]:
        return {
            INBOUND: self._handle_inbound,
            OUTBOUND: self._handle_outbound,
            STATUS: self._handle_status,
            APP_EVENT: self._handle_app_event,
        }

    # --- edges: store first, nothing else --------------------------------------------------------

    async def on_message(self, session: WhatsAppSession, msg: IncomingMessage) -> None:
        """Called by the sessions service for every WhatsApp message, before it is acknowledged."""
        row = Message(
            location_id=session.location_id,
            direction=Direction.OUTBOUND if msg.from_me else Direction.INBOUND,
            kind=msg.kind,
            chat_jid=msg.chat,
            session_id=session.id,
            wa_message_id=msg.id,
            sender_jid=msg.sender,
            body=msg.text,
            media_mime=msg.media.mimetype if msg.media else None,
            media_name=msg.media.file_name if msg.media else None,
            media_size=msg.media.size if msg.media else None,
            quoted_wa_id=msg.target_id or msg.quoted_id,
            from_me=msg.from_me,
            status=MessageStatus.RECEIVED,
            sent_at=msg.timestamp,
        )
        job = NewJob(
            kind=INBOUND,
            payload={"session_id": session.id, "message": incoming_to_payload(msg)},
            dedupe_key=f"wa:{session.id}:{msg.id}",
            ordering_key=f"chat:{session.location_id}:{msg.chat}",
        )
        stored, created = self._repos.messages.record(row, job)
        if created:
            self._logged(stored)
            self._on_enqueued()

    async def on_receipt(self, session: WhatsAppSession, receipt: Receipt) -> None:
        """Delivery/read receipts for messages we sent: real ticks only, never ahead of WhatsApp."""
        new_status = _RECEIPT_STATUS.get(receipt.kind)
        if new_status is None:
            return
        for wa_id in receipt.message_ids:
            row = self._repos.messages.by_wa_id(session.id, wa_id)
            if row is None or row.id is None or row.direction is not Direction.OUTBOUND:
                continue
            if row.status is MessageStatus.FAILED or new_status.rank < row.status.rank:
                continue
            if new_status is row.status:
                # The same receipt again (redelivered because the process died before acking it):
                # the status job may never have been stored, so enqueue it again (deduplicated).
                if row.ghl_message_id and not row.from_me:
                    self._enqueue_status(row, new_status, None)
                continue
            updated = self._repos.messages.update(row.id, status=new_status)
            self._logged(updated)
            if updated.ghl_message_id and not updated.from_me:
                self._enqueue_status(updated, new_status, None)

    # --- workers ---------------------------------------------------------------------------------

    async def _handle_inbound(self, job: Job) -> None:
        session_id = str(job.payload["session_id"])
        msg = incoming_from_payload(dict(job.payload["message"]))
        messages = self._repos.messages
        row = messages.by_wa_id(session_id, msg.id)
        if row is None or row.id is None:
            raise GhlDesktopError(f"message {msg.id} vanished from the database")
        if row.ghl_message_id:
            return  # already in HighLevel
        location_id = row.location_id
        blocked = self._location_blocked(location_id)
        if blocked:
            raise RetryLater(blocked, delay=60.0, blocked=True)

        contact_id = await self._resolve_contact(location_id, msg)
        if job.attempts > 1:
            # The previous attempt may have posted before the process died: ask HighLevel first.
            existing = await self._ghl.find_message_by_alt_id(location_id, contact_id=contact_id, alt_id=msg.id)
            if existing:
                self._logged(messages.update(row.id, ghl_message_id=existing, status=MessageStatus.SENT))
                return

        target_text = self._target_text(session_id, msg)
        sender_name = msg.push_name or msg.sender_phone or (msg.sender.split("@")[0] if msg.sender else None)
        text = inbound_text(msg, target_text=target_text, sender_name=sender_name, options=self._options.notes)
        if text is None:
            self._logged(messages.update(row.id, status=MessageStatus.SENT,
                                         error="not forwarded (turned off in settings)"))
            return

        attachments: list[str] = []
        if msg.kind in _MEDIA_KINDS and msg.media is not None:
            url, note = await self._upload_inbound_media(session_id, location_id, contact_id, msg)
            if url:
                attachments.append(url)
            if note:
                text = f"{text}\n{note}" if text else note
        if not text and not attachments:
            text = f"[{msg.kind.value}]"

        direction = "outbound" if msg.from_me else "inbound"
        try:
            posted = await self._ghl.post_message(
                location_id, contact_id=contact_id, text=text, attachments=attachments,
                alt_id=msg.id, direction=direction, date=msg.timestamp,
            )
        except GhlContactNotFound:
            # HighLevel merged or deleted the contact: forget it, resolve again, post once more.
            self._repos.contacts.forget_ghl_contact(location_id, contact_id)
            contact_id = await self._resolve_contact(location_id, msg)
            posted = await self._ghl.post_message(
                location_id, contact_id=contact_id, text=text, attachments=attachments,
                alt_id=msg.id, direction=direction, date=msg.timestamp,
            )
        self._logged(messages.update(row.id, ghl_message_id=posted.message_id, status=MessageStatus.SENT))

    async def _upload_inbound_media(
        self, session_id: str, location_id: str, contact_id: str, msg: IncomingMessage
    ) -> tuple[str | None, str | None]:
        """(url, note): the uploaded attachment, or a note saying why it could not be attached."""
        assert msg.media is not None
        limit = self._options.max_inbound_media_bytes
        if msg.media.size is not None and msg.media.size > limit:
            return None, media_note(msg, f"too large ({_mb(msg.media.size)}, limit {_mb(limit)})")
        transport = self._sessions.transport_for(session_id)
        if transport is None:
            raise RetryLater("WhatsApp number not connected; media download waits", self._options.session_wait_seconds)
        try:
            data = await transport.download(msg.media)
        except WhatsAppError as error:
            if error.transient:
                raise
            return None, media_note(msg, f"WhatsApp would not hand it over ({error})")
        if len(data) > limit:
            return None, media_note(msg, f"too large ({_mb(len(data))}, limit {_mb(limit)})")
        name = msg.media.file_name or f"{msg.kind.value}-{msg.id}{_extension(msg.media.mimetype)}"
        try:
            url = await self._ghl.upload(
                location_id, contact_id=contact_id, conversation_id=None, filename=name, data=data,
                content_type=msg.media.mimetype or "application/octet-stream",
            )
        except (GhlPayloadTooLarge, MediaTooLarge, UnsupportedMedia) as error:
            return None, media_note(msg, f"HighLevel refused it ({error})")
        return url, None

    async def _resolve_contact(self, location_id: str, msg: IncomingMessage) -> str:
        contacts = self._repos.contacts
        if msg.is_group or is_group_jid(msg.chat):
            link = contacts.find(location_id, wa_jid=msg.chat)
            if link and link.ghl_contact_id:
                return link.ghl_contact_id
            name = f"WhatsApp group {msg.chat.split('@')[0]}"
            contact_id = await self._ghl.upsert_contact(
                location_id, phone=None, name=name, tags=[*self._options.contact_tags, self._options.group_tag])
            contacts.save(ContactLink(location_id=location_id, phone=None, wa_jid=msg.chat, ghl_contact_id=contact_id,
                                      name=name, is_group=True, on_whatsapp=True, id=link.id if link else None))
            return contact_id

        chat_is_lid = msg.chat.endswith("@lid")
        lid = msg.chat if chat_is_lid else (msg.sender_lid if not msg.from_me else None)
        phone = phone_from_jid(msg.chat) or (msg.sender_phone if not msg.from_me else None)
        jid: str | None = msg.chat if not chat_is_lid else (jid_for_phone(phone) if phone else None)
        link = contacts.find(location_id, phone=phone, wa_jid=jid, wa_lid=lid)
        if link and link.ghl_contact_id:
            if (phone and not link.phone) or (lid and not link.wa_lid) or (jid and not link.wa_jid):
                contacts.save(replace(link, phone=link.phone or phone, wa_lid=link.wa_lid or lid,
                                      wa_jid=link.wa_jid or jid))
            return link.ghl_contact_id
        # a LID-only sender gets a contact without a phone (never an invented number), tagged as such
        contact_name = msg.push_name if not msg.from_me else None
        tags = list(self._options.contact_tags) + ([] if phone else ["whatsapp-lid"])
        contact_id = await self._ghl.upsert_contact(location_id, phone=phone, name=contact_name, tags=tags)
        contacts.save(ContactLink(
            location_id=location_id, phone=phone or (link.phone if link else None), wa_jid=jid, wa_lid=lid,
            ghl_contact_id=contact_id, name=contact_name, on_whatsapp=True, id=link.id if link else None,
        ))
        return contact_id

    def _target_text(self, session_id: str, msg: IncomingMessage) -> str | None:
        target = msg.target_id or msg.quoted_id
        if not target:
            return None
        row = self._repos.messages.by_wa_id(session_id, target)
        return row.body if row else None

    async def _handle_outbound(self, job: Job) -> None:
        event = dict(job.payload.get("event", job.payload)) if isinstance(job.payload.get("event"), dict) \
            else dict(job.payload)
        message_type = str(event.get("type", "SMS"))
        if message_type not in self._options.message_types:
            log.info("ignoring provider webhook of type %s", message_type)
            return
        location_id = str(event["locationId"])
        ghl_id = str(event["messageId"])
        phone = str(event.get("phone") or "")
        contact_id = event.get("contactId")
        text = str(event.get("message") or "")
        urls = [str(u) for u in (event.get("attachments") or [])]
        messages = self._repos.messages

        chat = jid_for_phone(phone) if any(c.isdigit() for c in phone) else ""
        row, _ = messages.record(Message(
            location_id=location_id, direction=Direction.OUTBOUND,
            kind=MessageKind.DOCUMENT if urls and not text else MessageKind.TEXT,
            chat_jid=chat, ghl_message_id=ghl_id, body=text or None,
            media_ref=" ".join(urls) or None, status=MessageStatus.PENDING,
        ))
        assert row.id is not None
        if row.status is MessageStatus.FAILED or row.status.rank >= MessageStatus.SENT.rank:
            return  # done before (duplicate webhook, or a retry after the send was recorded)
        if not chat:
            await self._fail(row, "HighLevel gave no phone number for this contact")
            return

        session = self._pick_session(location_id, chat)
        if isinstance(session, str):
            await self._fail(row, session)
            return
        if session is None:
            banned = self._banned_reason(location_id)
            if banned:
                raise RetryLater(banned, self._options.session_wait_seconds, blocked=True)
            raise RetryLater("no connected WhatsApp number for this location yet", self._options.session_wait_seconds)
        transport = self._sessions.transport_for(session.id)
        if transport is None:
            raise RetryLater("WhatsApp number reconnecting", self._options.session_wait_seconds)

        try:
            jid = await self._recipient_jid(location_id, phone, contact_id, transport)
        except NotOnWhatsApp as error:
            await self._fail(row, str(error))
            return

        media: list[tuple[str, OutgoingMedia]] = []
        for index, url in enumerate(urls):
            try:
                fetched = await self._fetch(url, self._options.max_outbound_media_bytes)
            except MediaTooLarge as error:
                await self._fail(row, f"attachment too large for WhatsApp: {error}")
                return
            except GhlDesktopError as error:
                if error.transient:
                    raise
                await self._fail(row, f"attachment could not be downloaded: {error}")
                return
            caption = text if index == 0 and text else None
            media.append((url, OutgoingMedia(data=fetched.data, mimetype=fetched.content_type,
                                             file_name=fetched.file_name, kind=_media_kind(fetched.content_type),
                                             caption=caption)))

        wa_id = row.wa_message_id or new_wa_message_id()
        if row.wa_message_id is None or row.session_id != session.id:
            row = messages.update(row.id, wa_message_id=wa_id, session_id=session.id)
        assert row.id is not None
        try:
            first_id: str | None = None
            if len(media) > 1:
                first_id = (await self._send_parts(row, session.id, jid, media, wa_id)).wa_message_id
            elif media:
                sent = await self._sessions.send_media(session.id, jid, media[0][1], message_id=wa_id)
                first_id = sent.message_id
            else:
                sent = await self._sessions.send_text(session.id, jid, text, message_id=wa_id)
                first_id = sent.message_id
        except (NotOnWhatsApp, SessionLoggedOut, MediaTooLarge, UnsupportedMedia) as error:
            await self._fail(row, _readable(error))
            return
        except WhatsAppError as error:
            if error.transient:
                wait = self._options.session_wait_seconds
                raise RetryLater(f"WhatsApp send will be retried: {error}", wait) from error
            await self._fail(row, _readable(error))
            return
        updated = messages.update(row.id, status=MessageStatus.SENT,
                                  wa_message_id=first_id if first_id and first_id != wa_id else None)
        self._logged(updated)

    async def _send_parts(
        self, row: Message, session_id: str, jid: str, media: list[tuple[str, OutgoingMedia]], wa_id: str,
    ) -> Message:
        """Send a multi-attachment reply one WhatsApp message per attachment, recording each part as
        sent (a marker row ``<ghl id>#part<n>``) before the next is sent. A retry after a failure part
        way — or after a crash — skips the parts already sent: neonize ignores our chosen message id,
        so WhatsApp could not deduplicate a resend and the customer would get the earlier attachments
        twice. The remaining window is a crash between WhatsApp accepting a part and its marker commit.

        The first part's real id goes on the reply's own row at once (receipts match it); the marker
        rows carry no WhatsApp id, so they never receive receipts nor push statuses to HighLevel."""
        assert row.id is not None and row.ghl_message_id is not None
        row_id = row.id
        messages = self._repos.messages
        for index, (url, item) in enumerate(media):
            key = part_key(row.ghl_message_id, index)
            done = messages.by_ghl_id(row.location_id, key)
            if done is not None and done.status.rank >= MessageStatus.SENT.rank:
                continue  # sent by an earlier attempt
            sent = await self._sessions.send_media(session_id, jid, item,
                                                   message_id=wa_id if index == 0 else f"{wa_id}{index}")
            if index == 0 and sent.message_id and sent.message_id != row.wa_message_id:
                row = messages.update(row_id, wa_message_id=sent.message_id)
            messages.record(Message(
                location_id=row.location_id, direction=Direction.OUTBOUND, kind=item.kind, chat_jid=row.chat_jid,
                session_id=session_id, ghl_message_id=key, media_ref=url, media_mime=item.mimetype,
                media_name=item.file_name, media_size=len(item.data), status=MessageStatus.SENT,
                body=f"part {index + 1} of {len(media)} of HighLevel message {row.ghl_message_id}",
            ))
        return row

    async def _recipient_jid(
        self, location_id: str, phone: str, contact_id: object, transport: WhatsAppTransport
    ) -> str:
        contacts = self._repos.contacts
        e164 = "+" + "".join(c for c in phone if c.isdigit())
        link = contacts.find(location_id, phone=e164)
        if link and link.on_whatsapp is False:
            raise NotOnWhatsApp(f"{e164} is not on WhatsApp")
        if link and link.on_whatsapp and link.wa_jid:
            return link.wa_jid
        jid = await transport.is_on_whatsapp(e164)
        contacts.save(ContactLink(
            location_id=location_id, phone=e164, wa_jid=jid or (link.wa_jid if link else None),
            wa_lid=link.wa_lid if link else None,
            ghl_contact_id=str(contact_id) if contact_id else (link.ghl_contact_id if link else None),
            name=link.name if link else None, on_whatsapp=jid is not None, id=link.id if link else None,
        ))
        if jid is None:
            raise NotOnWhatsApp(f"{e164} is not on WhatsApp")
        return jid

    def _pick_session(self, location_id: str, chat: str) -> WhatsAppSession | str | None:
        """The connected session for this location (the one that last spoke to this chat when there are
        several); None when one exists but is reconnecting; a reason string when none can ever send."""
        sessions = self._repos.sessions.list(location_id)
        if not sessions:
            return "no WhatsApp number is linked to this HighLevel location"
        live = [s for s in sessions if self._sessions.transport_for(s.id) is not None]
        if not live:
            if all(s.state.is_final and s.state is not SessionState.TEMPORARILY_BANNED for s in sessions):
                states = ", ".join(sorted({s.state.value.replace('_', ' ') for s in sessions}))
                return f"the WhatsApp number for this location is {states} — link it again"
            return None
        if len(live) > 1:
            for m in self._repos.messages.recent(500, location_id=location_id):
                if m.chat_jid == chat and m.session_id in {s.id for s in live}:
                    return next(s for s in live if s.id == m.session_id)
        return live[0]

    def _banned_reason(self, location_id: str) -> str | None:
        """When every number of the location that could still send is banned by WhatsApp: the ban, as
        the waiting reason (the replies wait for it to end, or for ``max_wait_seconds``)."""
        sessions = self._repos.sessions.list(location_id)
        hopeful = [s for s in sessions if not s.state.is_final or s.state is SessionState.TEMPORARILY_BANNED]
        if not hopeful or any(s.state is not SessionState.TEMPORARILY_BANNED for s in hopeful):
            return None
        ends = [s.state_until for s in hopeful if s.state_until is not None]
        until = f" until {max(ends).strftime('%Y-%m-%d %H:%M')} UTC" if len(ends) == len(hopeful) else ""
        return f"the WhatsApp number is temporarily banned{until}"

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
            payload={"location_id": row.location_id, "message_id": row.ghl_message_id, "status": word,
                     "error": error},
            dedupe_key=f"status:{row.location_id}:{row.ghl_message_id}:{word}",
            ordering_key=f"status:{row.location_id}:{row.ghl_message_id}",
        ))
        self._on_enqueued()

    async def _handle_status(self, job: Job) -> None:
        p = job.payload
        await self._ghl.update_status(str(p["location_id"]), str(p["message_id"]), str(p["status"]),
                                      p.get("error") if isinstance(p.get("error"), str) else None)

    async def _handle_app_event(self, job: Job) -> None:
        event = dict(job.payload.get("event", job.payload)) if isinstance(job.payload.get("event"), dict) \
            else dict(job.payload)
        kind = str(event.get("type", ""))
        location_id = event.get("locationId")
        if kind == "UNINSTALL" and location_id and self._repos.locations.get(str(location_id)):
            self._repos.locations.set_state(str(location_id), LocationState.UNINSTALLED)
        self._bus.publish(LocationsChanged(str(location_id) if location_id else None, kind))

    # --- helpers ----------------------------------------------------------------------------------

    def _location_blocked(self, location_id: str) -> str | None:
        """Why inbound work for this location cannot reach HighLevel until a person acts, else None."""
        location = self._repos.locations.get(location_id)
        if location is None or location.state is LocationState.CONNECTED:
            return None
        if location.state is LocationState.UNINSTALLED:
            return "the app was uninstalled from this HighLevel location"
        return "location needs reconnect"

    def _logged(self, message: Message) -> None:
        self._bus.publish(MessageLogged(message))


def _media_kind(content_type: str) -> MessageKind:
    major = content_type.split("/", 1)[0]
    return {"image": MessageKind.IMAGE, "video": MessageKind.VIDEO, "audio": MessageKind.AUDIO}.get(
        major, MessageKind.DOCUMENT)


def _extension(mimetype: str | None) -> str:
    import mimetypes

    return (mimetypes.guess_extension(mimetype.split(";")[0]) if mimetype else None) or ""


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _readable(error: Exception) -> str:
    if isinstance(error, NotOnWhatsApp):
        return str(error) or "the recipient is not on WhatsApp"
    if isinstance(error, SessionLoggedOut):
        return "the WhatsApp number was logged out on the phone — link it again"
    if isinstance(error, MediaTooLarge):
        return f"attachment too large for WhatsApp: {error}"
    return f"{type(error).__name__}: {error}"


__all__ = [
    "APP_EVENT", "INBOUND", "OUTBOUND", "STATUS", "Bridge", "BridgeOptions", "FetchedMedia", "LocationsChanged",
    "MessageLogged", "SessionAccess",
]
