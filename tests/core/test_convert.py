from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from ghl_desktop.core.convert import (
    NoteOptions,
    ghl_status,
    inbound_text,
    jid_for_phone,
    media_note,
    phone_from_jid,
)
from ghl_desktop.core.models import MessageKind, MessageStatus
from ghl_desktop.core.whatsapp import IncomingMessage, MediaInfo

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def msg(kind: MessageKind = MessageKind.TEXT, **kw: object) -> IncomingMessage:
    base: dict[str, object] = dict(
        id="3EB0X", chat="491701234567@s.whatsapp.net", sender="491701234567@s.whatsapp.net",
        sender_phone="+491701234567", sender_lid=None, push_name="Alice", timestamp=NOW, kind=kind,
    )
    base.update(kw)
    return IncomingMessage(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("jid", "phone"),
    [
        ("491701234567@s.whatsapp.net", "+491701234567"),
        ("491701234567:12@s.whatsapp.net", "+491701234567"),
        ("123456789012345@lid", None),
        ("120363025@g.us", None),
        ("abc@s.whatsapp.net", None),
        ("", None),
        (None, None),
    ],
)
def test_phone_from_jid_never_invents_a_number(jid: str | None, phone: str | None) -> None:
    assert phone_from_jid(jid) == phone


def test_jid_for_phone() -> None:
    assert jid_for_phone("+49 170 1234567") == "491701234567@s.whatsapp.net"
    with pytest.raises(ValueError):
        jid_for_phone("+")


def test_plain_text_and_reply_note() -> None:
    assert inbound_text(msg(text="hi")) == "hi"
    reply = inbound_text(msg(text="yes please", quoted_id="Q1"), target_text="Do you want the blue one?")
    assert reply == "↪ Reply to “Do you want the blue one?”\nyes please"
    assert inbound_text(msg(text="yes", quoted_id="Q1"), options=NoteOptions(replies=False)) == "yes"


def test_reaction_edit_revoke_notes_quote_the_original() -> None:
    assert inbound_text(msg(MessageKind.REACTION, reaction="👍", target_id="A"), target_text="Price?") == \
        "👍 reacted to “Price?”"
    assert inbound_text(msg(MessageKind.REACTION, reaction="", target_id="A"), target_text="Price?") == \
        "Removed a reaction from “Price?”"
    assert inbound_text(msg(MessageKind.EDIT, text="new", target_id="A"), target_text="old") == \
        "✏️ Edited “old” → “new”"
    assert inbound_text(msg(MessageKind.REVOKE, target_id="A"), target_text="oops") == "🗑 Deleted “oops”"
    off = NoteOptions(reactions=False, edits=False, deletes=False)
    assert inbound_text(msg(MessageKind.REACTION, reaction="👍"), options=off) is None
    assert inbound_text(msg(MessageKind.EDIT, text="x"), options=off) is None
    assert inbound_text(msg(MessageKind.REVOKE), options=off) is None


def test_unknown_target_is_still_readable() -> None:
    assert inbound_text(msg(MessageKind.REVOKE, target_id="gone")) == "🗑 Deleted a message"


def test_long_quotes_are_shortened() -> None:
    text = inbound_text(msg(MessageKind.REVOKE), target_text="x" * 500)
    assert text is not None and len(text) < 140 and text.endswith("…”")


def test_group_messages_carry_the_sender_name() -> None:
    g = msg(text="hello all", chat="120363@g.us", is_group=True)
    assert inbound_text(g, sender_name="Bob") == "Bob: hello all"


def test_location_contact_and_unsupported() -> None:
    loc = inbound_text(msg(MessageKind.LOCATION, latitude=52.52, longitude=13.405, location_name="Office"))
    assert loc is not None and "Office" in loc and "52.520000,13.405000" in loc and "maps.google.com" in loc
    card = inbound_text(msg(MessageKind.CONTACT, contact_name="Carol",
                            vcard="BEGIN:VCARD\nFN:Carol\nTEL;type=CELL:+1 555 0100\nEND:VCARD"))
    assert card == "👤 Contact card: Carol (+1 555 0100)"
    assert "cannot show" in (inbound_text(msg(MessageKind.UNSUPPORTED)) or "")


def test_media_caption_and_note() -> None:
    m = msg(MessageKind.DOCUMENT, text="the contract", media=MediaInfo(file_name="c.pdf", size=10))
    assert inbound_text(m) == "the contract"
    assert media_note(m, "too large (120 MB, limit 100 MB)") == \
        "[document “c.pdf” could not be attached: too large (120 MB, limit 100 MB)]"


def test_status_words_for_highlevel() -> None:
    assert ghl_status(MessageStatus.DELIVERED) == "delivered"
    assert ghl_status(MessageStatus.READ) == "read"
    assert ghl_status(MessageStatus.PLAYED) == "read"
    assert ghl_status(MessageStatus.FAILED) == "failed"
    assert ghl_status(MessageStatus.SENT) is None


def test_incoming_payload_round_trip() -> None:
    import json

    from ghl_desktop.core.convert import incoming_from_payload, incoming_to_payload

    m = msg(MessageKind.IMAGE, text="cap", media=MediaInfo(mimetype="image/jpeg", file_name="a.jpg", size=3,
                                                            handle=b"\x00\x01proto"), quoted_id="Q")
    back = incoming_from_payload(json.loads(json.dumps(incoming_to_payload(m))))
    assert back == m
    plain = msg(text="hi")
    assert incoming_from_payload(json.loads(json.dumps(incoming_to_payload(plain)))) == plain
    poll = msg(MessageKind.POLL, text="When?")
    poll = dataclasses.replace(poll, poll_name="When?", poll_options=("Fri 3pm", "Sat 10am"),
                               poll_selected=("Fri 3pm",))
    assert incoming_from_payload(json.loads(json.dumps(incoming_to_payload(poll)))) == poll
