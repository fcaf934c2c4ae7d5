"""Inbound work: a WhatsApp message is stored with its job before it is acknowledged (``on_message``),
then posted to HighLevel (``wa.inbound``: contact resolved, media uploaded, ``altId`` = WhatsApp id; a
retry first asks HighLevel whether that ``altId`` exists)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from ghl_desktop.core.convert import (
    group_sender_label,
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
    UnsupportedMedia,
    WhatsAppError,
)
from ghl_desktop.core.jobs import InboundPayload
from ghl_desktop.core.models import (
    ContactLink,
    Direction,
    Job,
    Message,
    MessageStatus,
    NewJob,
    WhatsAppSession,
)
from ghl_desktop.core.ports import AsyncMessageRepository, ContactRepository
from ghl_desktop.core.whatsapp import (
    IncomingMessage,
)
from ghl_desktop.services.bridge.common import (
    INBOUND,
    MEDIA_KINDS,
    extension_for,
    location_blocked,
    megabytes,
)
from ghl_desktop.services.bridge.groups import GroupNames, needs_group_name
from ghl_desktop.services.bridge.intake import GroupCommit
from ghl_desktop.services.jobs import RetryLater, finish_with_completion, prepared


class InboundWork(GroupNames):
    async def on_message(self, session: WhatsAppSession, msg: IncomingMessage) -> None:
        """Called by the sessions service for every WhatsApp message, before it is acknowledged."""
        if self._options.ignore_groups and (msg.is_group or is_group_jid(msg.chat)):
            return  # groups are turned off: nothing stored, nothing carried
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
            payload=InboundPayload(session.id, incoming_to_payload(msg)).to_json(),
            dedupe_key=f"wa:{session.id}:{msg.id}",
            ordering_key=f"chat:{session.location_id}:{msg.chat}",
        )
        stored, created = await self._intake().record(row, job)
        if created:
            self._logged(stored)
            self._on_enqueued(job.ordering_key)

    def _intake(self) -> GroupCommit | AsyncMessageRepository:
        """Where on_message stores: one transaction for the messages arriving together (intake.py)
        when the message repository can record several at once, else one call per message."""
        intake: GroupCommit | AsyncMessageRepository | None = getattr(self, "_group_commit", None)
        if intake is None:
            record_many = getattr(self._repos.sync.messages, "record_many", None)
            intake = GroupCommit(self._repos.run, record_many) if record_many else self._repos.messages
            self._group_commit = intake
        return intake

    async def _handle_inbound(self, job: Job) -> None:
        payload = InboundPayload.from_json(job.payload)
        session_id = payload.session_id
        msg = incoming_from_payload(payload.message)
        messages = self._repos.messages
        # what this job needs to know first: read when it was leased (_prepare_inbound), else in one hop
        ready = prepared()
        if isinstance(ready, _InboundReads) and not ready.may_be_stale:
            reads = ready
        else:
            reads = await self._repos.run(self._inbound_reads, session_id, msg)
        row = reads.row
        if row is None or row.id is None:
            raise GhlDesktopError(f"message {msg.id} vanished from the database")
        if row.ghl_message_id:
            return  # already in HighLevel
        location_id = row.location_id
        if reads.blocked:
            raise RetryLater(reads.blocked, delay=60.0, blocked=True)

        contact_id = await self._resolve_contact(location_id, msg, reads.link, session_id)
        if job.attempts > 1:
            # The previous attempt may have posted before the process died: ask HighLevel first.
            existing = await self._ghl.find_message_by_alt_id(location_id, contact_id=contact_id, alt_id=msg.id)
            if existing:
                self._logged(await messages.update(row.id, ghl_message_id=existing, status=MessageStatus.SENT))
                return

        target_text = reads.target_text
        sender_name = group_sender_label(msg)
        text = inbound_text(msg, target_text=target_text, sender_name=sender_name, options=self._options.notes)
        if text is None:
            self._logged(await messages.update(row.id, status=MessageStatus.SENT,
                                               error="not forwarded (turned off in settings)"))
            return

        attachments: list[str] = []
        if msg.kind in MEDIA_KINDS and msg.media is not None:
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
            link = await self._repos.run(self._forget_and_find, location_id, contact_id, msg)
            contact_id = await self._resolve_contact(location_id, msg, link, session_id)
            posted = await self._ghl.post_message(
                location_id, contact_id=contact_id, text=text, attachments=attachments,
                alt_id=msg.id, direction=direction, date=msg.timestamp,
            )
        # the job's last write, committed together with its completion (one commit, services/jobs.py)
        sent = functools.partial(self._repos.sync.messages.update, row.id, ghl_message_id=posted.message_id,
                                 status=MessageStatus.SENT)
        if not finish_with_completion(sent, self._logged):
            self._logged(await messages.update(row.id, ghl_message_id=posted.message_id, status=MessageStatus.SENT))

    async def _upload_inbound_media(
        self, session_id: str, location_id: str, contact_id: str, msg: IncomingMessage
    ) -> tuple[str | None, str | None]:
        """(url, note): the uploaded attachment, or a note saying why it could not be attached."""
        assert msg.media is not None
        limit = self._options.max_inbound_media_bytes
        if msg.media.size is not None and msg.media.size > limit:
            return None, media_note(msg, f"too large ({megabytes(msg.media.size)}, limit {megabytes(limit)})")
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
            return None, media_note(msg, f"too large ({megabytes(len(data))}, limit {megabytes(limit)})")
        name = msg.media.file_name or f"{msg.kind.value}-{msg.id}{extension_for(msg.media.mimetype)}"
        try:
            url = await self._ghl.upload(
                location_id, contact_id=contact_id, conversation_id=None, filename=name, data=data,
                content_type=msg.media.mimetype or "application/octet-stream",
            )
        except (GhlPayloadTooLarge, MediaTooLarge, UnsupportedMedia) as error:
            return None, media_note(msg, f"HighLevel refused it ({error})")
        return url, None

    def _prepare_inbound(self, job: Job) -> _InboundReads:
        """(storage thread, as the runner leases the job) :meth:`_inbound_reads` of a ``wa.inbound`` job."""
        payload = InboundPayload.from_json(job.payload)
        return self._inbound_reads(payload.session_id, incoming_from_payload(payload.message))

    def _inbound_reads(self, session_id: str, msg: IncomingMessage) -> _InboundReads:
        """(storage thread) The message row, why its location is blocked, the quoted message's text and
        the contact link: the reads of one ``wa.inbound`` job, together."""
        repos = self._repos.sync
        row = repos.messages.by_wa_id(session_id, msg.id)
        if row is None or row.id is None or row.ghl_message_id:
            return _InboundReads(row)
        blocked = location_blocked(repos.locations.get(row.location_id))
        if blocked:
            return _InboundReads(row, blocked)
        target = msg.target_id or msg.quoted_id
        target_row = repos.messages.by_wa_id(session_id, target) if target else None
        return _InboundReads(row, None, target_row.body if target_row else None,
                             _find_link(repos.contacts, row.location_id, msg))

    def _forget_and_find(self, location_id: str, contact_id: str, msg: IncomingMessage) -> ContactLink | None:
        """(storage thread) HighLevel no longer knows ``contact_id``: forget it, look the chat up again."""
        contacts = self._repos.sync.contacts
        contacts.forget_ghl_contact(location_id, contact_id)
        return _find_link(contacts, location_id, msg)

    async def _resolve_contact(self, location_id: str, msg: IncomingMessage, link: ContactLink | None,
                               session_id: str | None = None) -> str:
        """The HighLevel contact of the chat (``link``: what the contact table holds for it, looked up
        by :func:`_find_link`), created in HighLevel and saved when it is not known yet."""
        contacts = self._repos.contacts
        if msg.is_group or is_group_jid(msg.chat):
            if link and link.ghl_contact_id:
                if needs_group_name(link):  # named after the group's subject once it is known (groups.py)
                    await self._name_group(location_id, session_id, link)
                return link.ghl_contact_id
            name = await self._group_contact_name(session_id, msg.chat)
            contact_id = await self._ghl.upsert_contact(
                location_id, phone=None, name=name, tags=[*self._options.contact_tags, self._options.group_tag])
            await contacts.save(ContactLink(location_id=location_id, phone=None, wa_jid=msg.chat,
                                            ghl_contact_id=contact_id, name=name, is_group=True, on_whatsapp=True,
                                            id=link.id if link else None))
            return contact_id

        phone, jid, lid = _contact_keys(msg)
        if link and link.ghl_contact_id:
            if (phone and not link.phone) or (lid and not link.wa_lid) or (jid and not link.wa_jid):
                await contacts.save(replace(link, phone=link.phone or phone, wa_lid=link.wa_lid or lid,
                                            wa_jid=link.wa_jid or jid))
            return link.ghl_contact_id
        # a LID-only sender gets a contact without a phone (never an invented number), tagged as such
        contact_name = msg.push_name if not msg.from_me else None
        tags = list(self._options.contact_tags) + ([] if phone else ["whatsapp-lid"])
        contact_id = await self._ghl.upsert_contact(location_id, phone=phone, name=contact_name, tags=tags)
        await contacts.save(ContactLink(
            location_id=location_id, phone=phone or (link.phone if link else None), wa_jid=jid, wa_lid=lid,
            ghl_contact_id=contact_id, name=contact_name, on_whatsapp=True, id=link.id if link else None,
        ))
        return contact_id


@dataclass(frozen=True, slots=True)
class _InboundReads:
    row: Message | None
    blocked: str | None = None
    target_text: str | None = None
    link: ContactLink | None = None

    @property
    def may_be_stale(self) -> bool:
        """Read ahead without a HighLevel contact for the chat: the job before it on the chat (in the same
        run, services/jobs.py ``follow``) may have created that contact after this read, so the handler
        reads again rather than create it twice. With a contact the read stands: a contact HighLevel no
        longer knows is found out by the post (GhlContactNotFound) and looked up again there."""
        return (self.row is not None and not self.row.ghl_message_id and self.blocked is None
                and (self.link is None or not self.link.ghl_contact_id))


def _contact_keys(msg: IncomingMessage) -> tuple[str | None, str | None, str | None]:
    """(phone, jid, lid) of a one-to-one chat's contact, as far as the message tells them."""
    chat_is_lid = msg.chat.endswith("@lid")
    lid = msg.chat if chat_is_lid else (msg.sender_lid if not msg.from_me else None)
    phone = phone_from_jid(msg.chat) or (msg.sender_phone if not msg.from_me else None)
    jid: str | None = msg.chat if not chat_is_lid else (jid_for_phone(phone) if phone else None)
    return phone, jid, lid


def _find_link(contacts: ContactRepository, location_id: str, msg: IncomingMessage) -> ContactLink | None:
    """(storage thread) The contact table's row for the chat of ``msg``."""
    if msg.is_group or is_group_jid(msg.chat):
        return contacts.find(location_id, wa_jid=msg.chat)
    phone, jid, lid = _contact_keys(msg)
    return contacts.find(location_id, phone=phone, wa_jid=jid, wa_lid=lid)
