"""The main window: HighLevel locations, WhatsApp numbers, the linking area (QR code / pairing code)
and the message log with its dead letters, over a status bar that says where secrets and data live.

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
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers
from PySide6.QtCore import QAbstractItemModel, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStatusBar,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.app import App
from ghl_desktop.core.errors import GhlDesktopError
from ghl_desktop.core.models import (
    Job,
    Location,
    LocationState,
    Message,
    MessageStatus,
    SessionState,
    WhatsAppSession,
    can_transition,
)
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.models import (
    SESSION_STATE_LABELS,
    DeadJobsModel,
    LocationsModel,
    MessageLogFilter,
    MessageLogModel,
    RecordTableModel,
    SessionsModel,
)
from ghl_desktop.ui.notify import Notice, NoticeCoalescer, NoticePolicy
from ghl_desktop.ui.resources import app_icon
from ghl_desktop.ui.tray import Tray
from ghl_desktop.ui.widgets import EmptyStateView, QrView, make_table

if TYPE_CHECKING:
    from ghl_desktop.relay.client import RelayStateChanged
    from ghl_desktop.runtime import BridgeRuntime
    from ghl_desktop.services.events import SessionPairCode, SessionQr

log = logging.getLogger("ghl.ui")

NO_RUNTIME = "Not available: the bridge is not running in this window."
MESSAGE_LOG_LIMIT = 500
DEAD_LIMIT = 500
DATABASE_LABEL_WIDTH = 170  # px; the full path is in the tooltip
POLL_MS = 2000  # dead letters, token expiry, location states: things no event announces

#: opens a URL in the user's browser; the return value is not trusted (see qt-headless.md §4)
OpenUrl = Callable[[str], bool]
#: asks the user to confirm a destructive action: (title, question) -> yes
Confirm = Callable[[str, str], bool]

_LIVE = frozenset({SessionState.CONNECTING, SessionState.CONNECTED, SessionState.RECONNECTING,
                   SessionState.PHONE_OFFLINE})


def open_in_browser(url: str) -> bool:
    """The desktop's browser (Qt asks the platform: xdg-open, macOS open, Windows shell)."""
    return bool(QDesktopServices.openUrl(QUrl(url)))


def readable_error(exc: BaseException) -> str:
    """One sentence for the user: our own errors already are; others get their type named."""
    if isinstance(exc, GhlDesktopError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def normalize_phone(text: str) -> str:
    """E.164 (+CCNUMBER) or ValueError with a sentence saying what is wrong."""
    raw = text.strip()
    if not raw:
        raise ValueError("Enter the phone number of the WhatsApp account, with its country code (+1 555…).")
    try:
        number = phonenumbers.parse(raw if raw.startswith("+") else "+" + raw.lstrip("0"), None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"“{raw}” is not a phone number: {exc}") from exc
    if not phonenumbers.is_possible_number(number):
        raise ValueError(f"“{raw}” is not a possible phone number (include the country code).")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


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


def _status_label(name: str) -> QLabel:
    label = QLabel()
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
    label.setVisible(False)
    return label


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


class MainWindow(QMainWindow):
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

    # -- panels --

    def _build_locations_panel(self) -> QWidget:
        self.connect_button = QPushButton("Connect HighLevel…")
        self.connect_button.clicked.connect(lambda: self.start_connect())
        frame, layout = _panel("HighLevel locations", self.connect_button)
        self.locations_view = make_table(self.locations_model, stretch_column=0, fit_columns=(1, 2, 3, 4))
        self.locations_view.verticalHeader().setDefaultSectionSize(30)
        self.locations_panel = EmptyStateView(
            self.locations_view, "No locations yet — connect HighLevel to add your sub-accounts."
        )
        layout.addWidget(self.locations_panel)
        status_row = QHBoxLayout()
        self.connect_status = _status_label("connectStatus")
        self.connect_status.linkActivated.connect(self.open_url)
        self.cancel_connect_button = QPushButton("Cancel")
        self.cancel_connect_button.setVisible(False)
        self.cancel_connect_button.clicked.connect(self.cancel_connect)
        status_row.addWidget(self.connect_status, 1)
        status_row.addWidget(self.cancel_connect_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(status_row)
        self._row_actions(self.locations_view, self.locations_model, self._location_actions)
        return frame

    def _build_sessions_panel(self) -> QWidget:
        self.link_location = QComboBox()
        self.link_location.setMinimumWidth(180)
        self.link_location.setToolTip("The HighLevel location the new number will bridge to")
        self.link_location.setVisible(False)
        self.link_button = QPushButton("Link WhatsApp number…")
        self.link_button.clicked.connect(lambda: self.start_link())
        frame, layout = _panel("WhatsApp numbers", self.link_location, self.link_button)
        self.sessions_view = make_table(self.sessions_model, stretch_column=3, fit_columns=(0, 1, 2, 4, 5))
        self.sessions_view.verticalHeader().setDefaultSectionSize(30)
        self.sessions_panel = EmptyStateView(
            self.sessions_view, "No WhatsApp numbers linked yet — link one to a location to start bridging."
        )
        layout.addWidget(self.sessions_panel)
        self._row_actions(self.sessions_view, self.sessions_model, self._session_actions)
        return frame

    def _build_link_panel(self) -> QWidget:
        frame, layout = _panel("Link a number")
        self.qr_title = QLabel("Press “Link WhatsApp number…” to show a QR code.")
        self.qr_title.setWordWrap(True)
        layout.addWidget(self.qr_title)
        self.qr_view = QrView()
        layout.addWidget(self.qr_view, 1)
        pair_row = QHBoxLayout()
        self.pair_phone = QLineEdit()
        self.pair_phone.setPlaceholderText("+1 555 010 0001")
        self.pair_phone.setToolTip("The WhatsApp number to link, with country code")
        self.pair_button = QPushButton("Pair with phone number")
        self.pair_button.setToolTip("Get an 8-character code to type on the phone instead of scanning")
        self.pair_button.clicked.connect(lambda: self.start_pair())
        pair_row.addWidget(self.pair_phone, 1)
        pair_row.addWidget(self.pair_button)
        layout.addLayout(pair_row)
        self.link_status = _status_label("linkStatus")
        layout.addWidget(self.link_status)
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
        self.dead_view = make_table(self.dead_model, stretch_column=4, fit_columns=(0, 1, 2, 3, 5))
        self.dead_view.verticalHeader().setDefaultSectionSize(30)
        self.dead_panel = EmptyStateView(
            self.dead_view, "No dead letters — every message that gave up would be listed here, to retry."
        )
        self._row_actions(self.dead_view, self.dead_model, self._dead_actions)
        self.retry_all_button = QPushButton("Retry all")
        self.retry_all_button.clicked.connect(lambda: self.retry_dead_jobs([j.id for j in self.dead_model.records()]))
        dead_page = QWidget()
        dead_layout = QVBoxLayout(dead_page)
        dead_layout.setContentsMargins(0, 4, 0, 0)
        dead_bar = QHBoxLayout()
        self.dead_status = _status_label("deadStatus")
        dead_bar.addWidget(self.dead_status, 1)
        dead_bar.addWidget(self.retry_all_button)
        dead_layout.addLayout(dead_bar)
        dead_layout.addWidget(self.dead_panel)
        self.log_tabs = QTabWidget()
        self.log_tabs.setDocumentMode(True)
        self.log_tabs.addTab(self.messages_panel, "Messages")
        self.log_tabs.addTab(dead_page, "Dead letters")
        layout.addWidget(self.log_tabs)
        return frame

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

    # -- row actions --

    def _row_actions(
        self,
        view: QTableView,
        model: RecordTableModel[Any],
        actions_for: Callable[[Any], list[tuple[str, Callable[[], object]]]],
    ) -> None:
        """Buttons in the model's ACTIONS_COLUMN of every row, rebuilt when the row changes."""
        column = model.ACTIONS_COLUMN

        def install(*_args: object) -> None:
            for row in range(model.rowCount()):
                record = model.record(row)
                actions = actions_for(record)
                signature = (getattr(record, "id", None), tuple(name for name, _ in actions))
                index = model.index(row, column)
                current = view.indexWidget(index)
                if current is not None and current.property("signature") == repr(signature):
                    continue
                holder = QWidget()
                holder.setProperty("signature", repr(signature))
                row_layout = QHBoxLayout(holder)
                row_layout.setContentsMargins(2, 1, 2, 1)
                row_layout.setSpacing(4)
                for name, callback in actions:
                    button = QPushButton(name)
                    button.setObjectName("rowAction")
                    button.clicked.connect(callback)
                    row_layout.addWidget(button)
                row_layout.addStretch(1)
                view.setIndexWidget(index, holder)
            view.resizeColumnToContents(column)

        source: QAbstractItemModel = model
        for signal in (source.modelReset, source.rowsInserted, source.rowsRemoved, source.dataChanged):
            signal.connect(install)

    @staticmethod
    def row_button(view: QTableView, row: int, text: str) -> QPushButton | None:
        """The action button ``text`` in ``row`` (None when the row offers no such action)."""
        model = view.model()
        holder = view.indexWidget(model.index(row, getattr(model, "ACTIONS_COLUMN", -1)))
        if holder is None:
            return None
        return next((b for b in holder.findChildren(QPushButton) if b.text() == text), None)

    def _location_actions(self, location: Location) -> list[tuple[str, Callable[[], object]]]:
        if self.runtime is None or location.state is not LocationState.NEEDS_RECONNECT:
            return []
        return [("Reconnect", lambda: self.start_connect(reconnect=location))]

    def _session_actions(self, session: WhatsAppSession) -> list[tuple[str, Callable[[], object]]]:
        if self.runtime is None:
            return []
        sid = session.id
        actions: list[tuple[str, Callable[[], object]]] = []
        if session.state in _LIVE:
            actions.append(("Log out", lambda: self.session_action("logout", sid)))
        elif session.state is SessionState.WAITING_FOR_SCAN:
            actions.append(("Cancel", lambda: self.session_action("logout", sid)))
        else:
            if session.jid and can_transition(session.state, SessionState.CONNECTING):
                actions.append(("Retry", lambda: self.session_action("retry", sid)))
            if can_transition(session.state, SessionState.WAITING_FOR_SCAN):
                actions.append(("Link again", lambda: self.session_action("link_again", sid)))
        actions.append(("Remove", lambda: self.session_action("remove", sid)))
        return actions

    def _dead_actions(self, job: Job) -> list[tuple[str, Callable[[], object]]]:
        return [("Retry", lambda: self.retry_dead_jobs([job.id]))]

    # -- tasks --

    def _spawn(
        self, coro: Coroutine[Any, Any, Any], *, on_error: Callable[[str], None], name: str
    ) -> asyncio.Task[Any]:
        """Run a window action: kept until done, its failure shown where ``on_error`` puts it."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed: %s", name, readable_error(exc), exc_info=not isinstance(exc, GhlDesktopError))
                on_error(readable_error(exc))

        task = asyncio.get_event_loop().create_task(guarded(), name=f"ui-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    def _say(self, label: QLabel, text: str | None, *, error: bool = False) -> None:
        label.setProperty("error", "true" if error else "false")
        label.style().unpolish(label)
        label.style().polish(label)
        label.setText(text or "")
        label.setVisible(bool(text))

    # -- Connect HighLevel --

    @property
    def connecting(self) -> bool:
        return self._connect_task is not None and not self._connect_task.done()

    def start_connect(self, *, reconnect: Location | None = None) -> asyncio.Task[None] | None:
        """Run the OAuth install with the browser; the result lands in the locations panel."""
        if self.runtime is None or self.connecting:
            return None
        self.connect_button.setEnabled(False)
        self.cancel_connect_button.setVisible(True)
        self._connect_task = self._spawn(
            self._connect(reconnect), name="connect",
            on_error=lambda text: self._say(self.connect_status, f"Could not connect HighLevel: {text}", error=True),
        )
        self._connect_task.add_done_callback(lambda _t: self._connect_finished())
        return self._connect_task

    def cancel_connect(self) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            self._say(self.connect_status, "Cancelled — nothing was connected.")

    def _connect_finished(self) -> None:
        self.connect_button.setEnabled(self.runtime is not None)
        self.cancel_connect_button.setVisible(False)

    async def _connect(self, reconnect: Location | None) -> None:
        assert self.runtime is not None
        oauth = self.runtime.oauth
        what = f"“{reconnect.name}”" if reconnect else "a location"
        self._say(self.connect_status, f"Opening the HighLevel sign-in in your browser — approve {what} there…")
        flow = asyncio.get_running_loop().create_task(oauth.connect(), name="oauth-connect")
        shown_url: str | None = None
        try:
            while not flow.done():
                url = oauth.authorize_url
                if url and url != shown_url:
                    shown_url = url
                    self._say(self.connect_status,
                              f"Waiting for you to approve {what} in the browser. "
                              f"Nothing opened? <a href='{html.escape(url)}'>Open the sign-in page</a>.")
                await asyncio.wait({flow}, timeout=0.1)
        except asyncio.CancelledError:
            flow.cancel()  # the connector closes its loopback listener on the way out
            await asyncio.gather(flow, return_exceptions=True)
            return
        connected = flow.result()
        names = ", ".join(loc.name for loc in connected)
        self._say(self.connect_status, f"Connected: {names}.")
        self.refresh()

    # -- Link WhatsApp --

    def _connected_locations(self) -> list[Location]:
        return [loc for loc in self.locations_model.records() if loc.state is LocationState.CONNECTED]

    def _update_link_locations(self) -> None:
        current = self.link_location.currentData()
        locations = self._connected_locations()
        self.link_location.blockSignals(True)
        self.link_location.clear()
        for loc in locations:
            self.link_location.addItem(loc.name, loc.id)
        index = self.link_location.findData(current)
        self.link_location.setCurrentIndex(max(index, 0))
        self.link_location.blockSignals(False)
        self.link_location.setVisible(len(locations) > 1)

    def _chosen_location(self) -> str | None:
        data = self.link_location.currentData()
        return str(data) if data else None

    def start_link(self) -> asyncio.Task[None] | None:
        """A new session for the chosen location; its QR codes appear in the linking area."""
        if self.runtime is None:
            return None
        location_id = self._chosen_location()
        if location_id is None:
            self._say(self.link_status, "Connect a HighLevel location first: a number bridges to a location.",
                      error=True)
            return None
        self._say(self.link_status, None)
        self.qr_title.setText(f"Scan with WhatsApp for {self.link_location.currentText()}")
        self.qr_view.show_message("Starting WhatsApp… the QR code appears in a moment.")
        return self._spawn(self._create(location_id, None), name="link", on_error=self._link_failed)

    def start_pair(self) -> asyncio.Task[None] | None:
        """Pairing by code: for the number being linked now, or a new session for the chosen location."""
        if self.runtime is None:
            return None
        try:
            phone = normalize_phone(self.pair_phone.text())
        except ValueError as exc:
            self._say(self.link_status, str(exc), error=True)
            return None
        self._say(self.link_status, f"Asking WhatsApp for a pairing code for {phone}…")
        linking = self.sessions_model.row_of(self.linking) if self.linking else None
        if linking is not None and self.sessions_model.record(linking).state is SessionState.WAITING_FOR_SCAN:
            sid = self.linking
            assert sid is not None
            self._pair_phone_for[sid] = phone
            return self._spawn(self.runtime.sessions.pair_by_phone(sid, phone), name="pair",
                               on_error=self._link_failed)
        location_id = self._chosen_location()
        if location_id is None:
            self._say(self.link_status, "Connect a HighLevel location first: a number bridges to a location.",
                      error=True)
            return None
        self.qr_title.setText(f"Pairing a number for {self.link_location.currentText()}")
        self._pending_pair_phone = phone  # the code may arrive before create_session returns
        return self._spawn(self._create(location_id, phone), name="pair", on_error=self._link_failed)

    async def _create(self, location_id: str, pair_phone: str | None) -> None:
        assert self.runtime is not None
        session = await self.runtime.sessions.create_session(location_id, pair_phone=pair_phone)
        if pair_phone:
            self._pair_phone_for[session.id] = pair_phone
        if self.linking is None:
            self.linking = session.id
        self.sessions_model.upsert(session)

    def _link_failed(self, text: str) -> None:
        self._say(self.link_status, f"Linking did not work: {text}", error=True)
        if self.qr_view.code is None and self.qr_view.pair_code is None:
            self.qr_view.show_message(f"{text}\n\nPress Link again.")

    def _session_qr(self, event: SessionQr) -> None:
        self.linking = event.session_id
        self.qr_view.show_qr(event.code)
        self._say(self.link_status, "Open WhatsApp on the phone → Settings → Linked devices → Link a device, "
                                    "and point it at this code. It changes every 20 seconds.")

    def _session_pair_code(self, event: SessionPairCode) -> None:
        self.linking = event.session_id
        phone = self._pair_phone_for.get(event.session_id) or self._pending_pair_phone
        self.qr_view.show_pair_code(event.code, phone)
        self._say(self.link_status, None)

    def session_action(self, action: str, session_id: str) -> asyncio.Task[None] | None:
        """Log out / Remove / Retry / Link again on one number (destructive ones ask first)."""
        runtime = self.runtime
        if runtime is None:
            return None
        row = self.sessions_model.row_of(session_id)
        who = (self.sessions_model.record(row).phone if row is not None else None) or "this number"
        if action == "logout" and row is not None and \
                self.sessions_model.record(row).state is not SessionState.WAITING_FOR_SCAN:
            if not self.confirm("Log out", f"Log {who} out of WhatsApp? You will have to scan a QR code to "
                                           "link it again."):
                return None
        if action == "remove" and not self.confirm(
                "Remove number", f"Remove {who} from ghl-desktop? It is logged out and its WhatsApp data on this "
                                 "computer is deleted; the message log keeps its messages."):
            return None
        if action == "link_again":
            self.qr_title.setText("Scan with WhatsApp to link the number again")
            self.qr_view.show_message("Starting WhatsApp… the QR code appears in a moment.")
            self.linking = session_id
        calls: dict[str, Callable[[str], Coroutine[Any, Any, None]]] = {
            "logout": runtime.sessions.logout,
            "remove": runtime.sessions.remove,
            "retry": runtime.sessions.retry,
            "link_again": runtime.sessions.link_again,
        }
        return self._spawn(calls[action](session_id), name=f"session-{action}",
                           on_error=lambda text: self._say(self.link_status, f"{who}: {text}", error=True))

    def _session_changed(self, session: WhatsAppSession) -> None:
        self.sessions_model.upsert(session)
        self.notices.add(self.policy.on_session(session))
        if session.id != self.linking:
            return
        if session.state is SessionState.CONNECTED:
            self.linking = None
            self.qr_view.show_message(f"✓ Linked {session.phone or 'the number'} — messages now cross the bridge.")
            self._say(self.link_status, None)
        elif session.state is SessionState.CONNECTING and session.detail and "Paired" in session.detail:
            self.qr_view.show_message(f"Paired {session.phone or ''} — connecting…")
        elif session.state.is_final:
            self.linking = None
            self.qr_view.show_message(session.detail or SESSION_STATE_LABELS[session.state])
            self._say(self.link_status, None)

    def _session_removed(self, session_id: str) -> None:
        self.sessions_model.remove(session_id)
        self.policy.on_session_removed(session_id)
        if session_id == self.linking:
            self.linking = None
            self.qr_view.clear_qr()

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

    # -- dead letters --

    def refresh_dead(self) -> None:
        jobs = self.app.db.jobs.list("dead", limit=DEAD_LIMIT)
        if [(j.id, j.updated_at) for j in jobs] != [(j.id, j.updated_at) for j in self.dead_model.records()]:
            self.dead_model.set_records(jobs)
        count = len(jobs)
        self.log_tabs.setTabText(1, f"Dead letters ({count})" if count else "Dead letters")
        self.retry_all_button.setEnabled(count > 0 and self.runtime is not None)

    def _message_of(self, job: Job) -> Message | None:
        """The message a dead job was carrying, when it carried one."""
        payload = job.payload
        messages = self.app.db.messages
        if isinstance(payload.get("message"), dict) and payload.get("session_id"):
            wa_id = payload["message"].get("id")
            return messages.by_wa_id(str(payload["session_id"]), str(wa_id)) if wa_id else None
        event: dict[str, Any] = payload["event"] if isinstance(payload.get("event"), dict) else payload
        if event.get("messageId") and event.get("locationId"):
            return messages.by_ghl_id(str(event["locationId"]), str(event["messageId"]))
        return None

    def retry_dead_jobs(self, job_ids: list[int]) -> int:
        """Requeue dead jobs (their failed message back to where it started) and wake the runner."""
        if self.runtime is None or self.app.closed:
            return 0
        requeued = 0
        for job_id in job_ids:
            job = self.app.db.jobs.get(job_id)
            if job is None:
                continue
            message = self._message_of(job)
            if self.app.db.jobs.requeue_dead(job_id):
                requeued += 1
                if message is not None and message.id is not None and message.status is MessageStatus.FAILED:
                    self.messages_model.upsert(self.app.db.messages.reset_failed(message.id))
        if requeued:
            self.runtime.runner.wake()
        self._say(self.dead_status, f"{requeued} job{'s' * (requeued != 1)} queued again." if requeued
                  else "Nothing to retry (already retried?).")
        QTimer.singleShot(0, self.refresh_dead)  # not under the clicked button's feet
        return requeued

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
