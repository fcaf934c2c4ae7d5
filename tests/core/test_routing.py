"""Which number carries a reply on a location with several (core/routing.py, pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from ghl_desktop.core.models import SessionState, WhatsAppSession
from ghl_desktop.core.routing import NumberRouting, choose_number, down_words, linked_numbers


def _n(sid: str, state: SessionState = SessionState.CONNECTED, phone: str | None = None) -> WhatsAppSession:
    return WhatsAppSession(id=sid, location_id="loc", state=state, store_path="/x",
                           phone=phone if phone is not None else f"+1555000{sid}")


ONE, TWO, THREE = _n("1"), _n("2"), _n("3")
ALL = [ONE, TWO, THREE]
PLAIN = NumberRouting("loc")


def test_sticky_beats_default_beats_any() -> None:
    live = {"1", "2", "3"}
    assert choose_number(ALL, live, sticky_id="2", routing=NumberRouting("loc", "3")).session == TWO
    got = choose_number(ALL, live, sticky_id=None, routing=NumberRouting("loc", "3"))
    assert got.session == THREE and got.why == "default" and got.waiting is None and got.note is None
    assert choose_number(ALL, live, sticky_id=None, routing=PLAIN).session == ONE
    # a sticky or default number no longer of this location counts as none
    assert choose_number(ALL, live, sticky_id="9", routing=NumberRouting("loc", "8")).session == ONE
    # no default and the first is down: any connected one (nothing to wait for)
    assert choose_number(ALL, {"3"}, sticky_id=None, routing=PLAIN).session == THREE


def test_a_down_number_makes_the_reply_wait_unless_fallback_is_on() -> None:
    down = [_n("1", SessionState.RECONNECTING), TWO]
    waits = choose_number(down, {"2"}, sticky_id="1", routing=PLAIN)
    assert waits.session == down[0] and waits.waiting == "+15550001 is disconnected" and waits.note is None
    moved = choose_number(down, {"2"}, sticky_id="1", routing=NumberRouting("loc", fallback=True))
    assert moved.session == TWO and moved.waiting is None and moved.why == "fallback"
    assert moved.note == "sent from +15550002 instead: +15550001 is disconnected (fall back to another number is on)"
    # the default number down waits the same way
    assert choose_number(down, {"2"}, sticky_id=None, routing=NumberRouting("loc", "1")).waiting
    # fallback on but nothing else connected: it waits
    alone = choose_number(down, set(), sticky_id="1", routing=NumberRouting("loc", fallback=True))
    assert alone.session == down[0] and alone.waiting == "+15550001 is disconnected"
    # nothing preferred and nothing connected: no choice (the bridge's usual "no connected number")
    none = choose_number(down, set(), sticky_id=None, routing=PLAIN)
    assert none.session is None and none.waiting is None


def test_reasons_read_as_the_log_shows_them() -> None:
    assert down_words(_n("1", SessionState.LOGGED_OUT)) == "logged out — link it again"
    assert down_words(_n("1", SessionState.PHONE_OFFLINE)) == "disconnected (its phone is offline)"
    banned = WhatsAppSession(id="1", location_id="loc", state=SessionState.TEMPORARILY_BANNED, store_path="/x",
                             phone="+1", state_until=datetime(2026, 12, 5, 9, 30, tzinfo=UTC))
    assert down_words(banned) == "temporarily banned until 2026-12-05 09:30 UTC"


def test_a_number_being_linked_is_not_a_number_yet() -> None:
    assert linked_numbers([ONE, _n("4", SessionState.WAITING_FOR_SCAN, phone=""), TWO]) == [ONE, TWO]
