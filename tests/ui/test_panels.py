"""The panels through keys, clicks and events: the linking flow (countdown from the code's real
lifetime, expiry and a new code, the copyable pairing code, no stale "Linked"), red error text,
keyboard (Tab leaves tables, row actions by Enter), accessible names, the layout at 1024×640 and
readable colours in the light and the dark scheme."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtGui import QColor, QGuiApplication, QImage
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QComboBox,
    QLineEdit,
    QMenu,
    QTableView,
    QWidget,
)

from ghl_desktop.app import App
from ghl_desktop.core.models import SessionState, WhatsAppSession
from ghl_desktop.services.events import SessionChanged, SessionPairCode, SessionQr, SessionRemoved
from ghl_desktop.ui import theme
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.panels.link import EXPIRED_TEXT
from ghl_desktop.ui.widgets import StatusLabel, rich_link
from tests.ui.seed import seed


def settle(window: MainWindow) -> None:
    """Run the loop until the window's reads (off the loop thread) have landed in the panels."""
    asyncio.get_event_loop().run_until_complete(asyncio.wait_for(window.wait_idle(), 30))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def session(state: SessionState, **changes: Any) -> WhatsAppSession:
    base = WhatsAppSession(id="s-new", location_id="L", state=state, store_path="x")
    return replace(base, **changes)


# -- linking --


def test_countdown_follows_each_codes_real_lifetime_then_offers_a_new_code(window: MainWindow, app: App) -> None:
    link = window.link
    clock = Clock()
    link._now = clock
    link.follow("s-new")
    app.bus.publish(SessionQr("s-new", "2@first,ref,key==", expires_in=60.0))
    assert link.phase == "qr" and link.qr_view.code == "2@first,ref,key=="
    assert link.countdown.text().startswith("This code is valid for 60 s")
    assert "Linked devices" in link.steps.text() and link.steps.isVisibleTo(window)
    clock.now += 45
    link._update_countdown()
    assert "valid for 15 s" in link.countdown.text()
    app.bus.publish(SessionQr("s-new", "2@second,ref,key==", expires_in=20.0))  # later codes: ~20 s
    assert "valid for 20 s" in link.countdown.text()
    clock.now += 21
    link._update_countdown()
    assert link.phase == "expired" and link.qr_view.stale
    assert link.renew_button.isVisibleTo(window) and link.renew_button.text() == EXPIRED_TEXT
    # a QR that timed out in the session service says the same, never a bare red "Failed"
    app.bus.publish(SessionQr("s-new", "2@third,ref,key==", expires_in=20.0))
    app.bus.publish(SessionChanged(session(SessionState.FAILED, detail="QR code expired — press Link again")))
    assert link.phase == "expired" and link.renew_button.isVisibleTo(window)
    assert not link.status.error


def test_codes_of_another_number_do_not_replace_the_shown_one(window: MainWindow, app: App) -> None:
    window.link.follow("s-new")
    app.bus.publish(SessionQr("s-new", "2@mine,ref,key==", expires_in=60.0))
    app.bus.publish(SessionQr("s-other", "2@theirs,ref,key==", expires_in=60.0))
    assert window.link.qr_view.code == "2@mine,ref,key=="


def test_after_a_logout_the_panel_no_longer_says_linked(window: MainWindow, app: App) -> None:
    link = window.link
    link.follow("s-new")
    app.bus.publish(SessionQr("s-new", "2@code,ref,key==", expires_in=60.0))
    app.bus.publish(SessionChanged(session(SessionState.CONNECTED, phone="+15550100077")))
    assert link.phase == "linked" and "✓ Linked +15550100077" in link.qr_view.text()
    app.bus.publish(SessionChanged(session(SessionState.LOGGED_OUT, phone="+15550100077",
                                           detail="Logged out from this app")))
    assert link.phase == "idle"
    assert "✓ Linked" not in link.qr_view.text() and "messages now cross" not in link.qr_view.text()
    assert "+15550100077 is no longer linked" in link.qr_view.text()
    # removed right after linking: the same
    link.follow("s-2")
    app.bus.publish(SessionChanged(replace(session(SessionState.CONNECTED, phone="+1555"), id="s-2")))
    assert link.phase == "linked"
    app.bus.publish(SessionRemoved("s-2"))
    assert link.phase == "idle" and "✓ Linked" not in link.qr_view.text()


def test_pairing_code_is_selectable_and_copyable_and_the_phone_field_is_cleared(
        window: MainWindow, app: App, qtbot: Any) -> None:
    link = window.link
    link.follow("s-new")
    link.pair_phone.setText("+1 555 010 0077")
    link._pair_phone = "+15550100077"  # what start_pair records before asking the session service
    app.bus.publish(SessionPairCode("s-new", "ABCD1234"))
    assert link.phase == "pair_code" and link.pair_box.isVisibleTo(window)
    assert link.pair_code.text() == "ABCD-1234"
    flags = link.pair_code.textInteractionFlags()
    assert flags & Qt.TextInteractionFlag.TextSelectableByMouse
    assert flags & Qt.TextInteractionFlag.TextSelectableByKeyboard
    assert link.pair_phone.text() == ""
    assert "+15550100077" in link.pair_where.text()
    QGuiApplication.clipboard().clear()
    qtbot.mouseClick(link.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "ABCD1234"
    assert link.status.text() == "Pairing code copied."


def _in_window(widget: QWidget, window: QWidget) -> QRect:
    return QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())


def test_at_1024x640_the_pairing_row_does_not_overlap_the_qr(window: MainWindow, app: App, qtbot: Any) -> None:
    seed(app.db)
    window.refresh()
    settle(window)
    window.link.follow("s-new")
    app.bus.publish(SessionQr("s-new", "2@" + "x" * 200, expires_in=60.0))
    window.resize(1024, 640)
    qtbot.waitUntil(lambda: window.width() == 1024 and window.height() == 640)
    QApplication.processEvents()
    link = window.link
    qr = _in_window(link.qr_view, window)
    assert qr.width() >= 150 and qr.height() >= 150  # still a scannable size
    for widget in (link.pair_phone, link.pair_button, link.countdown, link.steps, link.pair_hint):
        other = _in_window(widget, window)
        assert not qr.intersects(other), (widget.objectName() or type(widget).__name__, qr, other)
    phone, button = _in_window(link.pair_phone, window), _in_window(link.pair_button, window)
    assert not phone.intersects(button)
    assert link.pair_button.width() >= link.pair_button.sizeHint().width()  # its text is not clipped


# -- error colour --


def _dominant_text_colour(label: StatusLabel) -> QColor:
    image = label.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    background = label.palette().color(label.backgroundRole())
    best, best_distance = background, 0
    for x in range(0, image.width(), 1):
        for y in range(0, image.height(), 1):
            color = image.pixelColor(x, y)
            distance = abs(color.red() - background.red()) + abs(color.green() - background.green()) \
                + abs(color.blue() - background.blue())
            if distance > best_distance:
                best, best_distance = color, distance
    return best


def test_error_text_is_red_and_normal_text_is_not(window: MainWindow) -> None:
    status = window.locations.connect_status
    status.say("Could not connect HighLevel: no answer in time", error=True)
    status.resize(400, 40)
    red = _dominant_text_colour(status)
    assert status.error and status.property("error") == "true"
    assert red.red() > 120 and red.red() > red.green() + 60 and red.red() > red.blue() + 60, red.name()
    status.say("Connected: Bright Smiles Dental.")
    plain = _dominant_text_colour(status)
    assert not (plain.red() > plain.green() + 60), plain.name()


def test_links_in_labels_keep_their_url_verbatim() -> None:
    from ghl_desktop.ui.widgets import link_targets

    url = "https://marketplace.example/oauth/chooselocation?response_type=code&client_id=a b&scope=x+y&state=\"<"
    text = rich_link(url, "Open the sign-in page & approve")
    (target,) = link_targets(text)
    assert "&amp;" not in target and "&client_id=" in target and "&scope=x+y&state=" in target
    assert target.endswith("state=%22%3C") and "a%20b" in target
    assert "Open the sign-in page &amp; approve" in text


# -- keyboard and accessibility --


@pytest.mark.asyncio
async def test_tab_leaves_a_table_and_enter_opens_the_row_actions_that_follow_health(qtbot: Any) -> None:
    from ghl_desktop.core.models import LocationState
    from tests.e2e.harness import bridge_env

    async with bridge_env() as env:
        window = MainWindow(env.app, env.runtime, sandbox_url=env.url, confirm=lambda *_: True)
        qtbot.addWidget(window)
        window.show()
        try:
            await asyncio.wait_for(window.wait_idle(), 30)  # the rows, read off the loop
            view = window.numbers.view
            assert not view.tabKeyNavigation()
            window.activateWindow()
            view.setFocus()
            await _until(view.hasFocus)
            view.setCurrentIndex(view.model().index(0, 0))
            qtbot.keyClick(view, Qt.Key.Key_Tab)
            assert not view.hasFocus()  # focus moved on to the next control
            # no widget on any row: actions are a menu (Enter, the Menu key, right click, the actions cell)
            for row in range(view.model().rowCount()):
                for column in range(view.model().columnCount()):
                    assert view.indexWidget(view.model().index(row, column)) is None
            assert view.action_names(0) == ["Log out", "Remove"]
            view.setFocus()
            view.setCurrentIndex(view.model().index(0, 0))
            qtbot.keyClick(view, Qt.Key.Key_Return)
            menu = view.last_menu
            assert isinstance(menu, QMenu) and menu.isVisible()
            assert [a.text() for a in menu.actions()] == ["Log out", "Remove"]
            menu.close()
            # the location stalls: the number's first action becomes Reconnect location
            env.app.db.locations.set_state(env.location_id, LocationState.NEEDS_RECONNECT)
            window.poll()
            await asyncio.wait_for(window.wait_idle(), 30)
            assert view.action_names(0)[0] == "Reconnect location"
            assert window.locations.view.action_names(0) == ["Reconnect"]
        finally:
            await asyncio.wait_for(window.wait_shutdown(), 20)


async def _until(predicate: Any, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


INTERACTIVE = (QAbstractButton, QLineEdit, QComboBox, QTableView)


def test_every_control_has_an_accessible_name(window: MainWindow, app: App) -> None:
    seed(app.db)
    window.refresh()
    settle(window)
    missing = [f"{type(w).__name__} {w.objectName()!r} {getattr(w, 'text', lambda: '')()!r}"
               for w in window.findChildren(QWidget)
               if isinstance(w, INTERACTIVE) and w.isVisibleTo(window) and not w.accessibleName()
               and not _inside_log(w, window)]
    assert missing == []


def _inside_log(widget: QWidget, window: MainWindow) -> bool:
    """The message log area is H2's (its own accessibility test covers it)."""
    parent = widget.parentWidget()
    while parent is not None:
        if parent is window.log_tabs:
            return True
        parent = parent.parentWidget()
    return False


# -- look --


def _banner_contrast(window: MainWindow) -> tuple[float, float]:
    banner = window.mode_banner
    banner.setText("<b>Sandbox mode</b> — HighLevel and WhatsApp are simulated on this computer.")
    banner.setVisible(True)
    banner.resize(700, 60)
    image = banner.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    counts: dict[int, int] = {}
    for x in range(image.width()):
        for y in range(image.height()):
            rgb = image.pixel(x, y)
            counts[rgb] = counts.get(rgb, 0) + 1
    background = QColor.fromRgb(max(counts, key=lambda k: counts[k]))
    text = max((QColor.fromRgb(rgb) for rgb in counts), key=lambda c: theme.contrast_ratio(c, background))
    return theme.contrast_ratio(text, background), theme.luminance(background)


@pytest.fixture
def dark(qapp: QApplication) -> Any:
    before = qapp.palette()
    theme.apply_scheme(Qt.ColorScheme.Dark)
    yield
    QApplication.setPalette(before)


def test_sandbox_banner_is_readable_in_light(window: MainWindow) -> None:
    theme.apply_scheme(Qt.ColorScheme.Light)
    ratio, background = _banner_contrast(window)
    assert ratio >= 4.5 and background > 0.5


def test_dark_scheme_restyles_the_window_and_the_banner_stays_readable(window: MainWindow, dark: Any) -> None:
    QApplication.processEvents()
    assert theme.is_dark(QApplication.palette())
    ratio, background = _banner_contrast(window)
    assert ratio >= 4.5, ratio
    assert background < 0.2  # a dark banner in the dark scheme, not pale yellow
    assert theme.colors().bad.name() in window.styleSheet() or theme.colors().banner_bg.name() in window.styleSheet()


def test_state_colours_are_readable_on_the_table_in_both_schemes() -> None:
    for palette in (theme.light_palette(), theme.dark_palette()):
        c = theme.colors(palette)
        base = palette.color(palette.ColorRole.Base)
        for colour in (c.good, c.warn, c.bad, c.muted):
            assert theme.contrast_ratio(colour, base) >= 4.5
        assert theme.contrast_ratio(c.banner_fg, c.banner_bg) >= 4.5
        assert theme.contrast_ratio(c.problem_fg, c.problem_bg) >= 4.5


def test_rows_show_an_icon_for_their_state(window: MainWindow, app: App) -> None:
    seed(app.db)
    window.refresh()
    settle(window)
    icons = [window.numbers.model.index(r, 2).data(Qt.ItemDataRole.DecorationRole) for r in range(2)]
    assert all(icon is not None and not icon.isNull() for icon in icons)
    ok, waiting = (icon.pixmap(16).toImage() for icon in icons)
    assert ok != waiting  # a different image per health level


def test_no_hard_coded_colours_outside_the_theme() -> None:
    import re
    from pathlib import Path

    ui = Path(__file__).resolve().parents[2] / "ghl_desktop" / "ui"
    mine = [ui / "main_window.py", ui / "models.py", ui / "widgets.py", ui / "resources.py", ui / "settings_dialog.py",
            ui / "panels" / "locations.py", ui / "panels" / "numbers.py", ui / "panels" / "link.py",
            ui / "panels" / "base.py"]
    offenders = [f"{path.name}: {match}" for path in mine
                 for match in re.findall(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b", path.read_text())]
    assert offenders == []


def test_the_window_follows_the_desktops_colour_scheme(window: MainWindow, qapp: QApplication) -> None:
    before = qapp.palette()
    hints = qapp.styleHints()
    try:
        light_sheet = window.styleSheet()
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)  # what the platform sends when the desktop switches
        QApplication.processEvents()
        assert theme.is_dark(qapp.palette())
        assert window.styleSheet() != light_sheet and theme.colors().banner_bg.name() in window.styleSheet()
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
        QApplication.processEvents()
        assert not theme.is_dark(qapp.palette())
    finally:
        QApplication.setPalette(before)


def test_widgets_never_touch_the_database_or_job_payloads() -> None:
    """The window and its panels read and act through the Cockpit only."""
    import ast
    from pathlib import Path

    ui = Path(__file__).resolve().parents[2] / "ghl_desktop" / "ui"
    offenders: list[str] = []
    for path in [ui / "main_window.py", *sorted((ui / "panels").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            # the log's details pane shows the service's already redacted payload text; nothing decodes one
            decoded = node.value if isinstance(node, ast.Subscript) else None
            if isinstance(decoded, ast.Attribute) and decoded.attr == "payload":
                offenders.append(f"{path.name}:{node.lineno} decodes .payload")
            if isinstance(node, ast.Attribute) and node.attr in ("db", "repo"):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ghl_desktop.adapters"):
                offenders.append(f"{path.name}:{node.lineno} imports {node.module}")
    assert offenders == []
