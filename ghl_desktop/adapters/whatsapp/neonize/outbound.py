"""Sending and store calls. The WhatsApp messages are built by pure functions (``text_message``,
``quote``, ``reaction_message``, ``presence_states``, ``send_result``, ``sendable_kind``): what we ask
WhatsApp to send can be checked without an engine or a logged-in transport."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ghl_desktop.adapters.whatsapp.neonize.engine import EngineStatus, ffmpeg_available, map_error, to_jid
from ghl_desktop.core import wa_normalize as wn
from ghl_desktop.core.convert import phone_from_jid
from ghl_desktop.core.errors import NotOnWhatsApp, SessionLoggedOut, SessionNotConnected, WhatsAppError
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import MediaInfo, OutgoingMedia, PresenceKind, SendResult

#: how long a group's subject (or its absence) is reused before the engine is asked again
GROUP_SUBJECT_TTL = 600.0

# --- pure message builders ----------------------------------------------------------------------

def participant(chat: str) -> str:
    """``user@server`` of a chat, without the device part (what a quote's participant carries)."""
    jid = to_jid(chat)
    return f"{jid.User}@{jid.Server}"


def send_result(response: Any) -> SendResult:
    """The domain result of an engine ``SendResponse`` (its timestamp, or now when it has none)."""
    ts = int(getattr(response, "Timestamp", 0) or 0)
    moment = datetime.fromtimestamp(ts, tz=UTC) if ts > 0 else datetime.now(tz=UTC)
    return SendResult(message_id=str(response.ID), timestamp=moment)


def text_message(chat: str, text: str, quoted_id: str | None = None) -> Any:
    """A text, verbatim (a str given to neonize would turn "@4917…" into mentions); a reply quotes
    ``quoted_id``."""
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import ContextInfo, ExtendedTextMessage, Message

    if quoted_id:
        return Message(extendedTextMessage=ExtendedTextMessage(
            text=text, contextInfo=ContextInfo(stanzaID=quoted_id, participant=participant(chat))))
    return Message(conversation=text)


def quote(message: Any, chat: str, quoted_id: str | None) -> Any:
    """``message`` (a built media message) replying to ``quoted_id``: the first sub-message with a
    context info carries the quote. Returns the same message."""
    if quoted_id:
        for _descriptor, sub in message.ListFields():
            if hasattr(sub, "contextInfo"):
                sub.contextInfo.stanzaID = quoted_id
                sub.contextInfo.participant = participant(chat)
                break
    return message


def reaction_message(chat: str, target_id: str, emoji: str, *, from_me: bool, now_ms: int | None = None) -> Any:
    from neonize.proto.waCommon.WACommon_pb2 import MessageKey
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message, ReactionMessage

    key = MessageKey(remoteJID=participant(chat), fromMe=from_me, ID=target_id)
    when = int(datetime.now(tz=UTC).timestamp() * 1000) if now_ms is None else now_ms
    return Message(reactionMessage=ReactionMessage(key=key, text=emoji, senderTimestampMS=when))


def edit_body(text: str) -> Any:
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

    return Message(conversation=text)


def presence_states(presence: PresenceKind) -> tuple[Any, Any]:
    """(ChatPresence, ChatPresenceMedia) for a presence."""
    from neonize.utils.enum import ChatPresence, ChatPresenceMedia

    state = ChatPresence.CHAT_PRESENCE_PAUSED if presence is PresenceKind.PAUSED \
        else ChatPresence.CHAT_PRESENCE_COMPOSING
    media = ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO if presence is PresenceKind.RECORDING \
        else ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT
    return state, media


def sendable_kind(kind: MessageKind, *, ffmpeg: bool) -> MessageKind:
    """Audio, voice and video need ffmpeg/ffprobe in neonize; without them they go as documents."""
    if kind in (MessageKind.AUDIO, MessageKind.VOICE, MessageKind.VIDEO) and not ffmpeg:
        return MessageKind.DOCUMENT
    return kind


class Outbound:
    """The transport's sending side (mixed into ``NeonizeTransport``, which sets these attributes)."""

    session_id: str
    log: logging.Logger
    status: EngineStatus
    _client: Any
    #: group jid -> (when asked, its subject or None); made on first use (group_subject)
    _group_subjects: dict[str, tuple[float, str | None]] | None = None

    if TYPE_CHECKING:
        @property
        def logged_in(self) -> bool: ...  # NeonizeTransport's

    # --- store calls (trap 1) ---------------------------------------------------------------

    def _require_logged_in(self, action: str) -> Any:
        """Store-touching calls panic the Go runtime (SIGABRT) unless the device is registered and
        paired: refuse them instead."""
        if not self.logged_in:
            if self.status is EngineStatus.LOGGED_OUT:
                raise SessionLoggedOut(f"{action}: the number was unlinked")
            raise SessionNotConnected(f"{action}: session {self.session_id} is not logged in")
        return self._client

    async def get_me(self) -> str | None:
        """Our own JID, or None when not logged in (never touches the store then)."""
        try:
            client = self._require_logged_in("get own number")
        except WhatsAppError:
            return None
        device = await client.get_me()
        return wn.jid_to_str(getattr(device, "JID", None))

    async def resolve_lid(self, lid: str) -> str | None:
        try:
            client = self._require_logged_in("resolve LID")
        except WhatsAppError:
            return None
        try:
            pn = await client.get_pn_from_lid(to_jid(lid))
        except Exception as exc:
            self.log.warning("LID lookup failed for %s: %s", lid, exc)
            return None
        return phone_from_jid(wn.jid_to_str(pn))

    # --- sending -----------------------------------------------------------------------------

    async def _send(self, chat: str, message: Any, action: str) -> SendResult:
        client = self._require_logged_in(action)
        try:
            response = await client.send_message(to_jid(chat), message)
        except Exception as exc:
            raise map_error(exc, action) from exc
        return send_result(response)

    async def send_text(
        self, chat: str, text: str, *, quoted_id: str | None = None, message_id: str | None = None
    ) -> SendResult:
        # ``message_id`` is ignored: neonize 0.5.2 cannot send with a caller-chosen id, so a crash
        # between WhatsApp accepting a message and the bridge recording its id can repeat that send.
        return await self._send(chat, text_message(chat, text, quoted_id), "send text")

    async def send_media(
        self, chat: str, media: OutgoingMedia, *, quoted_id: str | None = None, message_id: str | None = None
    ) -> SendResult:
        # ``message_id`` is ignored for the same reason as in send_text.
        client = self._require_logged_in("send media")
        kind = sendable_kind(media.kind, ffmpeg=ffmpeg_available())
        if kind is not media.kind:
            self.log.warning(
                "ffmpeg/ffprobe not found: sending %s %r as a document instead", media.kind.value, media.file_name
            )
        try:
            if kind is MessageKind.IMAGE:
                msg = await client.build_image_message(media.data, caption=media.caption)
            elif kind is MessageKind.VIDEO:
                msg = await client.build_video_message(media.data, caption=media.caption)
            elif kind in (MessageKind.AUDIO, MessageKind.VOICE):
                msg = await client.build_audio_message(media.data, ptt=kind is MessageKind.VOICE)
            elif kind is MessageKind.STICKER:
                msg = await client.build_sticker_message(media.data, passthrough=True)
            else:
                msg = await client.build_document_message(
                    media.data,
                    caption=media.caption,
                    title=media.file_name,
                    filename=media.file_name,
                    mimetype=media.mimetype,
                )
        except Exception as exc:
            raise map_error(exc, f"upload {kind.value}") from exc
        return await self._send(chat, quote(msg, chat, quoted_id), f"send {kind.value}")

    async def send_reaction(self, chat: str, target_id: str, emoji: str, *, from_me: bool) -> SendResult:
        self._require_logged_in("react")
        return await self._send(chat, reaction_message(chat, target_id, emoji, from_me=from_me), "react")

    async def edit(self, chat: str, target_id: str, text: str) -> SendResult:
        client = self._require_logged_in("edit")
        try:
            response = await client.edit_message(to_jid(chat), target_id, edit_body(text))
        except Exception as exc:
            raise map_error(exc, "edit") from exc
        return send_result(response)

    async def revoke(self, chat: str, target_id: str) -> SendResult:
        client = self._require_logged_in("revoke")
        me = await self.get_me()
        if me is None:
            raise SessionNotConnected("revoke: own number unknown")
        try:
            response = await client.revoke_message(to_jid(chat), to_jid(me), target_id)
        except Exception as exc:
            raise map_error(exc, "revoke") from exc
        return send_result(response)

    async def mark_read(self, chat: str, sender: str, message_ids: list[str]) -> None:
        from neonize.utils.enum import ReceiptType

        client = self._require_logged_in("mark read")
        if not message_ids:
            return
        try:
            await client.mark_read(*message_ids, chat=to_jid(chat), sender=to_jid(sender), receipt=ReceiptType.READ)
        except Exception as exc:
            raise map_error(exc, "mark read") from exc

    async def send_presence(self, chat: str, presence: PresenceKind) -> None:
        client = self._require_logged_in("send presence")
        state, media = presence_states(presence)
        try:
            await client.send_chat_presence(to_jid(chat), state, media)
        except Exception as exc:
            raise map_error(exc, "send presence") from exc

    async def is_on_whatsapp(self, phone: str) -> str | None:
        client = self._require_logged_in("check number")
        digits = "".join(ch for ch in phone if ch.isdigit())
        try:
            answers = await client.is_on_whatsapp(digits)
        except Exception as exc:
            raise map_error(exc, "check number") from exc
        for answer in answers:
            if getattr(answer, "IsIn", False):
                return wn.jid_to_str(answer.JID)
        return None

    async def require_on_whatsapp(self, phone: str) -> str:
        jid = await self.is_on_whatsapp(phone)
        if jid is None:
            raise NotOnWhatsApp(f"{phone} has no WhatsApp account")
        return jid

    async def reject_call(self, caller: str, call_id: str) -> None:
        client = self._require_logged_in("reject call")
        try:
            await client.reject_call(to_jid(caller), call_id)
        except Exception as exc:
            raise map_error(exc, "reject call") from exc

    async def group_subject(self, jid: str) -> str | None:
        """The group's subject from ``get_group_info`` (neonize's async client runs the engine call on
        a worker thread), cached per group for ``GROUP_SUBJECT_TTL`` seconds (a miss too: a group
        without a subject is not asked again for every message); None when it cannot be asked."""
        now = time.monotonic()
        cache = self._group_subjects
        if cache is None:
            cache = self._group_subjects = {}
        hit = cache.get(jid)
        if hit is not None and now - hit[0] < GROUP_SUBJECT_TTL:
            return hit[1]
        try:
            client = self._require_logged_in("group info")
            info = await client.get_group_info(to_jid(jid))
        except Exception as exc:
            self.log.info("group info for %s not available: %s", jid, exc)
            return None
        subject = str(getattr(getattr(info, "GroupName", None), "Name", "") or "").strip() or None
        cache[jid] = (now, subject)
        return subject

    async def download(self, media: MediaInfo) -> bytes:
        from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message

        client = self._require_logged_in("download media")
        if not media.handle:
            raise WhatsAppError("download: this media has no engine handle")
        try:
            data = await client.download_any(Message.FromString(media.handle))
        except Exception as exc:
            raise map_error(exc, "download media") from exc
        return bytes(data)
