"""The main window: HighLevel locations, WhatsApp numbers (with the QR area) and the message log,
over a status bar that says where secrets and data live.

The window reads the repositories of the :class:`~ghl_desktop.app.App` it is given and listens to
the :class:`~ghl_desktop.ui.bridge.ServiceBridge`; it never builds services itself. Closing it
shuts the app down: ``closeEvent`` is refused once, :meth:`App.aclose` is awaited (tasks cancelled
and awaited, database closed), then the window really closes and ``shutdown_finished`` fires.

Signals: shutdown_finished (App.aclose completed and the window is closed).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QSplitter,
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.app import App
from ghl_desktop.core.models import Message
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.models import LocationsModel, MessageLogFilter, MessageLogModel, SessionsModel
from ghl_desktop.ui.resources import app_icon
from ghl_desktop.ui.tray import Tray
from ghl_desktop.ui.widgets import EmptyStateView, QrView, make_table

log = logging.getLogger("ghl.ui")

NOT_BUILT_YET = "Not available yet: {what} is still being built."
MESSAGE_LOG_LIMIT = 500
DATABASE_LABEL_WIDTH = 170  # px; the full path is in the tooltip


def _panel(title: str, *header_widgets: QWidget) -> tuple[QFrame, QVBoxLayout]:
    frame = QFrame()
    frame.setObjectName("panel")
    frame.setFrameShape(QFrame.Shape.StyledPanel)
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(10, 8, 10, 10)
    layout.setSpacing(6)
    header = QHBoxLayout()
    label = QLabel(title)
    label.setObjectName("panelTitle")
    header.addWidget(label)
    header.addStretch(1)
    for widget in header_widgets:
        header.addWidget(widget)
    layout.addLayout(header)
    return frame, layout


STYLE = """
QFrame#panel { background: palette(base); border: 1px solid #d5d9e0; border-radius: 6px; }
QLabel#panelTitle { font-weight: 600; font-size: 11pt; }
QStatusBar QLabel { padding: 0 8px; }
QTableView { border: none; }
"""


def _home_relative(path: str) -> str:
    home = str(Path.home())
    return "~" + path[len(home) :] if home not in ("", "/") and path.startswith(home + os.sep) else path


class MainWindow(QMainWindow):
    shutdown_finished = Signal()

    def __init__(self, app: App, bridge: ServiceBridge | None = None, tray: Tray | None = None) -> None:
        super().__init__()
        self.app = app
        self.bridge = bridge if bridge is not None else ServiceBridge(app.bus, self)
        self.setWindowTitle("ghl-desktop — WhatsApp ⇄ HighLevel")
        self.setWindowIcon(app_icon())
        self.resize(1200, 780)
        self.setMinimumSize(900, 600)
        self.setStyleSheet(STYLE)
        self._shutdown_task: asyncio.Task[None] | None = None
        self._shutdown_done = False

        self.locations_model = LocationsModel(self)
        self.sessions_model = SessionsModel(self)
        self.messages_model = MessageLogModel(self, limit=MESSAGE_LOG_LIMIT)
        self.messages_filter = MessageLogFilter(self)
        self.messages_filter.setSourceModel(self.messages_model)

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(self._build_locations_panel())
        top.addWidget(self._build_sessions_panel())
        top.setStretchFactor(0, 4)
        top.setStretchFactor(1, 5)
        top.setSizes([520, 650])
        top.setChildrenCollapsible(False)

        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self._build_log_panel())
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setChildrenCollapsible(False)

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(8, 8, 8, 4)
        outer.addWidget(self.splitter)
        self.setCentralWidget(central)
        self._build_status_bar()

        self.tray = tray if tray is not None else Tray(app_icon(), "ghl-desktop", self)
        self.tray.show_requested.connect(self._raise)
        self.tray.quit_requested.connect(self.close)

        self.bridge.message_logged.connect(self._message_logged)
        self.bridge.locations_changed.connect(lambda _event: self.refresh())
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(250)  # coalesce bursts of events into one count query
        self._status_timer.timeout.connect(self.refresh_status)
        self.bridge.event_published.connect(lambda _event: self._status_timer.start())
        find = QShortcut(QKeySequence(QKeySequence.StandardKey.Find), self)
        find.activated.connect(self.filter_box.setFocus)
        self.refresh()

    # -- panels --

    def _build_locations_panel(self) -> QWidget:
        self.connect_button = QPushButton("Connect HighLevel…")
        self.connect_button.setEnabled(False)
        self.connect_button.setToolTip(NOT_BUILT_YET.format(what="HighLevel sign-in"))
        frame, layout = _panel("HighLevel locations", self.connect_button)
        self.locations_view = make_table(self.locations_model, stretch_column=0, fit_columns=(1, 2, 3))
        self.locations_panel = EmptyStateView(
            self.locations_view, "No locations yet — connect HighLevel to add your sub-accounts."
        )
        layout.addWidget(self.locations_panel)
        return frame

    def _build_sessions_panel(self) -> QWidget:
        self.link_button = QPushButton("Link WhatsApp number…")
        self.link_button.setEnabled(False)
        self.link_button.setToolTip(NOT_BUILT_YET.format(what="WhatsApp linking"))
        frame, layout = _panel("WhatsApp numbers", self.link_button)
        self.sessions_view = make_table(self.sessions_model, stretch_column=1, fit_columns=(0, 2, 3))
        self.sessions_panel = EmptyStateView(
            self.sessions_view, "No WhatsApp numbers linked yet — link one to a location to start bridging."
        )
        self.qr_view = QrView()
        body = QSplitter(Qt.Orientation.Horizontal)
        body.addWidget(self.sessions_panel)
        body.addWidget(self.qr_view)
        body.setStretchFactor(0, 3)
        body.setStretchFactor(1, 1)
        body.setChildrenCollapsible(False)
        layout.addWidget(body)
        return frame

    def _build_log_panel(self) -> QWidget:
        self.filter_box = QLineEdit()
        self.filter_box.setPlaceholderText("Filter messages — text, chat, status, kind…")
        self.filter_box.setClearButtonEnabled(True)
        self.filter_box.setMinimumWidth(320)
        self.filter_box.textChanged.connect(self._filter_changed)
        self.shown_label = QLabel()
        self.shown_label.setObjectName("shownLabel")
        frame, layout = _panel("Message log", self.shown_label, self.filter_box)
        self.messages_view = make_table(self.messages_filter)
        header = self.messages_view.horizontalHeader()
        for column, width in enumerate((90, 110, 80, 220, 90)):
            header.resizeSection(column, width)
        self.messages_panel = EmptyStateView(
            self.messages_view, "No messages yet — they appear here as they cross the bridge."
        )
        layout.addWidget(self.messages_panel)
        return frame

    def _build_status_bar(self) -> None:
        bar = QStatusBar(self)
        self.mode_label = QLabel()
        self.secrets_label = QLabel()
        self.database_label = QLabel()
        self.counts_label = QLabel()
        bar.addWidget(self.mode_label)
        bar.addWidget(self.secrets_label)
        bar.addPermanentWidget(self.counts_label)
        bar.addPermanentWidget(self.database_label)
        self.setStatusBar(bar)

    # -- data --

    def refresh(self) -> None:
        """Reload every panel from the database (cheap: a few hundred rows at most)."""
        locations = self.app.db.locations.list()
        self.locations_model.set_records(locations)
        self.sessions_model.set_location_names(self.locations_model.names())
        self.sessions_model.set_records(self.app.db.sessions.list())
        self.messages_model.set_records(self.app.db.messages.recent(MESSAGE_LOG_LIMIT))
        self._update_shown()
        self.refresh_status()

    def refresh_status(self) -> None:
        if self.app.closed:
            return
        status = self.app.status()
        self.mode_label.setText(
            "HighLevel: sandbox mode (no credentials)" if status.sandbox else "HighLevel: credentials configured"
        )
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

    def _message_logged(self, message: Message) -> None:
        self.messages_model.upsert(message)
        self._update_shown()

    def _filter_changed(self, text: str) -> None:
        self.messages_filter.set_text(text)
        self._update_shown()

    def _update_shown(self) -> None:
        total = self.messages_model.rowCount()
        shown = self.messages_filter.rowCount()
        self.shown_label.setText(
            f"{shown} of {total} shown" if self.filter_box.text().strip() else f"{total} message{'s' * (total != 1)}"
        )

    def notify(self, title: str, text: str, *, warning: bool = False) -> bool:
        return self.tray.notify(title, text, warning=warning)

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

    async def wait_shutdown(self) -> None:
        """Close the window (if not already closing) and wait until the app has shut down."""
        if not self._shutdown_done:
            self.close()
        if self._shutdown_task is not None:
            await self._shutdown_task

    async def _shutdown(self) -> None:
        log.info("window closed: shutting down")
        self._status_timer.stop()
        self.bridge.detach()
        self.tray.hide()
        try:
            await self.app.aclose()
        except Exception:
            log.exception("shutdown did not complete cleanly")
        finally:
            self._shutdown_done = True
            self.close()
            self.shutdown_finished.emit()


__all__ = ["MainWindow"]
