"""The main window as a user meets it: real rows from SQLite through the cockpit, empty-state hints,
health in the rows (a stalled location is not a green number), the status bar, the QR area, the
hooks others use (reveal, close to tray, top widgets, splitters) and a clean shutdown."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel

from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.core.models import Location, LocationState, SessionState
from ghl_desktop.services.bridge import LocationsChanged
from ghl_desktop.services.events import SessionChanged
from ghl_desktop.services.health import HealthLevel
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.models import RecordRole
from tests.fakes.secrets import MemorySecretStore
from tests.ui.seed import seed


def settle(window: MainWindow) -> None:
    """Run the loop until the window's reads (off the loop thread) have landed in the panels."""
    asyncio.get_event_loop().run_until_complete(asyncio.wait_for(window.wait_idle(), 30))


def column_texts(model, column: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [model.index(row, column).data() for row in range(model.rowCount())]


def test_empty_window_explains_what_to_do(window: MainWindow) -> None:
    assert window.locations.empty.showing_hint
    assert "No locations yet — connect HighLevel" in window.locations.empty.hint.text()
    assert window.numbers.empty.showing_hint
    assert window.link.phase == "idle"


def test_without_a_runtime_the_actions_say_why_they_are_off(window: MainWindow) -> None:
    assert window.locations.connect_button.text() == "Connect HighLevel…"
    for button in (window.locations.connect_button, window.numbers.link_button, window.link.pair_button):
        assert not button.isEnabled()
        assert "the bridge is not running" in button.toolTip().lower()


def test_panels_show_rows_written_to_sqlite(window: MainWindow, app: App) -> None:
    seed(app.db)
    window.refresh()
    settle(window)
    locations, numbers = window.locations.model, window.numbers.model
    assert not window.locations.empty.showing_hint
    assert column_texts(locations, 0) == ["Bright Smiles Dental", "Northside Fitness"]
    assert column_texts(locations, 2) == ["Connected", "Needs reconnect"]
    assert column_texts(locations, 3)[1].startswith("expired")
    assert column_texts(numbers, 0) == ["+14155550123", "not linked yet"]
    assert column_texts(numbers, 1) == ["Bright Smiles Dental", "Northside Fitness"]
    assert column_texts(numbers, 2) == ["Connected", "Waiting for QR scan"]
    # the status bar reads the cockpit: counts and how many things need a person
    assert window.counts_label.text().startswith("2 locations · 2 numbers · 0 queued jobs · ")
    assert "need" in window.counts_label.text()


def test_a_number_whose_location_needs_reconnect_is_stalled_not_green(window: MainWindow, app: App) -> None:
    seeded = seed(app.db)
    dental = seeded["locations"][0]
    assert isinstance(dental, Location)
    window.refresh()
    settle(window)
    numbers = window.numbers.model
    assert numbers.index(0, 2).data() == "Connected"
    green = numbers.index(0, 2).data(Qt.ItemDataRole.ForegroundRole).color()
    app.db.locations.set_state(dental.id, LocationState.NEEDS_RECONNECT)
    window.poll()  # what the poll timer does: no event announces a refused refresh token
    settle(window)
    assert numbers.index(0, 2).data() == "Bridging stalled"
    detail = numbers.index(0, 3).data().lower()
    assert "bridging stalled" in detail and "reconnect" in detail
    assert numbers.index(0, 2).data(Qt.ItemDataRole.ForegroundRole).color() != green
    assert window.cockpit.snapshot().number("s-dental").health.level is HealthLevel.NEEDS_YOU  # type: ignore[union-attr]
    # without a runtime there are no actions; the location row says it needs reconnecting
    assert column_texts(window.locations.model, 2)[0] == "Needs reconnect"


def test_a_banned_row_says_until_when_in_local_time_and_what_to_do(
        window: MainWindow, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        seed(app.db)
        until = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=3)
        banned = app.db.sessions.set_state("s-dental", SessionState.TEMPORARILY_BANNED,
                                           detail=f"banned until {until:%Y-%m-%d %H:%M} UTC", state_until=until)
        app.bus.publish(SessionChanged(banned))
        window.refresh()
        settle(window)
        local = until.astimezone()
        state = window.numbers.model.index(0, 2).data()
        detail = window.numbers.model.index(0, 3).data()
        assert state.startswith("Temporarily banned until ") and state.endswith(f"{local:%H:%M}")
        assert local.strftime("%H:%M") in detail and "UTC" not in detail
        assert "Retry" in detail  # what to do
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_status_bar_names_the_secret_store_and_database(window: MainWindow, app: App) -> None:
    assert window.secrets_label.text() == "Secrets: in-memory test store"
    assert window.database_label.toolTip() == str(app.settings.home / "ghl-desktop.db")
    shown = window.database_label.text()
    # a long path is shortened in the middle; the file name end and the folder start stay readable
    assert shown.startswith("Database: /") and shown.endswith("desktop.db")
    assert window.mode_label.text() == "Sandbox mode"


def test_one_app_name_in_the_title_and_the_layout_holds_from_1024x640(window: MainWindow) -> None:
    assert window.windowTitle() == "ghl-desktop"
    assert (window.minimumSize().width(), window.minimumSize().height()) == (1024, 640)


def test_events_from_the_services_reach_the_panels(window: MainWindow, app: App) -> None:
    seed(app.db)
    window.refresh()
    settle(window)
    record = window.numbers.model.index(0, 0).data(RecordRole)
    dropped = app.db.sessions.set_state(record.id, SessionState.LOGGED_OUT, detail="Unlinked on the phone")
    app.bus.publish(SessionChanged(dropped))
    assert window.numbers.model.index(0, 2).data() == "Logged out — pair again"
    app.db.locations.delete("Kx3mPq7ZtR2wYb9LcVdN")
    app.bus.publish(LocationsChanged(location_id="Kx3mPq7ZtR2wYb9LcVdN", kind="UNINSTALL"))
    settle(window)  # the panel reads the locations again, off the loop
    assert column_texts(window.locations.model, 0) == ["Bright Smiles Dental"]


def test_qr_area_renders_and_changes_with_the_code(window: MainWindow) -> None:
    qr = window.link.qr_view
    assert qr.pixmap().isNull() and "QR code appears here" in qr.text()
    qr.show_qr("2@AbCdEfGh,ref-one,base64key==")
    first = qr.pixmap().toImage()
    assert not first.isNull() and first.width() > 100
    qr.show_qr("2@ZyXwVuTs,ref-two,otherkey==")
    second = qr.pixmap().toImage()
    assert not second.isNull()
    assert second != first
    # dark and light modules both present: it is a code, not a blank square
    gray = second.convertToFormat(QImage.Format.Format_Grayscale8)
    values = {gray.pixelColor(x, y).value() for x in range(0, gray.width(), 3) for y in range(0, gray.height(), 3)}
    assert 0 in values and 255 in values
    qr.clear_qr()
    assert qr.pixmap().isNull() and qr.code is None
    with pytest.raises(ValueError):
        qr.show_qr("")


def test_reveal_selects_the_row(window: MainWindow, app: App) -> None:
    seed(app.db)
    window.refresh()
    settle(window)
    window.hide()
    window.reveal(session_id="s-fitness")
    assert window.isVisible()
    assert window.numbers.view.currentIndex().row() == 1
    window.reveal(location_id="ve9EPM428h8vShlRW1KT")
    assert window.locations.view.currentIndex().row() == 0


def test_hooks_top_widget_and_splitters(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    banner = QLabel("Finish setting up: 2 of 5 done")
    window.add_top_widget(banner)
    qtbot.waitUntil(lambda: banner.isVisible() and banner.height() > 0)
    window.centralWidget().layout().activate()
    assert banner.parent() is not None and banner.isVisible()
    assert banner.geometry().bottom() < window.main_splitter.geometry().top()
    names = [s.objectName() for s in window.splitters()]
    assert names == ["mainSplitter", "topSplitter", "leftSplitter", "messageLogSplitter"] and len(set(names)) == 4


@pytest.mark.asyncio
async def test_close_to_tray_hides_and_keeps_running_then_quit_shuts_down(qtbot) -> None:  # type: ignore[no-untyped-def]
    app = App(load_settings(), secrets=MemorySecretStore(), console_log=False)
    try:
        window = MainWindow(app)
        qtbot.addWidget(window)
        window.show()
        hidden: list[bool] = []
        window.hidden_to_tray.connect(lambda: hidden.append(True))
        window.close_to_tray = lambda: True
        assert window.close() is False
        assert hidden == [True] and not window.isVisible() and not app.closed and not window.shutdown_done
        window.quit()
        await asyncio.wait_for(window.wait_shutdown(), 10)
        assert window.shutdown_done and app.closed
    finally:
        app.logging.close()


@pytest.mark.asyncio
async def test_closing_the_window_shuts_the_app_down(qtbot) -> None:  # type: ignore[no-untyped-def]
    app = App(load_settings(), secrets=MemorySecretStore(), console_log=False)
    try:
        window = MainWindow(app)
        qtbot.addWidget(window)
        window.show()
        stopped = asyncio.Event()

        async def worker() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                stopped.set()

        task = app.spawn(worker(), name="test-worker")
        await asyncio.sleep(0)
        finished: list[bool] = []
        window.shutdown_finished.connect(lambda: finished.append(True))
        assert window.close() is False  # refused at first: the app is still shutting down
        await asyncio.wait_for(window.wait_shutdown(), 10)
        assert finished == [True]
        assert window.shutdown_done and not window.isVisible()
        assert app.closed and task.cancelled() and stopped.is_set()
        assert app.tasks == frozenset()
        assert app.db.closed  # Database.close() ran (engine disposed)
    finally:
        app.logging.close()


def test_link_asks_for_the_location_only_when_there_is_a_choice(window: MainWindow, app: App) -> None:
    seed(app.db)  # one connected location, one that needs reconnecting (cannot take a new number)
    window.refresh()
    settle(window)
    box = window.link.location_box
    assert box.count() == 1 and box.isHidden()
    assert box.currentText() == "Bright Smiles Dental"
    app.db.locations.upsert(Location(id="Zz9", name="Westside Physio", company_id="cmp-1"))
    window.refresh()
    settle(window)
    assert not box.isHidden()
    assert [box.itemText(i) for i in range(box.count())] == ["Bright Smiles Dental", "Westside Physio"]


def test_a_full_disk_is_a_banner_until_writes_work_again(window: MainWindow, qtbot) -> None:  # type: ignore[no-untyped-def]
    """Disk full affects the whole app: the window says so in words (not only in the log's tracebacks)."""
    from ghl_desktop.core.storage_health import StorageProblem, StorageRecovered

    window.cockpit.health.start()
    window.app.bus.publish(StorageProblem("disk full: [Errno 28] No space left on device", disk_full=True))
    qtbot.waitUntil(lambda: window.problem_banner.isVisible(), timeout=5000)
    assert "disk holding ghl-desktop's data is full" in window.problem_banner.text()
    assert "free some space" in window.problem_banner.text()
    window.app.bus.publish(StorageRecovered())
    qtbot.waitUntil(lambda: not window.problem_banner.isVisible(), timeout=5000)
