"""Outbound work: an agent's reply (``ghl.outbound_message``) goes to WhatsApp through the number's
paced send path; the WhatsApp id is chosen and stored before sending, multi-attachment parts are
recorded one by one, and a reply that cannot go until a person acts waits with that reason."""

from __future__ import annotations

from ghl_desktop.core.convert import (
    is_group_jid,
    jid_for_phone,
)
from ghl_desktop.core.errors import (
    GhlDesktopError,
    MediaTooLarge,
    NotOnWhatsApp,
    SessionLoggedOut,
    UnsupportedMedia,
    WhatsAppError,
)
from ghl_desktop.core.jobs import ProviderPayload
from ghl_desktop.core.models import (
    WAITING_PREFIX,
    ContactLink,
    Direction,
    Job,
    Message,
    MessageKind,
    MessageStatus,
    SessionState,
    WhatsAppSession,
)
from ghl_desktop.core.routing import NumberRouting, RouteChoice, choose_number, linked_numbers
from ghl_desktop.core.whatsapp import (
    OutgoingMedia,
    WhatsAppTransport,
)
from ghl_desktop.services.bridge.common import (
    BridgeWork,
    log,
    media_kind_of,
    new_wa_message_id,
    part_key,
    readable_error,
)
from ghl_desktop.services.jobs import RetryLater


class OutboundWork(BridgeWork):
    async def _handle_outbound(self, job: Job) -> None:
        event = ProviderPayload.from_json(job.payload).event
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
        group_jid = await self._group_of(location_id, contact_id) if not chat else None
        chat = group_jid or chat  # a reply to a group's contact (no phone) goes to the group
        row, _ = await messages.record(Message(
            location_id=location_id, direction=Direction.OUTBOUND,
            kind=MessageKind.DOCUMENT if urls and not text else MessageKind.TEXT,
            chat_jid=chat, ghl_message_id=ghl_id, body=text or None,
            media_ref=" ".join(urls) or None, status=MessageStatus.PENDING,
        ))
        assert row.id is not None
        if row.status is MessageStatus.FAILED:
            return  # failed before (a duplicate webhook)
        if row.status.rank >= MessageStatus.SENT.rank and not await self._parts_unsent(row, len(urls)):
            return  # done before (duplicate webhook, or a retry after the send was recorded)
        if not chat:
            await self._fail(row, "HighLevel gave no phone number for this contact")
            return

        linked = await self._repos.sessions.list(location_id)
        numbers = linked_numbers(linked)
        routed = len(numbers) > 1  # several numbers: sticky per contact, else the default (core/routing.py)
        route_note: str | None = None
        session: WhatsAppSession | str | None = None
        if routed:
            choice = await self._route(row, chat, phone, contact_id, numbers)
            if choice.waiting is not None:
                assert choice.session is not None
                await self._wait_for_number(row, choice.session, choice.waiting)
            session, route_note = choice.session, choice.note
        if session is None:
            session = await self._pick_session(location_id, chat, linked)
        if isinstance(session, str):
            await self._fail(row, session)
            return
        if session is None:
            banned = banned_reason(linked)
            if banned:
                raise RetryLater(banned, self._options.session_wait_seconds, blocked=True)
            raise RetryLater("no connected WhatsApp number for this location yet", self._options.session_wait_seconds)
        transport = self._sessions.transport_for(session.id)
        if transport is None:
            raise RetryLater("WhatsApp number reconnecting", self._options.session_wait_seconds)

        try:
            jid = group_jid or await self._recipient_jid(location_id, phone, contact_id, transport)
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
                                             file_name=fetched.file_name, kind=media_kind_of(fetched.content_type),
                                             caption=caption)))

        row_id = row.id
        wa_id = row.wa_message_id or new_wa_message_id()
        if routed and (row.wa_message_id is None or row.session_id != session.id or row.error != route_note):
            # the number chosen (the log's number column) and why if not the usual one; a wait's note goes
            row = await self._repos.routing.assign(row_id, session.id, note=route_note, wa_message_id=wa_id)
            self._logged(row)
        elif row.wa_message_id is None or row.session_id != session.id:
            row = await messages.update(row_id, wa_message_id=wa_id, session_id=session.id)
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
            await self._fail(row, readable_error(error))
            return
        except WhatsAppError as error:
            if error.transient:
                wait = self._options.session_wait_seconds
                raise RetryLater(f"WhatsApp send will be retried: {error}", wait) from error
            await self._fail(row, readable_error(error))
            return
        updated = await messages.update(row.id, status=MessageStatus.SENT,
                                        wa_message_id=first_id if first_id and first_id != wa_id else None)
        self._logged(updated)

    async def _parts_unsent(self, row: Message, parts: int) -> bool:
        """Whether a multi-attachment reply still has parts to send. Its own row can read "delivered"
        before that: the first part's receipt moves it while a later part waits for its retry."""
        if parts < 2 or row.ghl_message_id is None:
            return False
        ghl_id, location_id = row.ghl_message_id, row.location_id

        def unsent() -> bool:
            messages = self._repos.sync.messages
            for index in range(parts):
                marker = messages.by_ghl_id(location_id, part_key(ghl_id, index))
                if marker is None or marker.status.rank < MessageStatus.SENT.rank:
                    return True
            return False

        return await self._repos.run(unsent)

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
            done = await messages.by_ghl_id(row.location_id, key)
            if done is not None and done.status.rank >= MessageStatus.SENT.rank:
                continue  # sent by an earlier attempt
            sent = await self._sessions.send_media(session_id, jid, item,
                                                   message_id=wa_id if index == 0 else f"{wa_id}{index}")
            if index == 0 and sent.message_id and sent.message_id != row.wa_message_id:
                row = await messages.update(row_id, wa_message_id=sent.message_id)
            await messages.record(Message(
                location_id=row.location_id, direction=Direction.OUTBOUND, kind=item.kind, chat_jid=row.chat_jid,
                session_id=session_id, ghl_message_id=key, media_ref=url, media_mime=item.mimetype,
                media_name=item.file_name, media_size=len(item.data), status=MessageStatus.SENT,
                body=f"part {index + 1} of {len(media)} of HighLevel message {row.ghl_message_id}",
            ))
        return row

    async def _group_of(self, location_id: str, contact_id: object) -> str | None:
        """The group JID when ``contact_id`` is the HighLevel contact of a WhatsApp group, else None."""
        if not contact_id:
            return None
        link = await self._repos.contacts.find(location_id, ghl_contact_id=str(contact_id))
        return link.wa_jid if link is not None and link.is_group and link.wa_jid else None

    async def _recipient_jid(
        self, location_id: str, phone: str, contact_id: object, transport: WhatsAppTransport
    ) -> str:
        contacts = self._repos.contacts
        e164 = "+" + "".join(c for c in phone if c.isdigit())
        link = await contacts.find(location_id, phone=e164)
        if link and link.on_whatsapp is False:
            raise NotOnWhatsApp(f"{e164} is not on WhatsApp")
        if link and link.on_whatsapp and link.wa_jid:
            return link.wa_jid
        jid = await transport.is_on_whatsapp(e164)
        await contacts.save(ContactLink(
            location_id=location_id, phone=e164, wa_jid=jid or (link.wa_jid if link else None),
            wa_lid=link.wa_lid if link else None,
            ghl_contact_id=str(contact_id) if contact_id else (link.ghl_contact_id if link else None),
            name=link.name if link else None, on_whatsapp=jid is not None, id=link.id if link else None,
        ))
        if jid is None:
            raise NotOnWhatsApp(f"{e164} is not on WhatsApp")
        return jid

    async def _route(
        self, row: Message, chat: str, phone: str, contact_id: object, numbers: list[WhatsAppSession],
    ) -> RouteChoice:
        """Which of the location's ``numbers`` carries this reply (``core.routing.choose_number``)."""
        live = {s.id for s in numbers if self._sessions.transport_for(s.id) is not None}
        routing, sticky = await self._repos.run(self._route_reads, row, chat, phone, contact_id,
                                                [s.id for s in numbers])
        return choose_number(numbers, live, sticky_id=sticky, routing=routing)

    def _route_reads(
        self, row: Message, chat: str, phone: str, contact_id: object, session_ids: list[str],
    ) -> tuple[NumberRouting, str | None]:
        """(storage thread) The location's reply settings and the number this reply sticks to: the one
        an earlier attempt of it chose (a resend keeps its WhatsApp id on the same number), else the
        one the contact last wrote to (any of its JIDs: phone, LID, group)."""
        repos = self._repos.sync
        routing = repos.routing.get(row.location_id)
        if row.wa_message_id and row.session_id in session_ids:
            return routing, row.session_id
        chats = [chat]
        link = repos.contacts.find(row.location_id, ghl_contact_id=str(contact_id)) if contact_id else None
        if link is None and any(c.isdigit() for c in phone) and not is_group_jid(chat):
            link = repos.contacts.find(row.location_id, phone="+" + "".join(c for c in phone if c.isdigit()))
        if link is not None:
            chats += [j for j in (link.wa_jid, link.wa_lid) if j and j not in chats]
        return routing, repos.routing.last_inbound_session(row.location_id, chats, session_ids)

    async def _wait_for_number(self, row: Message, session: WhatsAppSession, reason: str) -> None:
        """The reply's number is down and falling back is off: the reply waits for it, and its row in
        the message log names the number and says why (``waiting: +1… is disconnected``)."""
        assert row.id is not None
        note = WAITING_PREFIX + reason
        if row.session_id != session.id or row.error != note:
            self._logged(await self._repos.routing.assign(row.id, session.id, note=note))
        raise RetryLater(reason, self._options.session_wait_seconds, blocked=True)

    async def _pick_session(
        self, location_id: str, chat: str, sessions: list[WhatsAppSession],
    ) -> WhatsAppSession | str | None:
        """The connected session of ``sessions`` (the location's) — the one that last spoke to this chat
        when there are several; None when one exists but is reconnecting; a reason string when none can
        ever send."""
        if not sessions:
            return "no WhatsApp number is linked to this HighLevel location"
        live = [s for s in sessions if self._sessions.transport_for(s.id) is not None]
        if not live:
            if all(s.state.is_final and s.state is not SessionState.TEMPORARILY_BANNED for s in sessions):
                states = ", ".join(sorted({s.state.value.replace('_', ' ') for s in sessions}))
                return f"the WhatsApp number for this location is {states} — link it again"
            return None
        if len(live) > 1:
            for m in await self._repos.messages.recent(500, location_id=location_id):
                if m.chat_jid == chat and m.session_id in {s.id for s in live}:
                    return next(s for s in live if s.id == m.session_id)
        return live[0]


def banned_reason(sessions: list[WhatsAppSession]) -> str | None:
    """When every number of the location (``sessions``) that could still send is banned by WhatsApp:
    the ban, as the waiting reason (the replies wait for it to end, or for ``max_wait_seconds``)."""
    hopeful = [s for s in sessions if not s.state.is_final or s.state is SessionState.TEMPORARILY_BANNED]
    if not hopeful or any(s.state is not SessionState.TEMPORARILY_BANNED for s in hopeful):
        return None
    ends = [s.state_until for s in hopeful if s.state_until is not None]
    until = f" until {max(ends).strftime('%Y-%m-%d %H:%M')} UTC" if len(ends) == len(hopeful) else ""
    return f"the WhatsApp number is temporarily banned{until}"
