"""Build *real* neonize event protobufs for tests, with every proto2 ``required`` field filled.

These are the exact types the Go side serializes (``neonize.proto.Neonize_pb2``) carrying real
``waE2E.Message`` content, so a test can push their bytes through neonize's own dispatch
(``client.event.execute``) the way the Go callback does. Nothing here fakes neonize behaviour.
"""

from __future__ import annotations

import ctypes
from typing import Any

from google.protobuf.message import Message as ProtoMessage
from neonize.events import EVENT_TO_INT
from neonize.proto import Neonize_pb2 as N
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as E

PHONE = "491701234567"
OTHER_PHONE = "4915112345678"
LID_USER = "187743256012345"
GROUP = "120363025246125486"
TS_MS = 1_700_000_000_123


def fill_required(msg: ProtoMessage) -> ProtoMessage:
    """Set every missing ``required`` field (recursively) to its default so serialization works."""
    for field in msg.DESCRIPTOR.fields:
        is_required = getattr(field, "is_required", False)
        if field.message_type is not None:
            if field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED:
                for item in getattr(msg, field.name):
                    fill_required(item)
            elif msg.HasField(field.name):
                fill_required(getattr(msg, field.name))
            elif is_required:
                fill_required(getattr(msg, field.name))
                getattr(msg, field.name).SetInParent()
        elif is_required and not msg.HasField(field.name):
            setattr(msg, field.name, field.default_value)
    return msg


def jid(user: str, server: str = "s.whatsapp.net", device: int = 0) -> N.JID:
    return N.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0, IsEmpty=False)


def message_event(
    content: E.Message,
    *,
    msg_id: str = "3EB0ABC",
    chat: N.JID | None = None,
    sender: N.JID | None = None,
    sender_alt: N.JID | None = None,
    recipient_alt: N.JID | None = None,
    from_me: bool = False,
    is_group: bool = False,
    push_name: str = "Alice",
    timestamp_ms: int = TS_MS,
) -> N.Message:
    chat = chat or jid(PHONE)
    source = N.MessageSource(Chat=chat, Sender=sender or chat, IsFromMe=from_me, IsGroup=is_group)
    if sender_alt is not None:
        source.SenderAlt.CopyFrom(sender_alt)
    if recipient_alt is not None:
        source.RecipientAlt.CopyFrom(recipient_alt)
    ev = N.Message(
        Info=N.MessageInfo(MessageSource=source, ID=msg_id, Pushname=push_name, Timestamp=timestamp_ms),
        Message=content,
    )
    return fill_required(ev)  # type: ignore[return-value]


def receipt_event(
    ids: list[str], kind: str = "READ", *, chat: N.JID | None = None, ts_s: int = 1_700_000_100
) -> N.Receipt:
    chat = chat or jid(PHONE)
    ev = N.Receipt(
        MessageSource=N.MessageSource(Chat=chat, Sender=chat, IsFromMe=False, IsGroup=False),
        MessageIDs=ids,
        Timestamp=ts_s,
        Type=N.Receipt.ReceiptType.Value(kind),
    )
    return fill_required(ev)  # type: ignore[return-value]


def key(target: str, *, chat: str = f"{PHONE}@s.whatsapp.net", from_me: bool = False) -> MessageKey:
    return MessageKey(remoteJID=chat, fromMe=from_me, ID=target)


# --- one content sample per message kind ----------------------------------------------------------


def text(body: str = "hello") -> E.Message:
    return E.Message(conversation=body)


def extended_text(body: str = "hello", quoted: str | None = None) -> E.Message:
    ctx = E.ContextInfo(stanzaID=quoted, participant=f"{PHONE}@s.whatsapp.net") if quoted else None
    return E.Message(extendedTextMessage=E.ExtendedTextMessage(text=body, contextInfo=ctx))


def image(caption: str = "look") -> E.Message:
    return E.Message(
        imageMessage=E.ImageMessage(caption=caption, mimetype="image/jpeg", fileLength=2048, URL="https://mmg/x")
    )


def video(caption: str = "clip") -> E.Message:
    return E.Message(videoMessage=E.VideoMessage(caption=caption, mimetype="video/mp4", fileLength=99_000, seconds=12))


def audio(ptt: bool) -> E.Message:
    return E.Message(
        audioMessage=E.AudioMessage(mimetype="audio/ogg; codecs=opus", fileLength=5000, seconds=7, PTT=ptt)
    )


def document(caption: str = "invoice") -> E.Message:
    return E.Message(
        documentMessage=E.DocumentMessage(
            caption=caption, mimetype="application/pdf", fileName="invoice.pdf", fileLength=12345, title="Invoice"
        )
    )


def sticker() -> E.Message:
    return E.Message(stickerMessage=E.StickerMessage(mimetype="image/webp", fileLength=3000))


def reaction(target: str, emoji: str) -> E.Message:
    return E.Message(reactionMessage=E.ReactionMessage(key=key(target), text=emoji))


def edit(target: str, body: str) -> E.Message:
    return E.Message(
        protocolMessage=E.ProtocolMessage(
            type=E.ProtocolMessage.MESSAGE_EDIT, key=key(target), editedMessage=E.Message(conversation=body)
        )
    )


def revoke(target: str) -> E.Message:
    return E.Message(protocolMessage=E.ProtocolMessage(type=E.ProtocolMessage.REVOKE, key=key(target)))


def location() -> E.Message:
    return E.Message(locationMessage=E.LocationMessage(degreesLatitude=52.52, degreesLongitude=13.405, name="Berlin"))


VCARD = "BEGIN:VCARD\nVERSION:3.0\nFN:Bob\nTEL;type=CELL;waid=4915112345678:+49 151 12345678\nEND:VCARD"


def contact() -> E.Message:
    return E.Message(contactMessage=E.ContactMessage(displayName="Bob", vcard=VCARD))


# --- connection events ----------------------------------------------------------------------------


def connection_events() -> dict[str, ProtoMessage]:
    """One of each connection event neonize emits, keyed by its neonize class name."""
    events: dict[str, ProtoMessage] = {
        "ConnectedEv": N.Connected(status=True),
        "DisconnectedEv": N.Disconnected(status=True),
        "LoggedOutEv": N.LoggedOut(OnConnect=True, Reason=N.ConnectFailureReason.Value("LOGGED_OUT")),
        "StreamReplacedEv": N.StreamReplaced(),
        "TemporaryBanEv": N.TemporaryBan(Code=N.TemporaryBan.TempBanReason.Value("BLOCKED_BY_USERS"), Expire=3600),
        "ClientOutdatedEv": N.ClientOutdated(),
        "ConnectFailureEv": N.ConnectFailure(
            Reason=N.ConnectFailureReason.Value("SERVICE_UNAVAILABLE"), Message="try later"
        ),
        "KeepAliveTimeoutEv": N.KeepAliveTimeout(ErrorCount=2, LastSuccess=1_700_000_000),
        "KeepAliveRestoredEv": N.KeepAliveRestored(),
        "PairStatusEv": N.PairStatus(ID=jid(PHONE, device=12), Status=N.PairStatus.PStatus.Value("SUCCESS")),
    }
    for ev in events.values():
        fill_required(ev)
    return events


def dispatch(client: Any, ev: ProtoMessage) -> None:
    """Push ``ev`` through neonize's own dispatch exactly like the Go callback: serialized bytes at
    a C address, the event code, ``client.event.execute`` on the calling (foreign) thread."""
    data = ev.SerializeToString()
    buf = ctypes.create_string_buffer(data, len(data))
    code = EVENT_TO_INT[type(ev)]
    client.event.execute(0, ctypes.addressof(buf), len(data), code)


# --- issue 15: polls, view-once, ephemeral, calls, history sync ------------------------------------

POLL_OPTIONS = ["Friday 3pm", "Monday 10am"]


def poll_creation(name: str = "When can you come?", options: list[str] | None = None) -> E.Message:
    poll = E.PollCreationMessage(name=name, selectableOptionsCount=1, encKey=b"k" * 32)
    for option in options or POLL_OPTIONS:
        poll.options.add(optionName=option)
    return E.Message(pollCreationMessage=poll)


def poll_update(target: str) -> E.Message:
    """A vote as it arrives: the selection is encrypted (only the engine can read it)."""
    return E.Message(
        pollUpdateMessage=E.PollUpdateMessage(
            pollCreationMessageKey=key(target, from_me=True),
            vote=E.PollEncValue(encPayload=b"\x01" * 16, encIV=b"\x02" * 12),
            senderTimestampMS=TS_MS,
        )
    )


def view_once_image(caption: str = "once") -> E.Message:
    inner = image(caption)
    inner.imageMessage.viewOnce = True
    return E.Message(viewOnceMessageV2=E.FutureProofMessage(message=inner))


def ephemeral_text(body: str = "vanishing", expiration: int = 604800) -> E.Message:
    inner = E.Message(
        extendedTextMessage=E.ExtendedTextMessage(text=body, contextInfo=E.ContextInfo(expiration=expiration))
    )
    return E.Message(ephemeralMessage=E.FutureProofMessage(message=inner))


def call_meta(call_id: str = "CALL1", ts_s: int = 1_700_000_200, caller: N.JID | None = None) -> N.BasicCallMeta:
    who = caller or jid(PHONE)
    return N.BasicCallMeta(**{"from": who, "timestamp": ts_s, "callCreator": who, "callID": call_id})


def call_offer(call_id: str = "CALL1", *, video: bool = False) -> N.CallOffer:
    data = N.Node(Tag="offer", Nodes=[N.Node(Tag="video" if video else "audio")])
    return fill_required(N.CallOffer(basicCallMeta=call_meta(call_id), data=data))  # type: ignore[return-value]


def call_terminate(call_id: str = "CALL1", reason: str = "timeout") -> N.CallTerminate:
    ev = N.CallTerminate(basicCallMeta=call_meta(call_id), reason=reason, data=N.Node(Tag="terminate"))
    return fill_required(ev)  # type: ignore[return-value]


def history_sync(chats: dict[str, list[tuple[str, bool, int, str]]], *, progress: int = 40) -> N.HistorySync:
    """``{chat_jid: [(msg_id, from_me, ts_seconds, text), ...]}`` as WhatsApp's HistorySync proto
    (conversations → HistorySyncMsg → WebMessageInfo) inside neonize's ``HistorySync`` event."""
    from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as H

    data = H.HistorySync(syncType=H.HistorySync.INITIAL_BOOTSTRAP, chunkOrder=1, progress=progress)
    for chat, messages in chats.items():
        conv = data.conversations.add(ID=chat, name="Alice")
        for order, (msg_id, from_me, ts, body) in enumerate(messages):
            item = conv.messages.add(msgOrderID=order)
            item.message.key.CopyFrom(MessageKey(remoteJID=chat, fromMe=from_me, ID=msg_id))
            item.message.message.CopyFrom(text(body))
            item.message.messageTimestamp = ts
            if not from_me:
                item.message.pushName = "Alice"
    return fill_required(N.HistorySync(Data=data))  # type: ignore[return-value]
