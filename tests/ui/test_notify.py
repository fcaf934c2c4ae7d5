"""Which events produce which tray text, and bursts become one notice — without a tray host."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ghl_desktop.core.models import Location, LocationState, SessionState, WhatsAppSession
from ghl_desktop.relay.client import RelayLinkState, RelayStateChanged
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.notify import Notice, NoticeCoalescer, NoticePolicy

BASE = WhatsAppSession(id="s1", location_id="L", state=SessionState.CONNECTED, store_path="x", phone="+14155550123")


def at(state: SessionState, **changes: object) -> WhatsAppSession:
    return replace(BASE, state=state, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "extra", "title", "text"),
    [
        (SessionState.LOGGED_OUT, {}, "WhatsApp number logged out",
         "+14155550123 was logged out of WhatsApp. Link it again in ghl-desktop."),
        (SessionState.TEMPORARILY_BANNED, {"state_until": datetime(2026, 12, 1, 9, 30, tzinfo=UTC)},
         "WhatsApp number banned", "WhatsApp temporarily banned +14155550123 until 2026-12-01 09:30 UTC."),
        (SessionState.REPLACED, {}, "WhatsApp number taken over",
         "+14155550123 was opened by another WhatsApp client; ghl-desktop stopped using it. "
         "Press Retry to take it back."),
        (SessionState.RECONNECTING, {"detail": "connection lost"}, "WhatsApp number disconnected",
         "+14155550123 dropped; reconnecting (connection lost)."),
        (SessionState.CLIENT_OUTDATED, {}, "ghl-desktop needs an update",
         "WhatsApp refuses this app version for +14155550123."),
    ],
)
def test_a_connected_number_that_drops_gives_one_plain_notice(
    state: SessionState, extra: dict[str, object], title: str, text: str
) -> None:
    policy = NoticePolicy()
    assert policy.on_session(at(SessionState.CONNECTED)) is None  # first sight: nothing to say
    notice = policy.on_session(at(state, **extra))
    assert notice is not None and (notice.title, notice.text) == (title, text)
    assert notice.key == "session:s1"
    assert policy.on_session(at(state, **extra)) is None  # the same state again: no second notice


def test_reconnect_attempts_are_not_repeated_but_a_final_state_is() -> None:
    policy = NoticePolicy()
    policy.on_session(at(SessionState.CONNECTED))
    first = policy.on_session(at(SessionState.RECONNECTING, detail="attempt 1"))
    assert first is not None and first.transient
    assert policy.on_session(at(SessionState.RECONNECTING, detail="attempt 2")) is None
    assert policy.on_session(at(SessionState.CONNECTING)) is None
    final = policy.on_session(at(SessionState.LOGGED_OUT))
    assert final is not None and final.title == "WhatsApp number logged out" and not final.transient
    # linking a number (waiting for scan → connecting → connected) is never a problem
    fresh = NoticePolicy()
    for state in (SessionState.WAITING_FOR_SCAN, SessionState.CONNECTING, SessionState.CONNECTED):
        assert fresh.on_session(at(state)) is None
    # a QR code that expired while linking is shown in the window, not as a tray alarm
    assert NoticePolicy().on_session(at(SessionState.WAITING_FOR_SCAN)) is None


def test_relay_notices_only_on_changes_that_matter() -> None:
    policy = NoticePolicy()
    assert policy.on_relay(RelayStateChanged(RelayLinkState.CONNECTING)) is None
    assert policy.on_relay(RelayStateChanged(RelayLinkState.RECONNECTING, "refused", 1.0)) is None  # never was up
    assert policy.on_relay(RelayStateChanged(RelayLinkState.CONNECTED)) is None
    lost = policy.on_relay(RelayStateChanged(RelayLinkState.RECONNECTING, "connection reset", 2.0))
    assert lost is not None and lost.title == "Relay connection lost" and "connection reset" in lost.text
    assert policy.on_relay(RelayStateChanged(RelayLinkState.RECONNECTING, "again", 4.0)) is None
    refused = policy.on_relay(RelayStateChanged(RelayLinkState.UNAUTHORIZED, "401"))
    assert refused is not None and refused.title == "Relay refused the token" and "Settings" in refused.text


def test_a_location_needing_reconnect_is_announced_once() -> None:
    policy = NoticePolicy()
    location = Location(id="L1", name="Bright Smiles Dental")
    assert policy.on_location(location) is None
    notice = policy.on_location(replace(location, state=LocationState.NEEDS_RECONNECT))
    assert notice is not None and "Bright Smiles Dental" in notice.text
    assert policy.on_location(replace(location, state=LocationState.NEEDS_RECONNECT)) is None


def test_a_burst_becomes_one_notice_and_a_blip_none(qapp) -> None:  # type: ignore[no-untyped-def]
    shown: list[Notice] = []
    up: set[str] = set()
    coalescer = NoticeCoalescer(shown.append, still_down=lambda n: n.key not in up, window_ms=10_000)
    policy = NoticePolicy()
    for i in range(3):
        policy.on_session(replace(BASE, id=f"s{i}", phone=f"+1415555000{i}"))
    for i in range(3):
        coalescer.add(policy.on_session(replace(BASE, id=f"s{i}", phone=f"+1415555000{i}",
                                                state=SessionState.LOGGED_OUT)))
    coalescer.add(None)
    assert len(coalescer.pending) == 3 and shown == []
    coalescer.flush()
    assert len(shown) == 1
    assert shown[0].title == "3 problems need attention"
    assert shown[0].text.count("was logged out of WhatsApp") == 3
    # later news about the same thing replaces the earlier; a transient drop that recovered is not shown
    coalescer.add(Notice("WhatsApp number disconnected", "blip", key="session:s9", transient=True))
    up.add("session:s9")
    assert coalescer.flush() is None and len(shown) == 1
    coalescer.add(Notice("a", "first", key="relay", transient=True))
    coalescer.add(Notice("b", "second", key="relay"))
    assert coalescer.flush() == Notice("b", "second", key="relay")
    assert len(shown) == 2


def test_window_notices_from_bus_events_without_a_tray(window: MainWindow) -> None:
    from ghl_desktop.services.events import SessionChanged

    if window.tray.available:
        pytest.skip("this desktop has a system tray")
    window.app.bus.publish(SessionChanged(at(SessionState.CONNECTED)))
    window.app.bus.publish(SessionChanged(at(SessionState.TEMPORARILY_BANNED)))
    window.app.bus.publish(SessionChanged(at(SessionState.TEMPORARILY_BANNED)))
    notice = window.notices.flush()
    assert notice is not None and notice.title == "WhatsApp number banned"
    assert window.notices.shown == [notice]  # tray.notify was a no-op; the decision still happened
    assert window.sessions_model.rowCount() == 1
    assert window.sessions_model.index(0, 2).data() == "Temporarily banned"
