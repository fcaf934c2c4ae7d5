"""Issue 15 rendering: polls, votes, view-once, disappearing messages, group senders, calls (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ghl_desktop.core.convert import (
    call_text,
    group_sender_label,
    inbound_text,
    incoming_from_payload,
    incoming_to_payload,
)
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import CallEvent, CallOutcome, IncomingMessage, MediaInfo

NOW = datetime(2026, 12, 4, 14, 2, tzinfo=UTC)


def msg(kind: MessageKind = MessageKind.TEXT, **kw: object) -> IncomingMessage:
    base: dict[str, object] = dict(
        id="3EB0P", chat="491701234567@s.whatsapp.net", sender="491701234567@s.whatsapp.net",
        sender_phone="+491701234567", sender_lid=None, push_name="Alice", timestamp=NOW, kind=kind,
    )
    base.update(kw)
    return IncomingMessage(**base)  # type: ignore[arg-type]


POLL = msg(MessageKind.POLL, text="When shall we meet?", poll_name="When shall we meet?",
           poll_options=("Friday 3pm", "Monday 9am"))


def test_a_poll_reads_as_its_question_and_options() -> None:
    assert inbound_text(POLL) == "📊 Poll: When shall we meet?\n• Friday 3pm\n• Monday 9am"


def test_a_vote_names_the_option_and_the_poll() -> None:
    poll_text = inbound_text(POLL)
    vote = msg(MessageKind.POLL_VOTE, id="3EB0V", target_id="3EB0P", poll_selected=("Friday 3pm",))
    assert inbound_text(vote, target_text=poll_text) == "🗳 voted: Friday 3pm on “When shall we meet?”"
    several = msg(MessageKind.POLL_VOTE, target_id="3EB0P", poll_selected=("Friday 3pm", "Monday 9am"))
    assert inbound_text(several) == "🗳 voted: Friday 3pm, Monday 9am"


def test_a_withdrawn_vote_says_so() -> None:
    withdrawn = msg(MessageKind.POLL_VOTE, target_id="3EB0P", poll_selected=())
    assert inbound_text(withdrawn, target_text=inbound_text(POLL)) == "🗳 Withdrew their vote on “When shall we meet?”"


def test_view_once_media_is_marked() -> None:
    photo = msg(MessageKind.IMAGE, view_once=True, text="look", media=MediaInfo(mimetype="image/jpeg"))
    assert inbound_text(photo) == "👁 View-once photo (WhatsApp shows it once)\nlook"
    assert inbound_text(msg(MessageKind.IMAGE, text="look")) == "look"


def test_disappearing_messages_still_arrive_and_say_so() -> None:
    text = inbound_text(msg(text="see you", ephemeral=True, expiration=604800))
    assert text == "see you\n⏳ Disappearing messages are on in this chat"
    assert "Disappearing" not in (inbound_text(msg(text="see you")) or "")


def test_group_sender_label_has_name_and_phone() -> None:
    g = msg(text="hello all", chat="120363@g.us", is_group=True, push_name="Bob", sender="4915511@s.whatsapp.net",
            sender_phone="+4915511")
    label = group_sender_label(g)
    assert label == "Bob (+4915511)"
    assert inbound_text(g, sender_name=label) == "Bob (+4915511): hello all"
    assert group_sender_label(msg(is_group=True, push_name=None, sender_phone="+4915511")) == "+4915511"
    lid_only = msg(is_group=True, push_name=None, sender_phone=None, sender="123@lid")
    assert group_sender_label(lid_only) == "123"


@pytest.mark.parametrize(
    ("outcome", "video", "expected"),
    [
        (CallOutcome.MISSED, False, "📞 Missed WhatsApp voice call at 14:02"),
        (CallOutcome.REJECTED, True, "📞 Rejected WhatsApp video call at 14:02"),
        (CallOutcome.ANSWERED, False, "📞 Answered WhatsApp voice call at 14:02"),
        (CallOutcome.OFFERED, False, "📞 Incoming WhatsApp voice call at 14:02"),
    ],
)
def test_call_lines(outcome: CallOutcome, video: bool, expected: str) -> None:
    call = CallEvent(call_id="C1", caller="491701234567@s.whatsapp.net", caller_phone="+491701234567",
                     video=video, outcome=outcome, timestamp=NOW)
    assert call_text(call, tz=UTC) == expected


def test_call_time_is_local_to_the_zone_given() -> None:
    call = CallEvent(call_id="C1", caller="x@s.whatsapp.net", caller_phone=None, video=False,
                     outcome=CallOutcome.MISSED, timestamp=NOW)
    assert call_text(call, tz=timezone(timedelta(hours=1))) == "📞 Missed WhatsApp voice call at 15:02"


def test_poll_vote_and_flags_survive_the_job_payload() -> None:
    vote = msg(MessageKind.POLL_VOTE, target_id="3EB0P", poll_selected=("Friday 3pm",), ephemeral=True,
               expiration=86400, view_once=False)
    assert incoming_from_payload(incoming_to_payload(vote)) == vote
