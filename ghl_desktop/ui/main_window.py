"""The main window: HighLevel locations, WhatsApp numbers, the linking area (QR code / pairing code)
and the message log with its dead letters, over a status bar that says where secrets and data live.

The panels live in :mod:`ghl_desktop.ui.panels` (their widgets and actions); this module composes
them into the window, with the menu, the status bar, the sandbox and problem banners and the shutdown.

The window reads the repositories of the :class:`~ghl_desktop.app.App` and drives the services of
the :class:`~ghl_desktop.runtime.BridgeRuntime` it is given (Connect HighLevel, Link a number, Log
out, Retry, retry a dead letter); it listens to the :class:`~ghl_desktop.ui.bridge.ServiceBridge`
and never builds services itself. Without a runtime (tests of the bare shell) the actions are
disabled and say why.

Every action runs as an asyncio task owned by the window: a click never blocks the loop, a failure
becomes a readable sentence in the panel it belongs to (no storm of popups), and closing the window
cancels what is still running.

Closing the window shuts everything down: ``closeEvent`` is refused once, the window's tasks are
cancelled, :meth:`BridgeRuntime.stop` and :meth:`App.aclose` are awaited, then the window really
closes and ``shutdown_finished`` fires.

Signals: shutdown_finished (the runtime and the app are closed and the window is closed).
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import QLabel, QMessageBox, QSplitter, QStatusBar, QVBoxLayout, QWidget

from ghl_desktop.app import App
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.models import DeadJobsModel, LocationsModel, MessageLogFilter, MessageLogModel, SessionsModel
from ghl_desktop.ui.notify import Notice, NoticeCoalescer, NoticePolicy
from ghl_desktop.ui.panels.base import Confirm, readable_error
from ghl_desktop.ui.panels.base import OpenUrl as OpenUrl  # main.py imports it from here
from ghl_desktop.ui.panels.locations import LocationsPanel
from ghl_desktop.ui.panels.message_log import MESSAGE_LOG_LIMIT, MessageLogPanel
from ghl_desktop.ui.panels.sessions import SessionsPanel, normalize_phone
from ghl_desktop.ui.resources import app_icon
from ghl_desktop.ui.tray import Tray

if TYPE_CHECKING:
    from ghl_desktop.relay.client import RelayStateChanged
    from ghl_desktop.runtime import BridgeRuntime

log = logging.getLogger("ghl.ui")

NO_RUNTIME = "Not available: the bridge is not running in this window."
DATABASE_LABEL_WIDTH = 170  # px; the full path is in the tooltip
POLL_MS = 2000  # dead letters, token expiry, location states: things no event announces


def open_in_browser(url: str) -> bool:
    """The desktop's browser (Qt asks the platform: xdg-open, macOS open, Windows shell)."""
    return bool(QDesktopServices.openUrl(QUrl(url)))


STYLE = """
QFrame#panel { background: palette(base); border: 1px solid #d5d9e0; border-radius: 6px; }
QLabel#panelTitle { font-weight: 600; font-size: 11pt; }
QStatusBar QLabel { padding: 0 8px; }
QTableView { border: none; }
QLabel#modeBanner { background: #fff8e1; border: 1px solid #f0d58c; border-radius: 6px; padding: 6px 10px; }
QLabel#problemBanner { background: #fdecea; border: 1px solid #f5c2c0; border-radius: 6px; padding: 6px 10px;
                       color: #8a1c1c; }
QLabel#connectStatus, QLabel#linkStatus { color: #374151; }
QLabel[error="true"] { color: #c62828; }
QPushButton#rowAction { padding: 1px 8px; }
"""


class MainWindow(LocationsPanel, SessionsPanel, MessageLogPanel):
    shutdown_finished = Signal()

    def __init__(
        self,
        app: App,
        runtime: BridgeRuntime | None = None,
        bridge: ServiceBridge | None = None,
        tray: Tray | None = None,
        *,
        sandbox_url: str | None = None,
        open_url: OpenUrl | None = None,
        confirm: Confirm | None = None,
        notice_window_ms: int = 1000,
    ) -> None:
        super().__init__()
        self.app = app
        self.runtime = runtime
        self.sandbox_url = sandbox_url
        self.open_url: OpenUrl = open_url or open_in_browser
        self.confirm: Confirm = confirm or self._ask
        self.bridge = bridge if bridge is not None else ServiceBridge(app.bus, self)
        self.setWindowTitle("ghl-desktop — WhatsApp ⇄ HighLevel")
        self.setWindowIcon(app_icon())
        self.resize(1280, 800)
        self.setMinimumSize(960, 640)
        self.setStyleSheet(STYLE)
        self._shutdown_task: asyncio.Task[None] | None = None
        self._shutdown_done = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connect_task: asyncio.Task[None] | None = None
        #: the session whose QR code / pairing code the linking area shows
        self.linking: str | None = None
        self._pair_phone_for: dict[str, str] = {}
        self._pending_pair_phone: str | None = None
        #: the runtime has started (webhooks listening, sessions resumed)
        self.bridge_ready = False

        self.locations_model = LocationsModel(self)
        self.sessions_model = SessionsModel(self)
        self.messages_model = MessageLogModel(self, limit=MESSAGE_LOG_LIMIT)
        self.messages_filter = MessageLogFilter(self)
        self.messages_filter.setSourceModel(self.messages_model)
        self.dead_model = DeadJobsModel(self)

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self._build_locations_panel())
        left.addWidget(self._build_sessions_panel())
        left.setStretchFactor(0, 2)
        left.setStretchFactor(1, 3)
        left.setChildrenCollapsible(False)
        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(left)
        top.addWidget(self._build_link_panel())
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 1)
        top.setSizes([940, 320])
        top.setChildrenCollapsible(False)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self._build_log_panel())
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([470, 300])
        self.splitter.setChildrenCollapsible(False)

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(8, 8, 8, 4)
        outer.setSpacing(6)
        self.mode_banner = QLabel()
        self.mode_banner.setObjectName("modeBanner")
        self.mode_banner.setWordWrap(True)
        self.mode_banner.setTextFormat(Qt.TextFormat.RichText)
        self.mode_banner.linkActivated.connect(self.open_url)
        self.mode_banner.setVisible(False)
        outer.addWidget(self.mode_banner)
        self.problem_banner = QLabel()
        self.problem_banner.setObjectName("problemBanner")
        self.problem_banner.setWordWrap(True)
        self.problem_banner.setVisible(False)
        outer.addWidget(self.problem_banner)
        outer.addWidget(self.splitter)
        self.setCentralWidget(central)
        self._build_status_bar()
        self._build_menu()
        self._show_mode()

        self.tray = tray if tray is not None else Tray(app_icon(), "ghl-desktop", self)
        self.tray.show_requested.connect(self._raise)
        self.tray.quit_requested.connect(self.close)
        self.policy = NoticePolicy()
        self.notices = NoticeCoalescer(self._show_notice, still_down=self._still_down,
                                       window_ms=notice_window_ms, parent=self)

        self.bridge.message_logged.connect(self._message_logged)
        self.bridge.locations_changed.connect(lambda _event: self.refresh())
        self.bridge.session_changed.connect(self._session_changed)
        self.bridge.session_removed.connect(self._session_removed)
        self.bridge.session_qr.connect(self._session_qr)
        self.bridge.session_pair_code.connect(self._session_pair_code)
        self.bridge.relay_state_changed.connect(self._relay_changed)
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(250)  # coalesce bursts of events into one count query
        self._status_timer.timeout.connect(self.refresh_status)
        self.bridge.event_published.connect(lambda _event: self._status_timer.start())
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(POLL_MS)
        self._poll_timer.timeout.connect(self.poll)
        self._poll_timer.start()
        find = QShortcut(QKeySequence(QKeySequence.StandardKey.Find), self)
        find.activated.connect(self.filter_box.setFocus)
        self._enable_actions()
        self.refresh()
        for session in self.sessions_model.records():
            self.policy.on_session(session)
        for location in self.locations_model.records():
            self.policy.on_location(location)

    # -- status bar, menu, banners --

    def _build_status_bar(self) -> None:
        bar = QStatusBar(self)
        self.mode_label = QLabel()
        self.secrets_label = QLabel()
        self.relay_label = QLabel()
        self.relay_label.setVisible(False)
        self.database_label = QLabel()
        self.counts_label = QLabel()
        bar.addWidget(self.mode_label)
        bar.addWidget(self.secrets_label)
        bar.addWidget(self.relay_label)
        bar.addPermanentWidget(self.counts_label)
        bar.addPermanentWidget(self.database_label)
        self.setStatusBar(bar)

    def _build_menu(self) -> None:
        menu = self.menuBar().addMenu("&ghl-desktop")
        self.settings_action = QAction("&Settings…", self)
        self.settings_action.triggered.connect(self.open_settings)
        menu.addAction(self.settings_action)
        menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Quit))
        quit_action.triggered.connect(self.close)
        menu.addAction(quit_action)

    def _show_mode(self) -> None:
        if self.sandbox_url is None:
            return
        url = html.escape(self.sandbox_url)
        self.mode_banner.setText(
            f"<b>Sandbox mode</b> — HighLevel and WhatsApp are simulated on this computer at "
            f"<a href='{url}/'>{url}</a>. Open it for the sandbox inbox (reply there as a HighLevel user); "
            "“Connect HighLevel…” opens its consent page, where you pick a location. "
            "Enter a HighLevel client ID and secret in Settings to use your real account."
        )
        self.mode_banner.setVisible(True)

    def _enable_actions(self) -> None:
        usable = self.runtime is not None
        for button in (self.connect_button, self.link_button, self.pair_button):
            button.setEnabled(usable)
            if not usable:
                button.setToolTip(NO_RUNTIME)

    def start_bridge(self, starting: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run the runtime's start as a window task: closing the window meanwhile cancels it before
        the runtime is stopped, and a failure (a port in use…) becomes the problem banner."""

        async def run() -> None:
            await starting
            self.bridge_ready = True
            self.refresh()

        return self._spawn(run(), name="start", on_error=lambda text: self.show_problem(
            f"The bridge could not start: {text}. Check the ports in Settings (another program may use "
            "them), then restart ghl-desktop."))

    def show_problem(self, text: str | None) -> None:
        """A banner for a problem that affects the whole app (the bridge could not start…)."""
        self.problem_banner.setText(text or "")
        self.problem_banner.setVisible(bool(text))

    # -- relay, notices --

    def _relay_changed(self, change: RelayStateChanged) -> None:
        labels = {"connected": "connected", "connecting": "connecting…", "reconnecting": "reconnecting…",
                  "unauthorized": "token refused — paste a new one in Settings", "stopped": "stopped"}
        self.relay_label.setText(f"Relay: {labels.get(str(change.state), str(change.state))}")
        self.relay_label.setToolTip(change.detail or "")
        self.relay_label.setVisible(True)
        self.notices.add(self.policy.on_relay(change))

    def _still_down(self, notice: Notice) -> bool:
        if notice.key.startswith("session:"):
            return not self.policy.session_is_up(notice.key.removeprefix("session:"))
        if notice.key == "relay":
            return not self.policy.relay_is_up()
        return True

    def _show_notice(self, notice: Notice) -> None:
        log.info("notice: %s — %s", notice.title, notice.text)
        self.tray.notify(notice.title, notice.text, warning=notice.warning)

    def notify(self, title: str, text: str, *, warning: bool = False) -> bool:
        return self.tray.notify(title, text, warning=warning)

    # -- data --

    def refresh(self) -> None:
        """Reload every panel from the database (cheap: a few hundred rows at most)."""
        if self.app.closed:
            return
        locations = self.app.db.locations.list()
        self.locations_model.set_records(locations)
        self._update_link_locations()
        self.sessions_model.set_location_names(self.locations_model.names())
        self.sessions_model.set_records(self.app.db.sessions.list())
        self.messages_model.set_records(self.app.db.messages.recent(MESSAGE_LOG_LIMIT))
        self.refresh_dead()
        self._update_shown()
        self.refresh_status()

    def poll(self) -> None:
        """What no event announces: dead letters, token expiry, a location needing reconnect."""
        if self.app.closed:
            return
        self.refresh_dead()
        locations = self.app.db.locations.list()
        if [(loc.id, loc.name, loc.state, loc.token_expires_at) for loc in locations] != [
            (loc.id, loc.name, loc.state, loc.token_expires_at) for loc in self.locations_model.records()
        ]:
            self.locations_model.set_records(locations)
            self._update_link_locations()
            self.sessions_model.set_location_names(self.locations_model.names())
        for location in locations:
            self.notices.add(self.policy.on_location(location))
        self.refresh_status()

    def refresh_status(self) -> None:
        if self.app.closed:
            return
        status = self.app.status()
        if status.sandbox:
            self.mode_label.setText("Sandbox mode" + (f" · {self.sandbox_url}" if self.sandbox_url else ""))
        else:
            self.mode_label.setText("HighLevel: credentials configured")
        self.secrets_label.setText(f"Secrets: {status.secret_store}")
        shown = self.database_label.fontMetrics().elidedText(
            _home_relative(status.database), Qt.TextElideMode.ElideMiddle, DATABASE_LABEL_WIDTH
        )
        self.database_label.setText(f"Database: {shown}")
        self.database_label.setToolTip(status.database)
        self.secrets_label.setToolTip(f"Where HighLevel tokens and the client secret are kept: {status.secret_store}")
        self.counts_label.setText(
            f"{status.locations} location{'s' * (status.locations != 1)} · "
            f"{status.sessions} number{'s' * (status.sessions != 1)} · "
            f"{status.pending_jobs} queued job{'s' * (status.pending_jobs != 1)}"
        )

    # -- settings --

    def open_settings(self) -> QWidget:
        """The settings dialog, window-modal and non-blocking; returns it (tests fill it in)."""
        from ghl_desktop.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.app.settings.home, self.app.secrets, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._say(
            self.connect_status, "Settings saved. Restart ghl-desktop to use them."))
        dialog.open()
        return dialog

    def _ask(self, title: str, question: str) -> bool:
        answer = QMessageBox.question(self, title, question)
        return answer == QMessageBox.StandardButton.Yes

    def _raise(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    # -- shutdown --

    @property
    def shutdown_done(self) -> bool:
        return self._shutdown_done

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._shutdown_done:
            event.accept()
            return
        event.ignore()
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_event_loop().create_task(self._shutdown())
            self.hide()  # gone for the user at once; the shutdown finishes behind it

    async def wait_shutdown(self) -> None:
        """Close the window (if not already closing) and wait until the app has shut down."""
        if not self._shutdown_done:
            self.close()
        if self._shutdown_task is not None:
            await self._shutdown_task

    async def _shutdown(self) -> None:
        log.info("window closed: shutting down")
        self._status_timer.stop()
        self._poll_timer.stop()
        self.notices.stop()
        self.bridge.detach()
        self.tray.hide()
        try:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if self.runtime is not None:
                await self.runtime.stop()
            await self.app.aclose()
        except Exception:
            log.exception("shutdown did not complete cleanly")
        finally:
            self._shutdown_done = True
            self.close()
            self.shutdown_finished.emit()


def _home_relative(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if home not in ("", "/") and path.startswith(home + os.sep) else path


__all__ = ["MainWindow", "normalize_phone", "open_in_browser", "readable_error"]
