"""The main window, composed of standalone panels: HighLevel locations, WhatsApp numbers, the linking
area and the message log with its dead letters, over a status bar that says where secrets and data
live, with the sandbox and problem banners above.

Composition only: each panel is a QWidget with explicit constructor dependencies — the one
UI-facing service API (:class:`~ghl_desktop.services.cockpit.Cockpit`, built here once from the
App and the BridgeRuntime), the one :class:`~ghl_desktop.ui.bridge.ServiceBridge`, and the window's
:class:`~ghl_desktop.ui.panels.base.Tasks`. No panel touches a repository.

Hooks others use: :meth:`reveal` (show, raise, select a row), :attr:`close_to_tray` +
``hidden_to_tray`` + :meth:`quit`, :meth:`add_top_widget`, :meth:`splitters` (stable objectNames).

Closing: when ``close_to_tray()`` says so, the window only hides (bridging goes on). Otherwise the
full shutdown: the window's tasks are cancelled, :meth:`BridgeRuntime.stop` and :meth:`App.aclose`
are awaited, then the window really closes and ``shutdown_finished`` fires.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import shiboken6
from PySide6.QtCore import QEvent, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QLabel,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QStatusBar,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.app import App
from ghl_desktop.services.cockpit import Cockpit, CockpitStatus
from ghl_desktop.services.health import HealthLevel, HealthSnapshot, NoticeRequested
from ghl_desktop.ui import theme
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.panels.base import Confirm, Tasks, readable_error
from ghl_desktop.ui.panels.base import OpenUrl as OpenUrl  # main.py imports it from here
from ghl_desktop.ui.panels.dead_letters import DeadLettersPanel
from ghl_desktop.ui.panels.link import LinkPanel, normalize_phone
from ghl_desktop.ui.panels.locations import LocationsPanel
from ghl_desktop.ui.panels.message_log import MessageLogPanel
from ghl_desktop.ui.panels.numbers import NumbersPanel
from ghl_desktop.ui.resources import app_icon
from ghl_desktop.ui.tray import Tray
from ghl_desktop.ui.widgets import rich_link

if TYPE_CHECKING:
    from ghl_desktop.relay.client import RelayStateChanged
    from ghl_desktop.runtime import BridgeRuntime

log = logging.getLogger("ghl.ui")

APP_NAME = "ghl-desktop"
MIN_WIDTH, MIN_HEIGHT = 1024, 640
DATABASE_LABEL_WIDTH = 170  # px; the full path is in the tooltip
POLL_MS = 2000  # token expiry, location states, health: things no event announces


def open_in_browser(url: str) -> bool:
    """The desktop's browser (Qt asks the platform: xdg-open, macOS open, Windows shell)."""
    return bool(QDesktopServices.openUrl(QUrl(url)))


class MainWindow(QMainWindow):
    shutdown_finished = Signal()
    hidden_to_tray = Signal()

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
        cockpit: Cockpit | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.runtime = runtime
        self.sandbox_url = sandbox_url
        self.open_url: OpenUrl = open_url or open_in_browser
        self.confirm: Confirm = confirm or self._ask
        self.bridge = bridge if bridge is not None else ServiceBridge(app.bus, self)
        self.cockpit = cockpit if cockpit is not None else Cockpit(app, runtime)
        #: True → closing the window hides it (set by the lifecycle when a tray is there)
        self.close_to_tray: Callable[[], bool] = lambda: False
        #: asked before a Quit from the menu or the tray (the lifecycle: "numbers are live — quit?")
        self.confirm_quit: Callable[[], bool] = lambda: True
        #: set by the lifecycle: it shows the notices (desktop notifications); None → the tray balloon
        self.notice_sink: Callable[[NoticeRequested], object] | None = None
        self.tasks = Tasks()
        self._shutdown_task: asyncio.Task[None] | None = None
        self._shutdown_done = False
        #: the runtime has started (webhooks listening, sessions resumed)
        self.bridge_ready = False
        #: the notices shown so far (title, text), newest last
        self.notices_shown: list[NoticeRequested] = []

        theme.follow_system_scheme()
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(app_icon())
        self.setMinimumSize(MIN_WIDTH, MIN_HEIGHT)
        self.resize(1280, 800)
        self.setStyleSheet(theme.stylesheet())

        self.locations = LocationsPanel(self.cockpit, self.bridge, tasks=self.tasks, open_url=self.open_url)
        self.numbers = NumbersPanel(self.cockpit, self.bridge, tasks=self.tasks, confirm=self.confirm)
        self.link = LinkPanel(self.cockpit, self.bridge, tasks=self.tasks)
        self.numbers.link_requested.connect(lambda: self.link.start_link())
        self.numbers.linking.connect(self.link.follow)
        self.numbers.reconnect_requested.connect(self._reconnect_location)
        self.locations.changed.connect(self._locations_changed)
        self.log_tabs, self.log_panel, self.dead_panel = self._build_log()

        self.left_splitter = QSplitter(Qt.Orientation.Vertical)
        self.left_splitter.setObjectName("leftSplitter")
        self.left_splitter.addWidget(self.locations)
        self.left_splitter.addWidget(self.numbers)
        self.left_splitter.setStretchFactor(0, 2)
        self.left_splitter.setStretchFactor(1, 3)
        self.left_splitter.setChildrenCollapsible(False)
        self.top_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.top_splitter.setObjectName("topSplitter")
        self.top_splitter.addWidget(self.left_splitter)
        self.top_splitter.addWidget(self.link)
        self.top_splitter.setStretchFactor(0, 3)
        self.top_splitter.setStretchFactor(1, 1)
        self.top_splitter.setSizes([900, 360])
        self.top_splitter.setChildrenCollapsible(False)
        self.main_splitter = QSplitter(Qt.Orientation.Vertical)
        self.main_splitter.setObjectName("mainSplitter")
        self.main_splitter.addWidget(self.top_splitter)
        self.main_splitter.addWidget(self.log_tabs)
        self.main_splitter.setStretchFactor(0, 3)
        self.main_splitter.setStretchFactor(1, 2)
        self.main_splitter.setSizes([470, 300])
        self.main_splitter.setChildrenCollapsible(False)

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(8, 8, 8, 4)
        outer.setSpacing(6)
        self.mode_banner = QLabel()
        self.mode_banner.setObjectName("modeBanner")
        self.mode_banner.setAccessibleName("Mode")
        self.mode_banner.setWordWrap(True)
        self.mode_banner.setTextFormat(Qt.TextFormat.RichText)
        self.mode_banner.linkActivated.connect(self.open_url)
        self.mode_banner.setVisible(False)
        outer.addWidget(self.mode_banner)
        self._storage_banner = False  # the problem banner shows the storage problem (cleared with it)
        self.problem_banner = QLabel()
        self.problem_banner.setObjectName("problemBanner")
        self.problem_banner.setAccessibleName("Problem")
        self.problem_banner.setWordWrap(True)
        self.problem_banner.setVisible(False)
        outer.addWidget(self.problem_banner)
        self._top_slot = QVBoxLayout()
        self._top_slot.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(self._top_slot)
        outer.addWidget(self.main_splitter, 1)
        self.setCentralWidget(central)
        self._build_status_bar()
        self._build_menu()
        self._show_mode()

        self.tray = tray if tray is not None else Tray(app_icon(), APP_NAME, self)
        self.tray.show_requested.connect(lambda: self.reveal())
        self.tray.quit_requested.connect(self.request_quit)
        self.bridge.health_changed.connect(self._health_changed)
        self.bridge.notice_requested.connect(self._notice)
        self.bridge.relay_state_changed.connect(self._relay_changed)
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(250)  # coalesce bursts of events into one count query
        self._status_timer.timeout.connect(self.refresh_status)
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_again: str | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._status_again = False
        self.bridge.event_published.connect(lambda _event: self._status_timer.start())
        self._poll_timer = QTimer(self)
        self._poll_timer.setInterval(POLL_MS)
        self._poll_timer.timeout.connect(self.poll)
        self._poll_timer.start()
        # what needs no read at once (mode, secret store, database); the counts and rows when they arrive
        self._show_status(self.cockpit.last_status(), counts=False)
        self.refresh()

    # -- the log area (H2's panels; the old mixin panel until they land) --

    def _build_log(self) -> tuple[QTabWidget, MessageLogPanel, DeadLettersPanel]:
        """(the log area, the message log panel, the dead letters panel)."""
        tabs = QTabWidget()
        tabs.setObjectName("logTabs")
        tabs.setAccessibleName("Message log")
        tabs.setDocumentMode(True)
        log_panel = MessageLogPanel(self.cockpit.log, self.bridge)
        dead_panel = DeadLettersPanel(self.cockpit.log, self.bridge)
        tabs.addTab(log_panel, "Messages")
        tabs.addTab(dead_panel, "Dead letters")

        def dead_count(count: int) -> None:
            tabs.setTabText(1, f"Dead letters ({count})" if count else "Dead letters")

        dead_panel.count_changed.connect(dead_count)
        dead_count(dead_panel.model.rowCount())
        dead_panel.message_requested.connect(lambda message_id: self.reveal(message_id=message_id))
        return tabs, log_panel, dead_panel

    # -- hooks --

    def splitters(self) -> list[QSplitter]:
        """The window's splitters, each with a stable objectName (their sizes are remembered)."""
        return [self.main_splitter, self.top_splitter, self.left_splitter, self.log_panel.splitter]

    def add_top_widget(self, widget: QWidget) -> None:
        """A slot above the panels (banners, the first-run checklist)."""
        self._top_slot.addWidget(widget)

    def reveal(self, session_id: str | None = None, location_id: str | None = None,
               message_id: int | None = None) -> None:
        """Show and raise the window and select that row (a notification or tray entry was clicked)."""
        self.showNormal()
        self.raise_()
        self.activateWindow()
        if session_id is not None:
            self.numbers.select(session_id)
        elif location_id is not None:
            self.locations.select(location_id)
        elif message_id is not None:
            self.log_tabs.setCurrentIndex(0)
            self.log_panel.select_message(message_id)

    def request_quit(self) -> None:
        """Quit from the menu or the tray: ``confirm_quit()`` first, then :meth:`quit`."""
        if self.confirm_quit():
            self.quit()

    def quit(self) -> None:
        """The full shutdown, whatever ``close_to_tray`` says (the tray's Quit)."""
        if self._shutdown_task is None and not self._shutdown_done:
            log.info("window closed: shutting down")
            # the Qt side at once (the window may be deleted before the task runs)
            self._status_timer.stop()
            self._poll_timer.stop()
            self.dead_panel.stop()
            self.bridge.detach()
            self.tray.hide()
            self._shutdown_task = asyncio.get_event_loop().create_task(self._shutdown())
            self.hide()

    # -- status bar, menu, banners --

    def _build_status_bar(self) -> None:
        bar = QStatusBar(self)
        self.mode_label = QLabel()
        self.secrets_label = QLabel()
        self.relay_label = QLabel()
        self.relay_label.setVisible(False)
        self.database_label = QLabel()
        self.counts_label = QLabel()
        for label, name in ((self.mode_label, "Mode"), (self.secrets_label, "Secrets"),
                            (self.relay_label, "Relay"), (self.database_label, "Database"),
                            (self.counts_label, "Counts")):
            label.setAccessibleName(name)
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
        quit_action.triggered.connect(self.request_quit)
        menu.addAction(quit_action)

    def _show_mode(self) -> None:
        if self.sandbox_url is None:
            return
        url = self.sandbox_url
        phones = getattr(self, "sandbox_phones_url", None) or f"{url}/phones"
        link = theme.colors().link
        self.mode_banner.setText(
            f"<b>Sandbox mode</b> — HighLevel and WhatsApp are simulated on this computer at "
            f"{rich_link(url + '/', url, link)}. Open {rich_link(phones, 'the sandbox phones', link)} "
            "to scan the QR code "
            "or write as a customer; the sandbox inbox replies as a HighLevel user. "
            "Enter a HighLevel client ID and secret in Settings to use your real account."
        )
        self.mode_banner.setVisible(True)

    def start_bridge(self, starting: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run the runtime's start as a window task: closing the window meanwhile cancels it before
        the runtime is stopped, and a failure (a port in use…) becomes the problem banner."""

        async def run() -> None:
            await starting
            self.bridge_ready = True
            self.refresh()

        return self.tasks.spawn(run(), name="start", on_error=lambda text: self.show_problem(
            f"The bridge could not start: {text}. Check the ports in Settings (another program may use "
            "them), then restart ghl-desktop."))

    def show_problem(self, text: str | None) -> None:
        """A banner for a problem that affects the whole app (the bridge could not start…)."""
        self.problem_banner.setText(text or "")
        self.problem_banner.setVisible(bool(text))

    # -- relay, health, notices --

    def _relay_changed(self, change: RelayStateChanged) -> None:
        labels = {"connected": "connected", "connecting": "connecting…", "reconnecting": "reconnecting…",
                  "unauthorized": "token refused — paste a new one in Settings", "stopped": "stopped"}
        self.relay_label.setText(f"Relay: {labels.get(str(change.state), str(change.state))}")
        self.relay_label.setToolTip(change.detail or "")
        self.relay_label.setVisible(True)

    def _health_changed(self, snapshot: HealthSnapshot) -> None:
        self.locations.apply_health(snapshot)
        self.numbers.apply_health(snapshot)
        # a failing disk affects the whole app: the problem banner says so until writes work again
        if snapshot.storage is not None:
            self._storage_banner = True
            self.show_problem(snapshot.storage.reason + ".")
        elif self._storage_banner:
            self._storage_banner = False
            self.show_problem(None)
        self._status_timer.start()

    def _notice(self, notice: NoticeRequested) -> None:
        """Until the desktop notifications take over: the tray balloon."""
        log.info("notice: %s — %s", notice.title, notice.text)
        self.notices_shown.append(notice)
        if self.notice_sink is not None:
            self.notice_sink(notice)
            return
        self.tray.notify(notice.title, notice.text, warning=notice.level is not HealthLevel.OK)

    def notify(self, title: str, text: str, *, warning: bool = False) -> bool:
        return self.tray.notify(title, text, warning=warning)

    # -- data --

    def _locations_changed(self) -> None:
        # what depends on the locations, from the ones the panel shows (no read of its own)
        self.numbers.set_location_names(self.locations.model.names())
        self.link.set_locations(self.locations.linkable())

    def _reconnect_location(self, location_id: str) -> None:
        row = self.locations.model.row_of(location_id)
        if row is not None:
            self.locations.start_connect(reconnect=self.locations.model.record(row))

    def refresh(self) -> asyncio.Task[None] | None:
        """Reload every panel through the cockpit: the reads run off the loop (one hop for locations,
        numbers and counts, one for health) and the panels update when they arrive. One refresh in
        flight; calls meanwhile run it once more afterwards."""
        return self._schedule_refresh("refresh")

    def poll(self) -> asyncio.Task[None] | None:
        """What no event announces: token expiry, a location needing reconnect, health counts."""
        return self._schedule_refresh("poll")

    def _schedule_refresh(self, kind: str) -> asyncio.Task[None] | None:
        if self.app.closed:
            return None
        if self._refresh_task is not None and not self._refresh_task.done():
            if self._refresh_again != "refresh":
                self._refresh_again = kind
            return self._refresh_task
        self._refresh_task = self.tasks.spawn(self._refresh(kind), name=f"window-{kind}")
        return self._refresh_task

    async def _refresh(self, kind: str) -> None:
        while True:
            self._refresh_again = None
            if kind == "refresh":
                self.log_panel.refresh_choices()  # the location/number filters (their own read)
            snapshot = await self.cockpit.refresh_health()
            overview = await self.cockpit.overview()
            if self.app.closed:
                return
            self._apply_health(snapshot)
            self.locations.set_locations(overview.locations)  # → changed → names, linkable locations
            if kind == "refresh" or overview.holders is not None:  # a cluster: other workers change numbers
                self.numbers.set_numbers(overview.numbers, overview.location_names, overview.holders)
            self._show_status(overview.status)
            if self._refresh_again is None:
                return
            kind = self._refresh_again

    def _apply_health(self, snapshot: HealthSnapshot) -> None:
        self.locations.apply_health(snapshot)
        self.numbers.apply_health(snapshot)

    def refresh_status(self) -> asyncio.Task[None] | None:
        """The status bar's counts, read off the loop (one read in flight, a burst reads once more)."""
        if self.app.closed:
            return None
        if self._status_task is not None and not self._status_task.done():
            self._status_again = True
            return self._status_task
        self._status_task = self.tasks.spawn(self._read_status(), name="window-status")
        return self._status_task

    async def _read_status(self) -> None:
        while True:
            self._status_again = False
            status = await self.cockpit.status()
            if self.app.closed:
                return
            self._show_status(status)
            if not self._status_again:
                return

    async def wait_idle(self) -> None:
        """Until the reads and actions started so far have landed in the panels (tests)."""
        while True:
            await self.tasks.wait()
            await self.log_panel.wait_idle()
            await self.dead_panel.wait_idle()
            if not self.tasks.running and not self.log_panel.model.busy:
                return

    def _show_status(self, status: CockpitStatus, *, counts: bool = True) -> None:
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
        if not counts:
            return
        text = (f"{status.locations} location{'s' * (status.locations != 1)} · "
                  f"{status.numbers} number{'s' * (status.numbers != 1)} · "
                  f"{status.pending_jobs} queued job{'s' * (status.pending_jobs != 1)}")
        if status.needs_you:
            text += f" · {status.needs_you} need{'s' * (status.needs_you == 1)} you"
        self.counts_label.setText(text)

    # -- look --

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.ApplicationPaletteChange, QEvent.Type.PaletteChange) \
                and not getattr(self, "_restyling", False):
            self._restyling = True
            try:
                self.setStyleSheet(theme.stylesheet())
                self._show_mode()
                for model in (self.locations.model, self.numbers.model):
                    model.refresh_all()
            finally:
                self._restyling = False

    # -- settings --

    def open_settings(self) -> QWidget:
        """The settings dialog, window-modal and non-blocking; returns it (tests fill it in)."""
        from ghl_desktop.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.app.settings.home, self.app.secrets, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.locations.connect_status.say(
            "Settings saved. Restart ghl-desktop to use them."))
        dialog.open()
        return dialog

    def _ask(self, title: str, question: str) -> bool:
        answer = QMessageBox.question(self, title, question)
        return answer == QMessageBox.StandardButton.Yes

    # -- shutdown --

    @property
    def shutdown_done(self) -> bool:
        return self._shutdown_done

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._shutdown_done:
            event.accept()
            return
        event.ignore()
        if self._shutdown_task is None and self.close_to_tray():
            self.hide()
            self.hidden_to_tray.emit()
            return
        self.quit()

    async def wait_shutdown(self) -> None:
        """Shut down (if not already) and wait until the app has closed."""
        if not self._shutdown_done:
            self.quit()
        if self._shutdown_task is not None:
            await self._shutdown_task

    async def _shutdown(self) -> None:
        try:
            self.cockpit.close()
            await self.tasks.cancel_all()
            await self.log_panel.aclose()
            await self.dead_panel.aclose()
            if self.runtime is not None:
                await self.runtime.stop()
            await self.app.aclose()
        except Exception:
            log.exception("shutdown did not complete cleanly")
        finally:
            self._shutdown_done = True
            if shiboken6.isValid(self):
                self.close()
                self.shutdown_finished.emit()


def _home_relative(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if home not in ("", "/") and path.startswith(home + os.sep) else path


__all__ = ["APP_NAME", "MainWindow", "normalize_phone", "open_in_browser", "readable_error"]
