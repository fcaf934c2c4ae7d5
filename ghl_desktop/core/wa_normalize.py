"""WhatsApp engine events → domain events, as pure functions.

Why it lives in ``core``: it is the one place that knows where WhatsApp hides each piece of a message
(caption inside ``imageMessage``, the quoted id inside ``contextInfo.stanzaID``, an edit inside a
``protocolMessage``, a phone number in ``SenderAlt``) and it must be testable without the engine. It
is duck-typed over neonize's protobuf objects (``neonize.proto.Neonize_pb2.Message`` /
``Receipt`` / connection events and ``waE2E.Message``), so it imports nothing but the stdlib. Enum
numbers are copied from neonize 0.5.2's ``Neonize.proto`` / ``WAWebProtobufsE2E.proto``; a test
checks them against the real descriptors so an engine upgrade that renumbers them fails loudly.

Rules the rest of the product relies on:

* Timestamps: message ``Info.Timestamp`` is in **milliseconds**, receipt ``Timestamp`` in
  **seconds** (neonize's encoder: ``UnixMilli`` vs ``Unix``). Both become aware UTC datetimes.
* LID senders (``…@lid``) get a phone number only from WhatsApp itself: ``SenderAlt`` (or
  ``RecipientAlt`` for our own messages) or the caller's ``resolve_lid`` callback (the engine's
  local LID→PN store). Otherwise ``sender_phone`` stays ``None``: a LID's digits are never a phone
  number and are never presented as one.
* In a 1:1 chat addressed by LID, ``chat`` becomes the phone JID when WhatsApp told us the phone
  (so the same customer is the same chat whichever addressing WhatsApp used); ``sender_lid`` keeps
  the LID. Group chats keep the group JID.
* JIDs are written without the device part (``user@server``): a chat or person, not a device.
* Engine plumbing (sender-key distribution, history-sync notices, app-state keys) normalizes to
  ``None`` — nothing to show. Content we do not model becomes ``MessageKind.UNSUPPORTED`` so the
  user still sees that something arrived.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from ghl_desktop.core.convert import e164_from_digits, phone_from_jid
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import (
    CallEvent,
    CallOutcome,
    ClientOutdated,
    Connected,
    ConnectFailed,
    Disconnected,
    HistoryChat,
    HistorySync,
    IncomingMessage,
    KeepAliveLost,
    KeepAliveRestored,
    LoggedOut,
    MediaInfo,
    Paired,
    Receipt,
    ReceiptKind,
    StreamReplaced,
    TemporarilyBanned,
    TransportEvent,
)

#: ``LidResolver(lid_jid) -> phone JID or E.164 or None`` — a synchronous lookup the caller prepared
#: (the transport resolves through the engine store before calling the normalizer).
LidResolver = Callable[[str], str | None]

# --- enum numbers (neonize 0.5.2; checked against the descriptors in tests) ---------------------

PROTOCOL_REVOKE = 0
PROTOCOL_MESSAGE_EDIT = 14

RECEIPT_DELIVERED = 1
RECEIPT_READ = 4
RECEIPT_PLAYED = 6

PAIR_STATUS_ERROR = 1
PAIR_STATUS_SUCCESS = 2

#: ConnectFailureReason numbers → (name, permanent). Permanent ones need the user (re-pair, update).
CONNECT_FAILURE_REASONS: dict[int, tuple[str, bool]] = {
    1: ("generic", False),
    2: ("logged out", True),
    3: ("temp banned", True),
    4: ("main device gone", True),
    5: ("unknown logout", True),
    6: ("client outdated", True),
    7: ("bad user agent", True),
    8: ("internal server error", False),
    9: ("experimental", False),
    10: ("service unavailable", False),
}

#: TempBanReason numbers → readable reason (kept for logs and the UI).
TEMP_BAN_REASONS: dict[int, str] = {
    1: "sent to too many people",
    2: "blocked by users",
    3: "created too many groups",
    4: "sent too many same message",
    5: "broadcast list",
}

LID_SERVER = "lid"
PHONE_SERVER = "s.whatsapp.net"
GROUP_SERVER = "g.us"

#: First QR code lives 60 s, each following one 20 s (whatsmeow ``qrchan.go``).
FIRST_QR_SECONDS = 60.0
NEXT_QR_SECONDS = 20.0

_MEDIA_FIELDS: tuple[tuple[str, MessageKind], ...] = (
    ("imageMessage", MessageKind.IMAGE),
    ("videoMessage", MessageKind.VIDEO),
    ("ptvMessage", MessageKind.VIDEO),  # round video note
    ("audioMessage", MessageKind.AUDIO),  # VOICE when PTT
    ("documentMessage", MessageKind.DOCUMENT),
    ("stickerMessage", MessageKind.STICKER),
)

#: Fields that carry no user content: a message with only these is engine plumbing.
_PLUMBING_FIELDS = frozenset(
    {
        "senderKeyDistributionMessage",
        "fastRatchetKeySenderKeyDistributionMessage",
        "messageContextInfo",
        "protocolMessage",
        "deviceSentMessage",
    }
)

#: Wrappers whose inner ``.message`` is the real content (history sync and some clients keep them).
_WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
)


# --- small duck-typed helpers ---------------------------------------------------------------------


def _has(obj: Any, name: str) -> bool:
    """Is sub-message ``name`` set? Uses protobuf presence when the object has it."""
    if obj is None:
        return False
    has_field = getattr(obj, "HasField", None)
    if has_field is not None:
        try:
            return bool(has_field(name))
        except ValueError:  # a scalar/repeated field: fall back to truthiness
            pass
    return bool(getattr(obj, name, None))


def _str(obj: Any, name: str) -> str | None:
    value = getattr(obj, name, None) if obj is not None else None
    return value if isinstance(value, str) and value != "" else None


def _int(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None) if obj is not None else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def jid_to_str(jid: Any) -> str | None:
    """``user@server`` (device dropped) or None for an empty JID."""
    if jid is None:
        return None
    user = getattr(jid, "User", "") or ""
    server = getattr(jid, "Server", "") or ""
    if not user or not server:
        return None
    return f"{user}@{server}"


def is_lid(jid: str | None) -> bool:
    return bool(jid) and str(jid).endswith("@" + LID_SERVER)


def phone_jid(phone: str) -> str:
    """``+4917…`` or ``4917…`` → ``4917…@s.whatsapp.net``."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    return f"{digits}@{PHONE_SERVER}"


def _as_phone(value: str | None) -> str | None:
    """Accept a resolver's answer as a phone JID or an E.164 number."""
    if not value:
        return None
    if "@" in value:
        return phone_from_jid(value)
    return e164_from_digits(value)


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def s_to_datetime(seconds: int) -> datetime:
    return datetime.fromtimestamp(float(seconds), tz=UTC)


# --- messages -------------------------------------------------------------------------------------


def _unwrap(msg: Any) -> Any:
    """Peel wrappers whatsmeow did not already remove (history sync keeps some)."""
    for _ in range(4):
        for name in _WRAPPERS:
            if _has(msg, name):
                inner = getattr(getattr(msg, name), "message", None)
                if inner is not None:
                    msg = inner
                    break
        else:
            return msg
    return msg


def _context_of(msg: Any) -> Any:
    for name in ("extendedTextMessage", *(f for f, _ in _MEDIA_FIELDS), "locationMessage", "contactMessage"):
        if _has(msg, name):
            sub = getattr(msg, name)
            if _has(sub, "contextInfo"):
                return sub.contextInfo
    return None


def message_text(msg: Any) -> str | None:
    """The body of a text message or the caption of a media message."""
    if msg is None:
        return None
    msg = _unwrap(msg)
    text = _str(msg, "conversation")
    if text is not None:
        return text
    if _has(msg, "extendedTextMessage"):
        return _str(msg.extendedTextMessage, "text")
    for name, _kind in _MEDIA_FIELDS:
        if _has(msg, name):
            return _str(getattr(msg, name), "caption")
    return None


def _content_fields(msg: Any) -> list[str]:
    list_fields = getattr(msg, "ListFields", None)
    if list_fields is None:
        return []
    return [descriptor.name for descriptor, _value in list_fields()]


_POLL_CREATION_FIELDS = (
    "pollCreationMessage",
    "pollCreationMessageV2",
    "pollCreationMessageV3",
    "pollCreationMessageV4",
    "pollCreationMessageV5",
    "pollCreationMessageV6",
)


def _wrapped_by(msg: Any, names: tuple[str, ...]) -> bool:
    """True when ``msg`` (or a wrapper inside it) uses one of the wrapper fields ``names``."""
    for _ in range(4):
        if msg is None:
            return False
        for name in names:
            if _has(msg, name):
                return True
        for name in _WRAPPERS:
            if _has(msg, name):
                msg = getattr(getattr(msg, name), "message", None)
                break
        else:
            return False
    return False


def poll_option_hash(name: str) -> bytes:
    """WhatsApp identifies a voted option by SHA-256 of its name (whatsmeow's HashPollOptions)."""
    return hashlib.sha256(name.encode("utf-8")).digest()


#: the option hashes a PollUpdateMessage's encrypted vote holds (the engine decrypts: neonize
#: ``client.decrypt_poll_vote(message_ev)`` → ``PollVoteMessage.selectedOptions``)
PollVoteDecrypter = Callable[[Any], "list[bytes] | None"]
#: the option names of a poll the transport saw earlier, by the poll's message id
PollOptionsLookup = Callable[[str], "list[str] | None"]


def is_poll_vote(ev: Any) -> bool:
    """A ``MessageEv`` carrying a poll vote (whose selection only the engine can decrypt)."""
    return _has(_unwrap(ev.Message), "pollUpdateMessage")


def normalize_message(
    ev: Any,
    *,
    resolve_lid: LidResolver | None = None,
    decrypt_poll_vote: PollVoteDecrypter | None = None,
    poll_options: PollOptionsLookup | None = None,
) -> IncomingMessage | None:
    """A neonize ``MessageEv`` as an :class:`IncomingMessage`; None for engine plumbing."""
    info = ev.Info
    source = info.MessageSource
    raw = ev.Message
    msg = _unwrap(raw)

    is_group = bool(getattr(source, "IsGroup", False))
    from_me = bool(getattr(source, "IsFromMe", False))
    chat = jid_to_str(source.Chat) or ""
    sender = jid_to_str(source.Sender) or chat
    sender_alt = jid_to_str(getattr(source, "SenderAlt", None))
    recipient_alt = jid_to_str(getattr(source, "RecipientAlt", None))

    sender_lid: str | None = None
    sender_phone: str | None = None
    if is_lid(sender):
        sender_lid = sender
        sender_phone = phone_from_jid(sender_alt)
        if sender_phone is None and resolve_lid is not None:
            sender_phone = _as_phone(resolve_lid(sender))
    else:
        sender_phone = phone_from_jid(sender)
        if is_lid(sender_alt):
            sender_lid = sender_alt

    if not is_group and is_lid(chat):
        # 1:1 chat addressed by LID: prefer the phone JID when WhatsApp gave it.
        counterpart_alt = recipient_alt if from_me else sender_alt
        chat_phone = phone_from_jid(counterpart_alt)
        if chat_phone is None and not from_me and sender_phone is not None:
            chat_phone = sender_phone
        if chat_phone is None and resolve_lid is not None:
            chat_phone = _as_phone(resolve_lid(chat))
        if chat_phone is not None:
            chat = phone_jid(chat_phone)

    base: dict[str, Any] = {
        "id": info.ID,
        "chat": chat,
        "sender": sender,
        "sender_phone": sender_phone,
        "sender_lid": sender_lid,
        "push_name": _str(info, "Pushname"),
        "timestamp": ms_to_datetime(int(getattr(info, "Timestamp", 0) or 0)),
        "from_me": from_me,
        "is_group": is_group,
    }
    ctx = _context_of(msg)
    quoted = _str(ctx, "stanzaID")

    # view-once / disappearing: whatsmeow unwraps the wrapper and sets IsViewOnce*/IsEphemeral on the
    # event; history sync keeps the wrapper. The disappearing timer is contextInfo.expiration (seconds).
    view_once = bool(
        getattr(ev, "IsViewOnce", False)
        or getattr(ev, "IsViewOnceV2", False)
        or getattr(ev, "IsViewOnceV2Extension", False)
        or _wrapped_by(raw, ("viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension"))
    )
    for name, _kind in _MEDIA_FIELDS:
        if _has(msg, name) and bool(getattr(getattr(msg, name), "viewOnce", False)):
            view_once = True
    expiration = _int(ctx, "expiration") or None
    ephemeral = bool(getattr(ev, "IsEphemeral", False) or _wrapped_by(raw, ("ephemeralMessage",)) or expiration)
    if view_once:
        base["view_once"] = True
    if ephemeral:
        base["ephemeral"] = True
        base["expiration"] = expiration

    for name in _POLL_CREATION_FIELDS:
        if _has(msg, name):
            poll = getattr(msg, name)
            options = tuple(o for o in (_str(opt, "optionName") for opt in getattr(poll, "options", [])) if o)
            return IncomingMessage(
                **base, kind=MessageKind.POLL, poll_name=_str(poll, "name") or "", poll_options=options,
                text=_str(poll, "name"), quoted_id=_str(getattr(poll, "contextInfo", None), "stanzaID"),
            )
    if _has(msg, "pollUpdateMessage"):
        update = msg.pollUpdateMessage
        target = _str(getattr(update, "pollCreationMessageKey", None), "ID")
        hashes = decrypt_poll_vote(ev) if decrypt_poll_vote is not None else None
        if hashes is None:
            # not decryptable here (no engine, or the poll's secret is unknown): say so, do not guess
            return IncomingMessage(**base, kind=MessageKind.UNSUPPORTED, target_id=target)
        known = (poll_options(target) if (poll_options is not None and target) else None) or []
        by_hash = {poll_option_hash(o): o for o in known}
        selected = tuple(by_hash.get(bytes(h), bytes(h).hex()) for h in hashes)
        return IncomingMessage(**base, kind=MessageKind.POLL_VOTE, target_id=target, poll_selected=selected)

    # protocol messages: edits and revokes; the rest is plumbing
    if _has(msg, "protocolMessage"):
        proto = msg.protocolMessage
        ptype = int(getattr(proto, "type", -1))
        target = _str(getattr(proto, "key", None), "ID")
        if ptype == PROTOCOL_REVOKE and target:
            return IncomingMessage(**base, kind=MessageKind.REVOKE, target_id=target)
        if ptype == PROTOCOL_MESSAGE_EDIT and target:
            edited = getattr(proto, "editedMessage", None) if _has(proto, "editedMessage") else None
            return IncomingMessage(**base, kind=MessageKind.EDIT, target_id=target, text=message_text(edited))
        return None

    if _has(msg, "reactionMessage"):
        reaction = msg.reactionMessage
        return IncomingMessage(
            **base,
            kind=MessageKind.REACTION,
            target_id=_str(getattr(reaction, "key", None), "ID"),
            reaction=getattr(reaction, "text", "") or "",
        )

    text = _str(msg, "conversation")
    if text is not None:
        return IncomingMessage(**base, kind=MessageKind.TEXT, text=text, quoted_id=quoted)
    if _has(msg, "extendedTextMessage"):
        return IncomingMessage(
            **base, kind=MessageKind.TEXT, text=_str(msg.extendedTextMessage, "text") or "", quoted_id=quoted
        )

    for name, kind in _MEDIA_FIELDS:
        if not _has(msg, name):
            continue
        media = getattr(msg, name)
        if name == "audioMessage" and bool(getattr(media, "PTT", False)):
            kind = MessageKind.VOICE
        serialize = getattr(ev.Message, "SerializeToString", None)
        info_out = MediaInfo(
            mimetype=_str(media, "mimetype"),
            file_name=(_str(media, "fileName") or _str(media, "title")) if name == "documentMessage" else None,
            size=_int(media, "fileLength"),
            seconds=_int(media, "seconds"),
            handle=serialize() if serialize is not None else None,
        )
        return IncomingMessage(**base, kind=kind, text=_str(media, "caption"), media=info_out, quoted_id=quoted)

    for name in ("locationMessage", "liveLocationMessage"):
        if _has(msg, name):
            loc = getattr(msg, name)
            return IncomingMessage(
                **base,
                kind=MessageKind.LOCATION,
                latitude=float(getattr(loc, "degreesLatitude", 0.0)),
                longitude=float(getattr(loc, "degreesLongitude", 0.0)),
                location_name=_str(loc, "name") or _str(loc, "address"),
                text=_str(loc, "caption") if name == "liveLocationMessage" else None,
                quoted_id=quoted,
            )

    if _has(msg, "contactMessage"):
        card = msg.contactMessage
        return IncomingMessage(
            **base,
            kind=MessageKind.CONTACT,
            vcard=_str(card, "vcard"),
            contact_name=_str(card, "displayName"),
            quoted_id=quoted,
        )
    if _has(msg, "contactsArrayMessage"):
        cards = list(getattr(msg.contactsArrayMessage, "contacts", []))
        vcards = [v for v in (_str(c, "vcard") for c in cards) if v]
        names = [n for n in (_str(c, "displayName") for c in cards) if n]
        return IncomingMessage(
            **base,
            kind=MessageKind.CONTACT,
            vcard="\n".join(vcards) or None,
            contact_name=_str(msg.contactsArrayMessage, "displayName") or ", ".join(names) or None,
        )

    fields = _content_fields(msg)
    if not fields or set(fields) <= _PLUMBING_FIELDS:
        return None
    return IncomingMessage(**base, kind=MessageKind.UNSUPPORTED)


# --- receipts -------------------------------------------------------------------------------------

_RECEIPT_KINDS = {
    RECEIPT_DELIVERED: ReceiptKind.DELIVERED,
    RECEIPT_READ: ReceiptKind.READ,
    RECEIPT_PLAYED: ReceiptKind.PLAYED,
}


def normalize_receipt(ev: Any) -> Receipt | None:
    """A neonize ``ReceiptEv`` as a :class:`Receipt`, or None for receipt types that say nothing
    about a message we sent (our own other devices' read marks, retries, server errors, inactive,
    peer and history-sync receipts)."""
    kind = _RECEIPT_KINDS.get(int(getattr(ev, "Type", 0) or 0))
    if kind is None:
        return None
    ids = tuple(str(i) for i in getattr(ev, "MessageIDs", ()) if i)
    if not ids:
        return None
    source = ev.MessageSource
    chat = jid_to_str(source.Chat) or ""
    sender = jid_to_str(source.Sender)
    if not bool(getattr(source, "IsGroup", False)) and is_lid(chat):
        alt_phone = phone_from_jid(jid_to_str(getattr(source, "SenderAlt", None)))
        if alt_phone is not None:
            chat = phone_jid(alt_phone)
    return Receipt(
        chat=chat,
        message_ids=ids,
        kind=kind,
        timestamp=s_to_datetime(int(getattr(ev, "Timestamp", 0) or 0)),
        sender=sender,
    )


# --- connection events ----------------------------------------------------------------------------


def _failure_reason(reason: int) -> tuple[str, bool]:
    return CONNECT_FAILURE_REASONS.get(reason, (f"reason {reason}", False))


def normalize_connection_event(ev: Any, *, now: datetime | None = None) -> TransportEvent | None:
    """A neonize connection event (by its protobuf type name) as a domain event.

    ``now`` anchors a temporary ban's expiry (WhatsApp sends a duration, not a time)."""
    name = ev.DESCRIPTOR.name
    if name == "Connected":
        return Connected()
    if name == "Disconnected":
        return Disconnected(reason="connection closed")
    if name == "LoggedOut":
        reason, _ = _failure_reason(int(getattr(ev, "Reason", 0) or 0))
        where = "on connect" if bool(getattr(ev, "OnConnect", False)) else "while connected"
        return LoggedOut(reason=f"{reason} ({where})")
    if name == "StreamReplaced":
        return StreamReplaced()
    if name == "TemporaryBan":
        expire = int(getattr(ev, "Expire", 0) or 0)
        moment = now or datetime.now(tz=UTC)
        return TemporarilyBanned(
            code=int(getattr(ev, "Code", 0) or 0),
            expires_at=moment + timedelta(seconds=expire) if expire > 0 else None,
        )
    if name == "ClientOutdated":
        return ClientOutdated()
    if name == "ConnectFailure":
        reason, permanent = _failure_reason(int(getattr(ev, "Reason", 0) or 0))
        message = _str(ev, "Message")
        return ConnectFailed(reason=f"{reason}: {message}" if message else reason, permanent=permanent)
    if name == "KeepAliveTimeout":
        return KeepAliveLost()
    if name == "KeepAliveRestored":
        return KeepAliveRestored()
    if name == "PairStatus":
        status = int(getattr(ev, "Status", 0) or 0)
        jid = jid_to_str(getattr(ev, "ID", None))
        if status == PAIR_STATUS_SUCCESS and jid:
            return Paired(jid=jid, phone=phone_from_jid(jid))
        return ConnectFailed(reason=f"pairing failed: {_str(ev, 'Error') or 'unknown error'}", permanent=False)
    return None


def qr_lifetime(index: int) -> float:
    """Seconds the ``index``-th QR code of one login attempt stays valid (0-based)."""
    return FIRST_QR_SECONDS if index == 0 else NEXT_QR_SECONDS


# --- history sync ---------------------------------------------------------------------------------


class _Jid:
    """A JID given as ``user@server`` text (history sync keys are strings), shaped like neonize's JID."""

    __slots__ = ("Server", "User")

    def __init__(self, text: str | None) -> None:
        user, _, server = (text or "").partition("@")
        self.User = user.split(":", 1)[0]
        self.Server = server


class _Source:
    def __init__(self, chat: str, sender: str, from_me: bool, is_group: bool) -> None:
        self.Chat = _Jid(chat)
        self.Sender = _Jid(sender)
        self.SenderAlt = _Jid(None)
        self.RecipientAlt = _Jid(None)
        self.IsFromMe = from_me
        self.IsGroup = is_group


class _Info:
    def __init__(self, web: Any, chat: str, own_jid: str | None) -> None:
        key = web.key
        from_me = bool(getattr(key, "fromMe", False))
        is_group = chat.endswith("@g.us")
        participant = _str(key, "participant") or _str(web, "participant")
        if from_me:
            sender = own_jid or chat
        else:
            sender = participant if (is_group and participant) else chat
        self.MessageSource = _Source(chat, sender, from_me, is_group)
        self.ID = _str(key, "ID") or ""
        self.Pushname = _str(web, "pushName") or ""
        self.Timestamp = int(getattr(web, "messageTimestamp", 0) or 0) * 1000


class _HistoryEv:
    def __init__(self, web: Any, chat: str, own_jid: str | None) -> None:
        self.Info = _Info(web, chat, own_jid)
        self.Message = web.message


def normalize_history_sync(
    ev: Any, *, own_jid: str | None = None, resolve_lid: LidResolver | None = None
) -> HistorySync:
    """A neonize ``HistorySync`` event (``ev.Data`` is WhatsApp's HistorySync proto) as a
    :class:`HistorySync` batch: person and group chats with their messages oldest first, original
    timestamps (``messageTimestamp`` is in seconds), ``from_me`` from the message key."""
    data = getattr(ev, "Data", ev)
    chats: list[HistoryChat] = []
    for conv in getattr(data, "conversations", []):
        chat = _str(conv, "ID") or _str(conv, "newJID")
        if not chat or chat.endswith("@broadcast") or chat.endswith("@newsletter"):
            continue
        messages: list[IncomingMessage] = []
        for item in getattr(conv, "messages", []):
            web = getattr(item, "message", None)
            if web is None or not _has(web, "message") or not _str(getattr(web, "key", None), "ID"):
                continue
            try:
                normalized = normalize_message(_HistoryEv(web, chat, own_jid), resolve_lid=resolve_lid)
            except Exception:  # one odd message must not drop the batch
                continue
            if normalized is None or normalized.kind in (MessageKind.UNSUPPORTED,):
                continue
            messages.append(dataclasses.replace(normalized, from_history=True))
        if not messages:
            continue
        messages.sort(key=lambda m: m.timestamp)
        is_group = chat.endswith("@g.us")
        chat_key = messages[0].chat
        chats.append(
            HistoryChat(
                chat=chat_key,
                phone=None if is_group else phone_from_jid(chat_key),
                name=_str(conv, "name") or _str(conv, "displayName"),
                messages=tuple(messages),
                is_group=is_group,
            )
        )
    sync_type = getattr(data, "syncType", 0)
    type_name = ""
    try:
        type_name = data.DESCRIPTOR.fields_by_name["syncType"].enum_type.values_by_number[int(sync_type)].name
    except Exception:
        type_name = str(sync_type)
    progress = getattr(data, "progress", None)
    return HistorySync(
        chats=tuple(chats),
        sync_type=type_name,
        chunk_order=int(getattr(data, "chunkOrder", 0) or 0),
        progress=int(progress) if isinstance(progress, int) and _has_scalar(data, "progress") else None,
    )


def _has_scalar(obj: Any, name: str) -> bool:
    has_field = getattr(obj, "HasField", None)
    if has_field is None:
        return getattr(obj, name, None) is not None
    try:
        return bool(has_field(name))
    except ValueError:
        return bool(getattr(obj, name, None))


# --- calls ----------------------------------------------------------------------------------------


def _call_is_video(ev: Any) -> bool:
    """CallOffer's ``data`` node is the ``<offer>`` stanza: a ``<video>`` child marks a video call;
    CallOfferNotice says it in ``media``."""
    media = _str(ev, "media")
    if media is not None:
        return media == "video"
    data = getattr(ev, "data", None)
    for node in getattr(data, "Nodes", []) if data is not None else []:
        if getattr(node, "Tag", "") == "video":
            return True
    return False


def _call_time(value: int) -> datetime:
    """BasicCallMeta.timestamp: seconds or milliseconds since the epoch (a value above 1e11 can
    only be milliseconds — 1e11 s is the year 5138)."""
    return ms_to_datetime(value) if value > 100_000_000_000 else s_to_datetime(value)


def normalize_call(ev: Any, *, resolve_lid: LidResolver | None = None) -> CallEvent | None:
    """neonize ``CallOffer`` / ``CallOfferNotice`` → OFFERED, ``CallAccept`` → ANSWERED,
    ``CallTerminate`` → MISSED, or REJECTED when its reason says so; None for other call plumbing."""
    name = ev.DESCRIPTOR.name if hasattr(ev, "DESCRIPTOR") else type(ev).__name__
    meta = getattr(ev, "basicCallMeta", None)
    if meta is None:
        return None
    if name in ("CallOffer", "CallOfferNotice"):
        outcome = CallOutcome.OFFERED
    elif name == "CallAccept":
        outcome = CallOutcome.ANSWERED
    elif name == "CallTerminate":
        reason = (_str(ev, "reason") or "").lower()
        if "reject" in reason or "decline" in reason or "busy" in reason:
            outcome = CallOutcome.REJECTED
        elif "accept" in reason:
            outcome = CallOutcome.ANSWERED
        else:
            outcome = CallOutcome.MISSED
    else:
        return None
    caller = jid_to_str(getattr(meta, "callCreator", None)) or jid_to_str(getattr(meta, "from", None)) or ""
    alt = jid_to_str(getattr(meta, "callCreatorAlt", None))
    phone: str | None = None
    if is_lid(caller):
        phone = phone_from_jid(alt)
        if phone is None and resolve_lid is not None:
            phone = _as_phone(resolve_lid(caller))
    else:
        phone = phone_from_jid(caller)
    from_jid = jid_to_str(getattr(meta, "from", None)) or ""
    return CallEvent(
        call_id=_str(meta, "callID") or "",
        caller=caller,
        caller_phone=phone,
        video=_call_is_video(ev),
        outcome=outcome,
        timestamp=_call_time(int(getattr(meta, "timestamp", 0) or 0)),
        is_group=from_jid.endswith("@g.us"),
    )
