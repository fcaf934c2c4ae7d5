"""Group names (issue 15): a WhatsApp group's one HighLevel contact is named after the group's subject
(``WhatsAppTransport.group_subject``: the simulated network's ``group_info``, neonize's
``get_group_info``, cached there). Until the subject is known the contact is "WhatsApp group <id>";
once it is, a contact still carrying that placeholder is renamed — one an agent renamed in HighLevel
never is (the gateway checks HighLevel's current name first)."""

from __future__ import annotations

import time

from ghl_desktop.core.errors import GhlDesktopError
from ghl_desktop.core.models import ContactLink
from ghl_desktop.services.bridge.common import BridgeWork, log


def group_placeholder(chat: str) -> str:
    """The name a group's contact has while its subject is unknown."""
    return f"WhatsApp group {chat.split('@')[0]}"


class GroupNames(BridgeWork):
    _subject_misses: dict[str, float] | None = None

    async def _group_subject(self, session_id: str | None, chat: str) -> str | None:
        """The group's subject through the number that received the message, else None."""
        misses = self._subject_misses
        if misses is None:
            misses = self._subject_misses = {}
        missed = misses.get(chat)
        if missed is not None and time.monotonic() - missed < self._options.group_subject_retry_seconds:
            return None
        transport = self._sessions.transport_for(session_id) if session_id else None
        subject: str | None = None
        if transport is not None:
            try:
                subject = await transport.group_subject(chat)
            except Exception as exc:  # a name is a nicety: the message is carried whatever happens here
                log.info("group subject of %s not available: %s", chat, exc)
        if subject:
            misses.pop(chat, None)
        else:
            misses[chat] = time.monotonic()
        return subject

    async def _group_contact_name(self, session_id: str | None, chat: str) -> str:
        """The name a new group contact gets: the subject, else the placeholder."""
        return await self._group_subject(session_id, chat) or group_placeholder(chat)

    async def _name_group(self, location_id: str, session_id: str | None, link: ContactLink) -> None:
        """``link`` (a group's contact) still has the placeholder name: rename it after the subject,
        unless an agent named it in HighLevel meanwhile (then that name is kept, here too)."""
        assert link.wa_jid is not None and link.ghl_contact_id is not None
        placeholder = group_placeholder(link.wa_jid)
        subject = await self._group_subject(session_id, link.wa_jid)
        if subject is None or subject == placeholder:
            return
        try:
            name = await self._ghl.name_contact(location_id, link.ghl_contact_id, subject, placeholder=placeholder)
        except GhlDesktopError as exc:  # the message goes on; the next one of the group tries again
            log.info("group contact %s not renamed: %s", link.ghl_contact_id, exc)
            return
        await self._repos.contacts.save(ContactLink(
            location_id=location_id, phone=None, wa_jid=link.wa_jid, ghl_contact_id=link.ghl_contact_id,
            name=name, is_group=True, on_whatsapp=True, id=link.id))


def needs_group_name(link: ContactLink | None) -> bool:
    """A group contact whose name is still the placeholder (or none)."""
    return bool(link and link.is_group and link.wa_jid and link.ghl_contact_id
                and (not link.name or link.name == group_placeholder(link.wa_jid)))
