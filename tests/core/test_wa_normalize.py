"""Normalization of real neonize protobufs into domain events (pure; no engine running)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from neonize.proto import Neonize_pb2 as N
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as E

from ghl_desktop.core import wa_normalize as wn
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import (
    ClientOutdated,
    Connected,
    ConnectFailed,
    Disconnected,
    KeepAliveLost,
    KeepAliveRestored,
    LoggedOut,
    Paired,
    ReceiptKind,
    StreamReplaced,
    TemporarilyBanned,
)
from tests.fakes import neonize_events as fx

ALICE = f"{fx.PHONE}@s.whatsapp.net"


def norm(content: E.Message, **kw: object):  # type: ignore[no-untyped-def]
    out = wn.normalize_message(fx.message_event(content, **kw))  # type: ignore[arg-type]
    assert out is not None
    return out


def test_enum_numbers_match_the_engine_protos() -> None:
    assert wn.PROTOCOL_REVOKE == E.ProtocolMessage.REVOKE
    assert wn.PROTOCOL_MESSAGE_EDIT == E.ProtocolMessage.MESSAGE_EDIT
    assert wn.RECEIPT_DELIVERED == N.Receipt.DELIVERED
    assert wn.RECEIPT_READ == N.Receipt.READ
    assert wn.RECEIPT_PLAYED == N.Receipt.PLAYED
    assert wn.PAIR_STATUS_SUCCESS == N.PairStatus.SUCCESS
    assert wn.PAIR_STATUS_ERROR == N.PairStatus.ERROR
    for value in N.ConnectFailureReason.DESCRIPTOR.values:
        assert wn.CONNECT_FAILURE_REASONS[value.number][0].replace(" ", "_").upper() == value.name
    assert set(wn.TEMP_BAN_REASONS) == {v.number for v in N.TemporaryBan.TempBanReason.DESCRIPTOR.values}


def test_plain_text_with_metadata_and_ms_timestamp() -> None:
    m = norm(fx.text("hello"))
    assert (m.kind, m.text, m.id, m.chat, m.sender) == (MessageKind.TEXT, "hello", "3EB0ABC", ALICE, ALICE)
    assert m.sender_phone == "+491701234567" and m.sender_lid is None
    assert m.push_name == "Alice" and not m.from_me and not m.is_group
    assert m.timestamp == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


def test_extended_text_reply_carries_quoted_id() -> None:
    m = norm(fx.extended_text("yes", quoted="3EBQUOTED"))
    assert (m.kind, m.text, m.quoted_id) == (MessageKind.TEXT, "yes", "3EBQUOTED")
    assert norm(fx.extended_text("no quote")).quoted_id is None


@pytest.mark.parametrize(
    ("content", "kind", "caption", "mimetype", "size", "seconds", "file_name"),
    [
        (fx.image(), MessageKind.IMAGE, "look", "image/jpeg", 2048, None, None),
        (fx.video(), MessageKind.VIDEO, "clip", "video/mp4", 99_000, 12, None),
        (fx.audio(ptt=False), MessageKind.AUDIO, None, "audio/ogg; codecs=opus", 5000, 7, None),
        (fx.audio(ptt=True), MessageKind.VOICE, None, "audio/ogg; codecs=opus", 5000, 7, None),
        (fx.document(), MessageKind.DOCUMENT, "invoice", "application/pdf", 12345, None, "invoice.pdf"),
        (fx.sticker(), MessageKind.STICKER, None, "image/webp", 3000, None, None),
    ],
)
def test_media_kinds(content, kind, caption, mimetype, size, seconds, file_name) -> None:  # type: ignore[no-untyped-def]
    m = norm(content)
    assert m.kind is kind and m.text == caption
    assert m.media is not None
    assert (m.media.mimetype, m.media.size, m.media.seconds, m.media.file_name) == (mimetype, size, seconds, file_name)
    # the handle is the serialized waE2E.Message the engine can download from
    assert E.Message.FromString(m.media.handle) == content


def test_media_reply_keeps_quote() -> None:
    content = fx.image()
    content.imageMessage.contextInfo.stanzaID = "3EBQ"
    assert norm(content).quoted_id == "3EBQ"


def test_reaction_and_its_removal() -> None:
    added = norm(fx.reaction("3EBTARGET", "👍"))
    assert (added.kind, added.target_id, added.reaction) == (MessageKind.REACTION, "3EBTARGET", "👍")
    removed = norm(fx.reaction("3EBTARGET", ""))
    assert (removed.kind, removed.reaction) == (MessageKind.REACTION, "")


def test_edit_and_revoke() -> None:
    edited = norm(fx.edit("3EBOLD", "fixed typo"))
    assert (edited.kind, edited.target_id, edited.text) == (MessageKind.EDIT, "3EBOLD", "fixed typo")
    revoked = norm(fx.revoke("3EBOLD"))
    assert (revoked.kind, revoked.target_id, revoked.text) == (MessageKind.REVOKE, "3EBOLD", None)


def test_location_and_contact_card() -> None:
    loc = norm(fx.location())
    assert (loc.kind, loc.latitude, loc.longitude, loc.location_name) == (MessageKind.LOCATION, 52.52, 13.405, "Berlin")
    card = norm(fx.contact())
    assert (card.kind, card.contact_name, card.vcard) == (MessageKind.CONTACT, "Bob", fx.VCARD)


def test_from_me_in_lid_chat_uses_recipient_alt_for_the_chat() -> None:
    lid = fx.jid(fx.LID_USER, "lid")
    me = fx.jid(fx.OTHER_PHONE)
    m = norm(fx.text("sent on phone"), chat=lid, sender=me, from_me=True, recipient_alt=fx.jid(fx.PHONE))
    assert m.from_me and m.chat == ALICE and m.sender_phone == f"+{fx.OTHER_PHONE}"


def test_group_message_from_lid_sender_with_sender_alt() -> None:
    group = fx.jid(fx.GROUP, "g.us")
    lid = fx.jid(fx.LID_USER, "lid", device=3)
    m = norm(fx.text("hi all"), chat=group, sender=lid, sender_alt=fx.jid(fx.PHONE), is_group=True)
    assert m.is_group and m.chat == f"{fx.GROUP}@g.us"
    assert m.sender == f"{fx.LID_USER}@lid" and m.sender_lid == f"{fx.LID_USER}@lid"
    assert m.sender_phone == "+491701234567"


def test_lid_sender_resolved_through_the_store_callback() -> None:
    lid = fx.jid(fx.LID_USER, "lid")
    asked: list[str] = []

    def resolve(value: str) -> str | None:
        asked.append(value)
        return ALICE

    ev = fx.message_event(fx.text("hi"), chat=lid, sender=lid)
    m = wn.normalize_message(ev, resolve_lid=resolve)
    assert m is not None and m.sender_phone == "+491701234567" and m.chat == ALICE
    assert asked == [f"{fx.LID_USER}@lid"]


def test_unknown_lid_stays_a_lid_and_never_becomes_a_phone_number() -> None:
    lid = fx.jid(fx.LID_USER, "lid")
    ev = fx.message_event(fx.text("hi"), chat=lid, sender=lid)
    for resolver in (None, lambda _lid: None, lambda _lid: ""):
        m = wn.normalize_message(ev, resolve_lid=resolver)
        assert m is not None
        assert m.sender_phone is None and m.sender_lid == f"{fx.LID_USER}@lid" and m.chat == f"{fx.LID_USER}@lid"
    assert wn.phone_from_jid(f"{fx.LID_USER}@lid") is None
    assert wn.phone_from_jid(f"{fx.GROUP}@g.us") is None


def test_engine_plumbing_is_dropped_but_unknown_content_is_flagged() -> None:
    skdm = E.Message(senderKeyDistributionMessage=E.SenderKeyDistributionMessage(groupID="g"))
    assert wn.normalize_message(fx.message_event(skdm)) is None
    history_notice = E.Message(protocolMessage=E.ProtocolMessage(type=E.ProtocolMessage.HISTORY_SYNC_NOTIFICATION))
    assert wn.normalize_message(fx.message_event(history_notice)) is None
    unknown = E.Message(pollResultSnapshotMessage=E.PollResultSnapshotMessage(name="Lunch?"))
    assert norm(unknown).kind is MessageKind.UNSUPPORTED


def test_wrapped_content_is_unwrapped() -> None:
    inner = fx.image("secret")
    wrapped = E.Message(viewOnceMessage=E.FutureProofMessage(message=inner))
    m = norm(wrapped)
    assert (m.kind, m.text) == (MessageKind.IMAGE, "secret")


def test_receipts_in_seconds_and_ignored_types() -> None:
    r = wn.normalize_receipt(fx.receipt_event(["A", "B"], "READ"))
    assert r is not None and r.kind is ReceiptKind.READ and r.message_ids == ("A", "B")
    assert r.timestamp == datetime.fromtimestamp(1_700_000_100, tz=UTC) and r.chat == ALICE
    delivered = wn.normalize_receipt(fx.receipt_event(["A"], "DELIVERED"))
    assert delivered is not None and delivered.kind is ReceiptKind.DELIVERED
    played = wn.normalize_receipt(fx.receipt_event(["A"], "PLAYED"))
    assert played is not None and played.kind is ReceiptKind.PLAYED
    for ignored in ("READ_SELF", "RETRY", "SENDER", "SERVER_ERROR", "INACTIVE", "PEER_MSG", "HISTORY_SYNC"):
        assert wn.normalize_receipt(fx.receipt_event(["A"], ignored)) is None, ignored


def test_connection_events() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    got = {name: wn.normalize_connection_event(ev, now=now) for name, ev in fx.connection_events().items()}
    assert got["ConnectedEv"] == Connected()
    assert isinstance(got["DisconnectedEv"], Disconnected)
    assert isinstance(got["LoggedOutEv"], LoggedOut) and "logged out" in got["LoggedOutEv"].reason
    assert got["StreamReplacedEv"] == StreamReplaced()
    assert got["TemporaryBanEv"] == TemporarilyBanned(code=2, expires_at=now + timedelta(hours=1))
    assert got["ClientOutdatedEv"] == ClientOutdated()
    assert got["ConnectFailureEv"] == ConnectFailed(reason="service unavailable: try later", permanent=False)
    assert got["KeepAliveTimeoutEv"] == KeepAliveLost()
    assert got["KeepAliveRestoredEv"] == KeepAliveRestored()
    assert got["PairStatusEv"] == Paired(jid=ALICE, phone="+491701234567")
    bad_agent = fx.fill_required(N.ConnectFailure(Reason=N.ConnectFailureReason.Value("BAD_USER_AGENT")))
    assert wn.normalize_connection_event(bad_agent) == ConnectFailed(reason="bad user agent", permanent=True)
    pair_error = fx.fill_required(N.PairStatus(Status=N.PairStatus.ERROR, Error="bad code"))
    failed = wn.normalize_connection_event(pair_error)
    assert isinstance(failed, ConnectFailed) and "bad code" in failed.reason
    assert wn.normalize_connection_event(fx.fill_required(N.TemporaryBan(Code=1, Expire=0))) == TemporarilyBanned(
        code=1, expires_at=None
    )


def test_qr_lifetimes_follow_whatsapps_schedule() -> None:
    assert [wn.qr_lifetime(i) for i in range(3)] == [60.0, 20.0, 20.0]


# --- issue 15 -------------------------------------------------------------------------------------


def test_poll_creation_carries_question_and_options() -> None:
    m = norm(fx.poll_creation())
    assert m.kind is MessageKind.POLL
    assert (m.poll_name, m.poll_options) == ("When can you come?", tuple(fx.POLL_OPTIONS))


def test_poll_vote_names_the_options_through_the_engine_decrypter() -> None:
    ev = fx.message_event(fx.poll_update("POLL1"))
    hashes = [wn.poll_option_hash("Friday 3pm")]
    m = wn.normalize_message(
        ev, decrypt_poll_vote=lambda e: hashes, poll_options=lambda pid: fx.POLL_OPTIONS if pid == "POLL1" else None
    )
    assert m is not None and m.kind is MessageKind.POLL_VOTE
    assert (m.target_id, m.poll_selected) == ("POLL1", ("Friday 3pm",))
    # without the engine the vote is flagged, never guessed
    undecrypted = wn.normalize_message(ev)
    assert undecrypted is not None and undecrypted.kind is MessageKind.UNSUPPORTED


def test_view_once_and_ephemeral_flags() -> None:
    once = norm(fx.view_once_image())
    assert (once.kind, once.text, once.view_once, once.ephemeral) == (MessageKind.IMAGE, "once", True, False)
    gone = norm(fx.ephemeral_text(expiration=86400))
    assert (gone.text, gone.ephemeral, gone.expiration, gone.view_once) == ("vanishing", True, 86400, False)
    plain = norm(fx.text())
    assert (plain.view_once, plain.ephemeral, plain.expiration) == (False, False, None)
    # whatsmeow unwraps live messages itself and flags the event instead
    ev = fx.message_event(fx.image("live once"))
    ev.IsViewOnceV2 = True
    ev.IsEphemeral = True
    live = wn.normalize_message(ev)
    assert live is not None and live.view_once and live.ephemeral


def test_call_offer_and_terminate() -> None:
    from ghl_desktop.core.whatsapp import CallOutcome

    offer = wn.normalize_call(fx.call_offer("C1", video=True))
    assert offer is not None
    assert (offer.call_id, offer.caller, offer.caller_phone, offer.video, offer.outcome) == (
        "C1", ALICE, "+" + fx.PHONE, True, CallOutcome.OFFERED
    )
    assert offer.timestamp == datetime.fromtimestamp(1_700_000_200, tz=UTC)
    voice = wn.normalize_call(fx.call_offer("C2"))
    assert voice is not None and voice.video is False
    missed = wn.normalize_call(fx.call_terminate("C1", "timeout"))
    assert missed is not None and missed.outcome is CallOutcome.MISSED
    rejected = wn.normalize_call(fx.call_terminate("C1", "reject"))
    assert rejected is not None and rejected.outcome is CallOutcome.REJECTED


def test_history_sync_batch_oldest_first_with_original_dates() -> None:
    ev = fx.history_sync(
        {ALICE: [("H2", True, 1_690_000_100, "our answer"), ("H1", False, 1_690_000_000, "first question")]}
    )
    batch = wn.normalize_history_sync(ev, own_jid=f"{fx.OTHER_PHONE}@s.whatsapp.net")
    assert (batch.sync_type, batch.chunk_order, batch.progress) == ("INITIAL_BOOTSTRAP", 1, 40)
    (chat,) = batch.chats
    assert (chat.chat, chat.phone, chat.name, chat.is_group) == (ALICE, "+" + fx.PHONE, "Alice", False)
    first, second = chat.messages
    assert (first.id, first.text, first.from_me, first.from_history) == ("H1", "first question", False, True)
    assert first.timestamp == datetime.fromtimestamp(1_690_000_000, tz=UTC)
    assert first.push_name == "Alice" and first.sender == ALICE
    assert (second.id, second.from_me, second.sender) == ("H2", True, f"{fx.OTHER_PHONE}@s.whatsapp.net")
