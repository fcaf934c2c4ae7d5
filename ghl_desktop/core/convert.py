"""Pure conversions between WhatsApp's and HighLevel's views of a message.

HighLevel's custom provider has no notion of replies, reactions, edits or deletions, so they reach
the agent as readable notes in the same conversation (each configurable). Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ghl_desktop.core.models import MessageKind, MessageStatus
from ghl_desktop.core.whatsapp import IncomingMessage

_PHONE_SERVERS = ("s.whatsapp.net", "c.us")
_QUOTE_LIMIT = 120


@dataclass(frozen=True, slots=True)
class NoteOptions:
    """Which WhatsApp-only events become notes in HighLevel (all on by default)."""

    replies: bool = True
    reactions: bool = True
    edits: bool = True
    deletes: bool = True


def phone_from_jid(jid: str | None) -> str | None:
    """E.164 phone for a phone-number JID (``4917...@s.whatsapp.net`` or ``...:12@s.whatsapp.net``).

    LIDs, groups and anything else give None: a LID is never turned into a fake phone number."""
    if not jid or "@" not in jid:
        return None
    user, server = jid.split("@", 1)
    if server not in _PHONE_SERVERS:
        return None
    user = user.split(":", 1)[0].split(".", 1)[0]
    if not user.isdigit() or not 5 <= len(user) <= 15:
        return None
    return "+" + user


def jid_for_phone(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    if not digits:
        raise ValueError(f"not a phone number: {phone!r}")
    return f"{digits}@s.whatsapp.net"


def is_group_jid(jid: str) -> bool:
    return jid.endswith("@g.us")


def quote(text: str | None) -> str:
    if not text:
        return "a message"
    flat = " ".join(text.split())
    if len(flat) > _QUOTE_LIMIT:
        flat = flat[: _QUOTE_LIMIT - 1] + "…"
    return f"“{flat}”"


def _kind_label(kind: MessageKind) -> str:
    return {
        MessageKind.IMAGE: "photo",
        MessageKind.VIDEO: "video",
        MessageKind.AUDIO: "audio",
        MessageKind.VOICE: "voice message",
        MessageKind.DOCUMENT: "document",
        MessageKind.STICKER: "sticker",
    }.get(kind, kind.value)


def describe_body(msg: IncomingMessage) -> str:
    """The main text of a message as an agent should read it (without group/reply decoration)."""
    k = msg.kind
    if k is MessageKind.TEXT:
        return msg.text or ""
    if k in (MessageKind.IMAGE, MessageKind.VIDEO, MessageKind.AUDIO, MessageKind.VOICE,
             MessageKind.DOCUMENT, MessageKind.STICKER):
        return msg.text or ""
    if k is MessageKind.LOCATION:
        parts = ["📍 Location"]
        if msg.location_name:
            parts.append(msg.location_name)
        if msg.latitude is not None and msg.longitude is not None:
            parts.append(f"{msg.latitude:.6f},{msg.longitude:.6f}")
            parts.append(f"https://maps.google.com/?q={msg.latitude:.6f},{msg.longitude:.6f}")
        return " · ".join(parts)
    if k is MessageKind.CONTACT:
        name = msg.contact_name or "contact"
        phones = re.findall(r"TEL[^:]*:([+\d][\d \-()]+)", msg.vcard or "")
        tail = f" ({', '.join(p.strip() for p in phones)})" if phones else ""
        return f"👤 Contact card: {name}{tail}"
    if k is MessageKind.UNSUPPORTED:
        return "[a WhatsApp message type this app cannot show — open WhatsApp on the phone to see it]"
    return msg.text or ""


def media_note(msg: IncomingMessage, reason: str) -> str:
    """Appended when media could not be attached: the agent learns something was there and why."""
    label = _kind_label(msg.kind)
    name = f" “{msg.media.file_name}”" if msg.media and msg.media.file_name else ""
    return f"[{label}{name} could not be attached: {reason}]"


def inbound_text(
    msg: IncomingMessage,
    *,
    target_text: str | None = None,
    sender_name: str | None = None,
    options: NoteOptions = NoteOptions(),
) -> str | None:
    """The text to post to HighLevel for one WhatsApp message, or None when it is not to be posted.

    ``target_text`` is the text of the message replied to / reacted to / edited / deleted, when known.
    ``sender_name`` prefixes messages in group chats (one HighLevel contact per group)."""
    k = msg.kind
    if k is MessageKind.REACTION:
        if not options.reactions:
            return None
        if msg.reaction:
            body = f"{msg.reaction} reacted to {quote(target_text)}"
        else:
            body = f"Removed a reaction from {quote(target_text)}"
    elif k is MessageKind.EDIT:
        if not options.edits:
            return None
        body = f"✏️ Edited {quote(target_text)} → {quote(msg.text)}"
    elif k is MessageKind.REVOKE:
        if not options.deletes:
            return None
        body = f"🗑 Deleted {quote(target_text)}"
    else:
        body = describe_body(msg)
        if msg.quoted_id and options.replies:
            body = f"↪ Reply to {quote(target_text)}\n{body}"
    if msg.is_group and sender_name:
        body = f"{sender_name}: {body}"
    return body


_GHL_STATUS = {
    MessageStatus.DELIVERED: "delivered",
    MessageStatus.READ: "read",
    MessageStatus.PLAYED: "read",
    MessageStatus.FAILED: "failed",
}


def ghl_status(status: MessageStatus) -> str | None:
    """HighLevel's word for our status, or None when HighLevel has nothing to hear (pending/sent)."""
    return _GHL_STATUS.get(status)


# --- job payloads: an IncomingMessage as JSON-safe data ------------------------------------------


def incoming_to_payload(msg: IncomingMessage) -> dict[str, object]:
    """Everything the inbound worker needs, JSON-safe, so the job can run after a restart."""
    import base64
    from dataclasses import asdict

    data = asdict(msg)
    data["timestamp"] = msg.timestamp.isoformat()
    data["kind"] = msg.kind.value
    if msg.media is not None:
        media = dict(data["media"])
        media["handle"] = base64.b64encode(msg.media.handle).decode("ascii") if msg.media.handle else None
        data["media"] = media
    return data


def incoming_from_payload(data: dict[str, object]) -> IncomingMessage:
    import base64
    from datetime import datetime

    from ghl_desktop.core.whatsapp import MediaInfo

    values = dict(data)
    values["timestamp"] = datetime.fromisoformat(str(values["timestamp"]))
    values["kind"] = MessageKind(str(values["kind"]))
    media = values.get("media")
    if isinstance(media, dict):
        handle = media.get("handle")
        values["media"] = MediaInfo(
            mimetype=media.get("mimetype"),
            file_name=media.get("file_name"),
            size=media.get("size"),
            seconds=media.get("seconds"),
            handle=base64.b64decode(handle) if isinstance(handle, str) else None,
        )
    return IncomingMessage(**values)  # type: ignore[arg-type]
