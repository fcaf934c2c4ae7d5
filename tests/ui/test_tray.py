"""The tray follows health: icon (ok / attention / down), tooltip counts, a menu listing what needs
attention (a click reveals the row), Pause/Resume bridging, Open window, Quit.

The decisions are tested without a tray host; the parts that need one skip when
QSystemTrayIcon.isSystemTrayAvailable() is False."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QSystemTrayIcon

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import Location, LocationState, SessionState, WhatsAppSession
from ghl_desktop.services.health import (
    OK,
    Health,
    HealthAction,
    HealthLevel,
    HealthMonitor,
    HealthSnapshot,
    LocationHealth,
    NumberHealth,
)
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.tray import MENU_ENTRIES, Tray, TrayState, attention_entries, tray_icon_path, tray_state

DOWN = Health(HealthLevel.NEEDS_YOU, "Logged out — link the number again to resume bridging",
              HealthAction.LINK_AGAIN)
SLOW = Health(HealthLevel.DEGRADED, "Reconnecting to WhatsApp", HealthAction.WAIT)


def number(sid: str, health: Health = OK, location: str = "L1") -> NumberHealth:
    return NumberHealth(sid, f"+1555010{sid[-4:]:0>4}", location, health)


def five_numbers(failed: int = 2) -> HealthSnapshot:
    return HealthSnapshot(
        numbers=(number("s0001"), number("s0002", DOWN), number("s0003"), number("s0004"), number("s0005")),
        locations=(LocationHealth("L1", "Dental Co", OK),), failed_messages=failed)


@pytest.fixture
def tray(qapp: object) -> Iterator[Tray]:
    instance = Tray(show_icon=False)
    yield instance
    instance.menu.deleteLater()


def test_the_icon_state_is_the_worst_health() -> None:
    assert tray_state(HealthSnapshot(numbers=(number("s1"),))) is TrayState.OK
    assert tray_state(HealthSnapshot(numbers=(number("s1"), number("s2", SLOW)))) is TrayState.ATTENTION
    assert tray_state(HealthSnapshot(numbers=(number("s1", SLOW), number("s2", DOWN)))) is TrayState.DOWN
    assert tray_state(HealthSnapshot(numbers=(number("s1"),), failed_messages=1)) is TrayState.ATTENTION
    assert tray_state(HealthSnapshot(numbers=(number("s1"),), paused=True)) is TrayState.ATTENTION


def test_three_distinct_icon_images_ship_in_resources(qapp: object) -> None:
    images = []
    for state in TrayState:
        path = tray_icon_path(state)
        assert path.exists(), path
        image = QImage(str(path))
        assert not image.isNull() and image.width() >= 16
        images.append(image.scaled(32, 32).bits().tobytes())
    assert len(set(images)) == 3


def test_tooltip_and_menu_follow_the_snapshot(tray: Tray) -> None:
    tray.apply_health(HealthSnapshot(numbers=(number("s0001"),)))
    assert tray.state is TrayState.OK
    assert tray.tooltip == "ghl-desktop — 1 number"
    assert tray.action_texts() == ["All numbers are bridging", "---", "Pause bridging", "Open window",
                                   "Start at login", "---", "Quit"]
    tray.apply_health(five_numbers())
    assert tray.state is TrayState.DOWN
    assert tray.tooltip == "ghl-desktop — 5 numbers · 1 down · 2 messages failed"
    texts = tray.action_texts()
    assert texts[0] == "2 things need attention"
    assert texts[1].startswith("+15550100002 (Dental Co): Logged out")
    assert texts[2] == "2 messages failed: see Dead letters"
    assert texts[3:] == ["---", "Pause bridging", "Open window", "Start at login", "---", "Quit"]


def test_clicking_an_entry_reveals_that_row(qtbot, tray: Tray) -> None:  # type: ignore[no-untyped-def]
    tray.apply_health(five_numbers())
    with qtbot.waitSignal(tray.reveal_requested) as blocker:
        tray.trigger("+15550100002")
    assert blocker.args == ["s0002", "L1"]
    with qtbot.waitSignal(tray.show_requested):
        tray.trigger("Open window")
    with qtbot.waitSignal(tray.quit_requested):
        tray.trigger("Quit")


def test_a_location_needing_reconnect_is_listed(tray: Tray) -> None:
    needs = Health(HealthLevel.NEEDS_YOU, "HighLevel refused the saved sign-in: reconnect this location",
                   HealthAction.RECONNECT_LOCATION)
    snap = HealthSnapshot(locations=(LocationHealth("L9", "Gym", needs),))
    [entry] = attention_entries(snap)
    assert (entry.text, entry.location_id, entry.session_id) == (
        "Gym: HighLevel refused the saved sign-in: reconnect this location", "L9", None)


def test_a_long_list_is_cut_with_more(tray: Tray) -> None:
    many = tuple(number(f"s{i:04d}", DOWN) for i in range(MENU_ENTRIES + 4))
    tray.apply_health(HealthSnapshot(numbers=many))
    texts = tray.action_texts()
    assert "… and 4 more" in texts
    assert len([t for t in texts if t.startswith("+1555")]) == MENU_ENTRIES


def test_pause_and_resume_entries_follow_the_paused_state(qtbot, tray: Tray) -> None:  # type: ignore[no-untyped-def]
    tray.apply_health(HealthSnapshot())
    with qtbot.waitSignal(tray.pause_requested):
        tray.trigger("Pause bridging")
    tray.apply_health(HealthSnapshot(paused=True))
    assert tray.action_texts()[0] == "Paused: no messages are bridged"
    assert tray.tooltip == "ghl-desktop — 0 numbers · paused"
    with qtbot.waitSignal(tray.resume_requested):
        tray.trigger("Resume bridging")


def test_the_tray_follows_a_real_monitor_through_the_bridge(qtbot, db: Database, tray: Tray) -> None:  # type: ignore[no-untyped-def]
    """HealthMonitor (real SQLite) → HealthChanged on the bus → ServiceBridge.health_changed → tray."""
    bus = EventBus()
    bridge = ServiceBridge(bus)
    bridge.health_changed.connect(tray.apply_health)
    db.locations.upsert(Location(id="L1", name="Dental Co"))
    db.sessions.create(WhatsAppSession(id="s1", location_id="L1", state=SessionState.CONNECTED,
                                       store_path="/tmp/s1", phone="+15550100001"))
    monitor = HealthMonitor(locations=db.locations, sessions=db.sessions, jobs=db.jobs, bus=bus)
    monitor.refresh()
    assert tray.state is TrayState.OK and tray.tooltip == "ghl-desktop — 1 number"
    db.locations.set_state("L1", LocationState.NEEDS_RECONNECT)
    monitor.refresh()
    assert tray.state is TrayState.DOWN
    assert any(t.startswith("+15550100001 (Dental Co): bridging stalled") for t in tray.action_texts())
    assert any(t.startswith("Dental Co: HighLevel refused") for t in tray.action_texts())
    bridge.detach()


def test_the_real_tray_icon_shows_the_state(qapp: object) -> None:
    if not QSystemTrayIcon.isSystemTrayAvailable():
        pytest.skip("no system tray host on this display")
    tray = Tray()
    try:
        assert tray.available and tray.icon is not None and tray.icon.isVisible()
        tray.apply_health(five_numbers())
        assert tray.icon.toolTip() == "ghl-desktop — 5 numbers · 1 down · 2 messages failed"
        assert tray.icon.contextMenu() is tray.menu
        assert not tray.icon.icon().isNull()
    finally:
        tray.hide()


TRAY_HOST_CHECK = """
import sys, time
from PySide6.QtWidgets import QApplication, QSystemTrayIcon
app = QApplication([])
deadline = time.monotonic() + 20
while not QSystemTrayIcon.isSystemTrayAvailable() and time.monotonic() < deadline:
    app.processEvents(); time.sleep(0.1)
if not QSystemTrayIcon.isSystemTrayAvailable():
    print("no tray"); sys.exit(3)
from tests.ui.test_tray import five_numbers
from ghl_desktop.ui.tray import Tray
tray = Tray()
tray.apply_health(five_numbers())
for _ in range(20):
    app.processEvents(); time.sleep(0.05)
icon = tray.icon
print("visible", icon.isVisible(), "|", icon.toolTip(), "|", tray.state.value, "|", icon.geometry().isValid())
"""


def test_a_real_tray_host_shows_the_icon(tmp_path: object) -> None:
    """Xvfb + trayer (a real system tray host) in a process of its own, Qt on xcb."""
    import os
    import subprocess
    import sys

    from tests.ui.dbus_session import need, private_display

    trayer = need("trayer")
    with private_display() as display:
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
        host = subprocess.Popen([trayer, "--edge", "top", "--align", "right", "--widthtype", "pixel",
                                 "--width", "120", "--height", "24"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            result = subprocess.run([sys.executable, "-c", TRAY_HOST_CHECK], env=env, capture_output=True, text=True,
                                    timeout=120, cwd=str(Path(__file__).resolve().parents[2]))
        finally:
            host.terminate()
            host.wait(10)
    assert result.returncode == 0, result.stdout + result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line == "visible True | ghl-desktop — 5 numbers · 1 down · 2 messages failed | down | True", line
