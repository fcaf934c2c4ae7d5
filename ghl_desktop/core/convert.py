"""Pure conversions between WhatsApp's and HighLevel's views of a message.

HighLevel's custom provider has no notion of replies, reactions, edits or deletions, so they reach
the agent as readable notes in the same conversation (each configurable). Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import tzinfo

import phonenumbers

from ghl_desktop.core.models import MessageKind, MessageStatus
from ghl_desktop.core.whatsapp import CallEvent, CallOutcome, IncomingMessage

_PHONE_SERVERS = ("s.whatsapp.net", "c.us")
#: E.164 allows at most 15 digits after the "+" (country code included); the shortest numbers
#: WhatsApp uses (small national plans) have 5. THE bounds of every phone check in the product.
E164_MAX_DIGITS = 15
E164_MIN_DIGITS = 5


class InvalidPhone(ValueError):
    """Text that is not a phone number we can use (the message says why)."""


def e164_from_digits(digits: str) -> str | None:
    """``"4917..."`` (or ``"+4917..."``) → ``"+4917..."`` when it has E.164's 5 to 15 digits, else None."""
    digits = digits[1:] if digits.startswith("+") else digits
    if digits.isascii() and digits.isdigit() and E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS:
        return "+" + digits
    return None


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """The product's one phone normaliser: E.164 (``+4917...``) or :class:`InvalidPhone`.

    Accepts ``+49 170 1234567``, ``0049...``, a phone-number JID (``4917...@s.whatsapp.net``), and
    bare digits: those are an international number without its ``+`` (how WhatsApp JIDs carry them)
    unless ``default_region`` (ISO country, e.g. ``"DE"``) says they are national. "Possible" (the
    right length for the country), not "valid": the library's range data lags new allocations, and
    refusing a real sender would lose their messages."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("no phone number given")
    if "@" in text:
        phone = phone_from_jid(text)
        if phone is None:
            raise InvalidPhone(f"not a phone-number JID: {raw!r}")
        return phone
    if text.startswith("00"):
        text = "+" + text[2:]
    elif text[0].isdigit() and default_region is None:
        text = "+" + text
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {raw!r}") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhone(f"not a possible phone number (check the country code): {raw!r}")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if e164_from_digits(e164) is None:  # E.164's own bounds, whatever the library allows
        raise InvalidPhone(f"not a phone number (at most {E164_MAX_DIGITS} digits): {raw!r}")
    return e164
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
    return e164_from_digits(user) if not user.startswith("+") else None


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
    if k is MessageKind.POLL:
        name = msg.poll_name or msg.text or "(no question)"
        lines = [f"📊 Poll: {name}"]
        lines.extend(f"• {option}" for option in msg.poll_options)
        return "\n".join(lines)
    if k is MessageKind.UNSUPPORTED:
        return "[a WhatsApp message type this app cannot show — open WhatsApp on the phone to see it]"
    return msg.text or ""


def poll_vote_text(msg: IncomingMessage, poll_text: str | None = None) -> str:
    """A vote as a note: ``voted: Friday 3pm`` (several options joined), or that the vote was withdrawn.
    ``poll_text``: the poll's own text (its first line names the question), when known."""
    question = _poll_question(poll_text)
    on = f" on {quote(question)}" if question else ""
    if not msg.poll_selected:
        return f"🗳 Withdrew their vote{on}"
    return f"🗳 voted: {', '.join(msg.poll_selected)}{on}"


def _poll_question(poll_text: str | None) -> str | None:
    if not poll_text:
        return None
    first = poll_text.split("\n", 1)[0]
    return first.removeprefix("📊 Poll: ") or None


def group_sender_label(msg: IncomingMessage) -> str | None:
    """``Anna (+4917...)`` for the sender of a group message: name and phone, as far as they are known."""
    phone = msg.sender_phone or phone_from_jid(msg.sender)
    name = msg.push_name
    if name and phone:
        return f"{name} ({phone})"
    return name or phone or (msg.sender.split("@")[0] if msg.sender else None)


def call_text(call: CallEvent, *, tz: tzinfo | None = None) -> str:
    """One readable line for a call: ``Missed WhatsApp voice call at 14:02`` (local time of ``tz``,
    the machine's zone when None)."""
    medium = "video" if call.video else "voice"
    when = call.timestamp.astimezone(tz).strftime("%H:%M")
    lead = {
        CallOutcome.MISSED: "Missed",
        CallOutcome.REJECTED: "Rejected",
        CallOutcome.ANSWERED: "Answered",
        CallOutcome.OFFERED: "Incoming",
    }[call.outcome]
    return f"📞 {lead} WhatsApp {medium} call at {when}"


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
    elif k is MessageKind.POLL_VOTE:
        body = poll_vote_text(msg, target_text)
    else:
        body = describe_body(msg)
        if msg.view_once:
            label = _kind_label(msg.kind)
            body = f"👁 View-once {label} (WhatsApp shows it once)" + (f"\n{body}" if body else "")
        if msg.quoted_id and options.replies:
            body = f"↪ Reply to {quote(target_text)}\n{body}"
    if msg.ephemeral:
        body = f"{body}\n⏳ Disappearing messages are on in this chat"
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
    from dataclasses import fields

    # one level by hand (``dataclasses.asdict`` deep-copies every value: ~70 µs a message on the intake);
    # the only nested dataclass is ``media``, the tuples (poll options) are tuples of str
    data: dict[str, object] = {f.name: getattr(msg, f.name) for f in fields(msg)}
    data["timestamp"] = msg.timestamp.isoformat()
    data["kind"] = msg.kind.value
    if msg.media is not None:
        media = {f.name: getattr(msg.media, f.name) for f in fields(msg.media)}
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
    for name in ("poll_options", "poll_selected"):  # tuples in the event, lists in JSON
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])  # type: ignore[arg-type]
    return IncomingMessage(**values)  # type: ignore[arg-type]
