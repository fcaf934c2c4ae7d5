"""The WhatsApp messages the transport sends, built by pure functions (neonize/outbound.py): checked
as real neonize protobufs, without an engine client or a logged-in transport."""

from __future__ import annotations

from datetime import UTC, datetime

from neonize.proto import Neonize_pb2 as N
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as E
from neonize.utils.enum import ChatPresence, ChatPresenceMedia

from ghl_desktop.adapters.whatsapp.neonize.outbound import (
    edit_body,
    participant,
    presence_states,
    quote,
    reaction_message,
    send_result,
    sendable_kind,
    text_message,
)
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import PresenceKind

ALICE = "491701234567@s.whatsapp.net"


def test_a_text_is_verbatim_and_a_reply_quotes_the_participant_without_its_device() -> None:
    assert text_message(ALICE, "call @491701234567 now") == E.Message(conversation="call @491701234567 now")
    reply = text_message("491701234567:12@s.whatsapp.net", "yes", quoted_id="3EBQ")
    assert reply.extendedTextMessage.text == "yes"
    assert reply.extendedTextMessage.contextInfo.stanzaID == "3EBQ"
    assert reply.extendedTextMessage.contextInfo.participant == ALICE
    assert not reply.extendedTextMessage.contextInfo.mentionedJID
    assert participant("+49 170 1234567") == ALICE  # a phone number becomes its JID


def test_quote_marks_the_media_sub_message_and_nothing_without_an_id() -> None:
    doc = E.Message(documentMessage=E.DocumentMessage(fileName="q.pdf"))
    quoted = quote(doc, ALICE, "3EBQ")
    assert quoted.documentMessage.contextInfo.stanzaID == "3EBQ"
    assert quoted.documentMessage.contextInfo.participant == ALICE
    plain = quote(E.Message(imageMessage=E.ImageMessage(caption="x")), ALICE, None)
    assert not plain.imageMessage.HasField("contextInfo")


def test_reaction_edit_and_presence() -> None:
    reaction = reaction_message(ALICE, "3EBT", "👍", from_me=False, now_ms=1_700_000_000_000)
    assert reaction.reactionMessage.key.remoteJID == ALICE and reaction.reactionMessage.key.ID == "3EBT"
    assert not reaction.reactionMessage.key.fromMe and reaction.reactionMessage.text == "👍"
    assert reaction.reactionMessage.senderTimestampMS == 1_700_000_000_000
    assert edit_body("new") == E.Message(conversation="new")
    assert presence_states(PresenceKind.PAUSED) == (ChatPresence.CHAT_PRESENCE_PAUSED,
                                                    ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT)
    assert presence_states(PresenceKind.RECORDING) == (ChatPresence.CHAT_PRESENCE_COMPOSING,
                                                       ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO)


def test_media_without_ffmpeg_goes_as_a_document_and_send_results_keep_whatsapps_time() -> None:
    for kind in (MessageKind.AUDIO, MessageKind.VOICE, MessageKind.VIDEO):
        assert sendable_kind(kind, ffmpeg=False) is MessageKind.DOCUMENT
        assert sendable_kind(kind, ffmpeg=True) is kind
    assert sendable_kind(MessageKind.IMAGE, ffmpeg=False) is MessageKind.IMAGE
    result = send_result(N.SendResponse(ID="3EBSENT", Timestamp=1_700_000_500))
    assert result.message_id == "3EBSENT" and result.timestamp == datetime.fromtimestamp(1_700_000_500, tz=UTC)
    before = datetime.now(tz=UTC)
    assert send_result(N.SendResponse(ID="3EBX")).timestamp >= before  # no timestamp: now
