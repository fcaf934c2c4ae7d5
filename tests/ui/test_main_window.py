"""The main window as a user meets it: real rows from SQLite, empty-state hints, the filter box, the
status bar, the QR area, and a clean shutdown when it is closed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.core.models import Direction, Message, MessageKind, MessageStatus
from ghl_desktop.services.bridge import LocationsChanged, MessageLogged
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.models import RecordRole
from tests.fakes.secrets import MemorySecretStore
from tests.ui.seed import seed


def column_texts(model, column: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [model.index(row, column).data() for row in range(model.rowCount())]


def test_empty_window_explains_what_to_do(window: MainWindow) -> None:
    assert window.locations_panel.showing_hint
    assert "No locations yet — connect HighLevel" in window.locations_panel.hint.text()
    assert window.sessions_panel.showing_hint
    assert window.messages_panel.showing_hint
    assert window.shown_label.text() == "0 messages"


def test_without_a_runtime_the_actions_say_why_they_are_off(window: MainWindow) -> None:
    assert window.connect_button.text() == "Connect HighLevel…"
    for button in (window.connect_button, window.link_button, window.pair_button):
        assert not button.isEnabled()
        assert "the bridge is not running" in button.toolTip().lower()


def test_panels_show_rows_written_to_sqlite(window: MainWindow, app: App) -> None:
    seeded = seed(app.db)
    window.refresh()
    assert not window.locations_panel.showing_hint
    assert column_texts(window.locations_model, 0) == ["Bright Smiles Dental", "Northside Fitness"]
    assert column_texts(window.locations_model, 2) == ["Connected", "Needs reconnect"]
    assert column_texts(window.locations_model, 3)[1].startswith("expired")
    assert column_texts(window.sessions_model, 0) == ["+14155550123", "not linked yet"]
    assert column_texts(window.sessions_model, 1) == ["Bright Smiles Dental", "Northside Fitness"]
    assert column_texts(window.sessions_model, 2) == ["Connected", "Waiting for QR scan"]
    assert column_texts(window.sessions_model, 3) == ["", "QR code shown; waiting for the phone"]
    texts = column_texts(window.messages_model, 5)
    assert len(texts) == len(seeded["messages"]) == 4
    assert "Perfect, thank you" in texts
    failed_row = texts.index("Reminder: your session starts at 7 am")
    assert window.messages_model.index(failed_row, 4).data() == "Failed"
    assert "recipient is not on WhatsApp" in window.messages_model.index(failed_row, 4).data(
        Qt.ItemDataRole.ToolTipRole
    )
    assert window.shown_label.text() == "4 messages"
    assert window.counts_label.text() == "2 locations · 2 numbers · 0 queued jobs"


def test_filter_box_filters_the_log(window: MainWindow, app: App, qtbot) -> None:  # type: ignore[no-untyped-def]
    seed(app.db)
    window.refresh()
    qtbot.keyClicks(window.filter_box, "THURSDAY")
    assert window.messages_filter.rowCount() == 2
    shown = {window.messages_filter.index(r, 5).data() for r in range(2)}
    assert shown == {
        "Hi! Can I move my cleaning to Thursday afternoon?",
        "Of course — Thursday 3:30 pm works. See you then!",
    }
    assert window.shown_label.text() == "2 of 4 shown"
    window.filter_box.setText("failed")  # matches the status column too
    assert window.messages_filter.rowCount() == 1
    window.filter_box.clear()
    assert window.messages_filter.rowCount() == 4


def test_status_bar_names_the_secret_store_and_database(window: MainWindow, app: App) -> None:
    assert window.secrets_label.text() == "Secrets: in-memory test store"
    assert window.database_label.toolTip() == str(app.settings.home / "ghl-desktop.db")
    shown = window.database_label.text()
    # a long path is shortened in the middle; the file name end and the folder start stay readable
    assert shown.startswith("Database: /") and shown.endswith("desktop.db")
    assert window.mode_label.text() == "Sandbox mode"


def test_events_from_the_services_reach_the_panels(window: MainWindow, app: App) -> None:
    seeded = seed(app.db)
    window.refresh()
    first = seeded["messages"][0]
    assert isinstance(first, Message)
    updated = app.db.messages.update(first.id or 0, status=MessageStatus.DELIVERED)
    app.bus.publish(MessageLogged(updated))
    row = column_texts(window.messages_model, 5).index(first.body)
    assert window.messages_model.index(row, 4).data() == "Delivered"
    new, _ = app.db.messages.record(
        Message(
            location_id=first.location_id,
            session_id=first.session_id,
            direction=Direction.INBOUND,
            kind=MessageKind.TEXT,
            chat_jid=first.chat_jid,
            wa_message_id="3EB0NEW",
            body="brand new",
            sent_at=datetime.now(UTC),
        )
    )
    app.bus.publish(MessageLogged(new))
    assert window.messages_model.index(0, 5).data() == "brand new"
    assert window.messages_model.index(0, 0).data(RecordRole).id == new.id
    app.db.locations.delete("Kx3mPq7ZtR2wYb9LcVdN")
    app.bus.publish(LocationsChanged(location_id="Kx3mPq7ZtR2wYb9LcVdN", kind="UNINSTALL"))
    assert column_texts(window.locations_model, 0) == ["Bright Smiles Dental"]


def test_qr_area_renders_and_changes_with_the_code(window: MainWindow) -> None:
    qr = window.qr_view
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


def test_tray_notify_is_a_no_op_without_a_tray(window: MainWindow) -> None:
    if window.tray.available:
        pytest.skip("this desktop has a system tray")
    assert window.notify("Session logged out", "+14155550123 was unlinked") is False


@pytest.mark.asyncio
async def test_closing_the_window_shuts_the_app_down(qtbot) -> None:  # type: ignore[no-untyped-def]
    app = App(load_settings(), secrets=MemorySecretStore(), console_log=False)
    try:
        window = MainWindow(app)
        qtbot.addWidget(window)
        window.show()
        await app.start()
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
    from ghl_desktop.core.models import Location

    seed(app.db)  # one connected location, one that needs reconnecting (cannot take a new number)
    window.refresh()
    assert window.link_location.count() == 1 and window.link_location.isHidden()
    assert window.link_location.currentText() == "Bright Smiles Dental"
    app.db.locations.upsert(Location(id="Zz9", name="Westside Physio", company_id="cmp-1"))
    window.refresh()
    assert not window.link_location.isHidden()
    assert [window.link_location.itemText(i) for i in range(window.link_location.count())] == [
        "Bright Smiles Dental", "Westside Physio"]
