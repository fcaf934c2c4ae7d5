"""The message log panel: all history, filtered and sorted in SQL, with a details pane (the dead
letters panel is ``dead_letters.py``, the pieces both use ``log_widgets.py``).

A plain QWidget with explicit dependencies: the :class:`MessageLogService` (``cockpit.log``) it
calls, and the :class:`ServiceBridge` it listens to. It never touches the database, and never
waits for it: every read (details, filter choices) and action (retry) is awaited in a
task and applied when it arrives (the loop thread stays free, docs/event-loop.md). No widget
per row: the status column is drawn by :class:`StatusDelegate` (tick icons), row actions are a
context menu, also opened with Enter or the Menu key.
"""

from __future__ import annotations

import asyncio
import html
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from PySide6.QtCore import (
    QDateTime,
    QEvent,
    QModelIndex,
    QPoint,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QGuiApplication, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDateTimeEdit,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QSplitter,
    QStackedWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.core.message_log import LOG_COLUMNS, LogColumn, LogDetails, LogFilter, LogRow
from ghl_desktop.core.models import Direction, MessageStatus
from ghl_desktop.services.message_log import DIRECTION_LABELS, JOB_KIND_LABELS, MessageLogService
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.message_log_models import (
    IdRole,
    MessageLogModel,
    RowRole,
    status_text,
)
from ghl_desktop.ui.panels.log_widgets import (
    PanelTasks,
    RowKeys,
    StatusDelegate,
    action_button,
    log_table,
    menu_index,
    status_colors,
)

log = logging.getLogger("ghl.ui.log")

NO_MESSAGES = "No messages yet — they appear here as they cross the bridge."
NO_MATCH = "No messages match these filters."
LOADING = "Loading messages…"

#: time-range presets: label → how far back (None: any time; "custom": the two date fields)
TIME_RANGES: tuple[tuple[str, timedelta | str | None], ...] = (
    ("Any time", None),
    ("Last hour", timedelta(hours=1)),
    ("Last 24 hours", timedelta(days=1)),
    ("Last 7 days", timedelta(days=7)),
    ("Last 30 days", timedelta(days=30)),
    ("Custom range…", "custom"),
)

STATUS_FILTERS: tuple[tuple[str, frozenset[MessageStatus]], ...] = (
    ("Any status", frozenset()),
    ("Failed", frozenset({MessageStatus.FAILED})),
    ("Queued", frozenset({MessageStatus.PENDING, MessageStatus.RECEIVED})),
    ("Sent", frozenset({MessageStatus.SENT})),
    ("Delivered", frozenset({MessageStatus.DELIVERED})),
    ("Read", frozenset({MessageStatus.READ, MessageStatus.PLAYED})),
)

SEARCH_DELAY_MS = 250




class MessageLogPanel(QWidget):
    """All messages, filtered and sorted, with a details pane and CSV export.

    ``select_message(message_id)`` selects (and scrolls to) one message, clearing the filters first
    when they hide it. Signals: ``status_changed(str)`` (a sentence for the status bar)."""

    status_changed = Signal(str)

    def __init__(self, log: MessageLogService, bridge: ServiceBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageLogPanel")
        self.service = log
        self.bridge = bridge
        self.tasks = PanelTasks()
        self.model = MessageLogModel(log, self)
        self._details_id: int | None = None
        self.current_details: LogDetails | None = None
        self._select_after_load: int | None = None
        self.last_export: tuple[str, int] | None = None

        # -- filters --
        self.search = QLineEdit()
        self.search.setObjectName("logSearch")
        self.search.setAccessibleName("Search messages")
        self.search.setPlaceholderText("Search text, contact name or phone…")
        self.search.setClearButtonEnabled(True)
        self.search.setMinimumWidth(220)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.apply_filters)
        self.search.textChanged.connect(lambda _text: self._search_timer.start())
        self.search.returnPressed.connect(self.apply_filters)

        self.location_box = self._combo("logLocationFilter", "Filter by location")
        self.number_box = self._combo("logNumberFilter", "Filter by WhatsApp number")
        self.direction_box = self._combo("logDirectionFilter", "Filter by direction")
        self.direction_box.addItem("Both directions", None)
        for direction in Direction:
            self.direction_box.addItem(DIRECTION_LABELS[direction], direction)
        self.status_box = self._combo("logStatusFilter", "Filter by status")
        for label, statuses in STATUS_FILTERS:
            self.status_box.addItem(label, statuses)
        self.time_box = self._combo("logTimeFilter", "Filter by time")
        for label, span in TIME_RANGES:
            self.time_box.addItem(label, span)
        now = QDateTime.currentDateTime()
        self.since_edit = self._date_edit("logSince", "From (local time)", now.addDays(-1))
        self.until_edit = self._date_edit("logUntil", "Until (local time)", now.addSecs(3600))
        for combo in (self.location_box, self.number_box, self.direction_box, self.status_box, self.time_box):
            combo.currentIndexChanged.connect(self.apply_filters)
        self.since_edit.dateTimeChanged.connect(self.apply_filters)
        self.until_edit.dateTimeChanged.connect(self.apply_filters)
        self.clear_button = action_button("Clear filters", "Clear filters", self.clear_filters)
        self.export_button = action_button("Export CSV…", "Export the shown messages to CSV", self._export_clicked,
                                           name="logExport")
        self.count_label = QLabel()
        self.count_label.setObjectName("logCount")
        self.count_label.setAccessibleName("Messages shown")

        # -- table and details --
        self.view = log_table("messageLogTable")
        self.view.setAccessibleName("Message log")
        self.view.setModel(self.model)
        self.view.setSortingEnabled(True)
        self.view.horizontalHeader().setSortIndicator(0, Qt.SortOrder.DescendingOrder)
        self.view.horizontalHeader().setSectionsMovable(True)
        self.status_delegate = StatusDelegate(self.view)
        self.view.setItemDelegateForColumn(LOG_COLUMNS.index(LogColumn.STATUS), self.status_delegate)
        self._size_columns()
        self.view.selectionModel().currentRowChanged.connect(self._current_changed)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.view.doubleClicked.connect(self._focus_details)
        self._keys = RowKeys(self.view, self._context_menu)
        self.hint = QLabel(LOADING)
        self.hint.setObjectName("logHint")
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setAccessibleName("Message log status")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.view)
        self.stack.addWidget(self.hint)

        self.details = QTextBrowser()
        self.details.setObjectName("messageDetails")
        self.details.setAccessibleName("Message details")
        self.details.setOpenLinks(False)
        self.details.setPlaceholderText("Select a message to see its details.")
        self.retry_button = action_button("Retry", "Retry the selected message", self.retry_selected,
                                          name="logRetry", enabled=False)
        self.copy_button = action_button(
            "Copy details", "Copy the message details",
            lambda: QGuiApplication.clipboard().setText(self.details.toPlainText()), enabled=False)
        self.action_label = QLabel()
        self.action_label.setObjectName("logActionStatus")
        self.action_label.setWordWrap(True)
        self.action_label.setAccessibleName("Last action")
        details_box = QWidget()
        details_box.setObjectName("messageDetailsPane")
        details_layout = QVBoxLayout(details_box)
        details_layout.setContentsMargins(0, 0, 0, 0)
        details_layout.addWidget(self.details, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.copy_button)
        buttons.addStretch(1)
        details_layout.addLayout(buttons)
        details_layout.addWidget(self.action_label)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("messageLogSplitter")
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.stack)
        self.splitter.addWidget(details_box)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([760, 280])

        filters = QHBoxLayout()
        filters.addWidget(self.search, 2)
        for widget in (self.location_box, self.number_box, self.direction_box, self.status_box, self.time_box):
            filters.addWidget(widget, 1)
        dates = QHBoxLayout()
        self.range_row = QWidget()
        range_layout = QHBoxLayout(self.range_row)
        range_layout.setContentsMargins(0, 0, 0, 0)
        range_layout.addWidget(QLabel("From"))
        range_layout.addWidget(self.since_edit)
        range_layout.addWidget(QLabel("until"))
        range_layout.addWidget(self.until_edit)
        self.range_row.setVisible(False)
        dates.addWidget(self.range_row)
        dates.addWidget(self.count_label, 1)
        dates.addWidget(self.clear_button)
        dates.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(filters)
        layout.addLayout(dates)
        layout.addWidget(self.splitter, 1)
        self.setTabOrder(self.search, self.location_box)

        self._details_seq = 0  # the latest details read asked for (an older answer is dropped)
        self._choices_task: asyncio.Task[None] | None = None
        self._choices_again = False
        self.model.loading_changed.connect(lambda _loading: self._update_hint())
        self.model.loaded.connect(self._loaded)
        self.model.changes_applied.connect(self._changes_applied)
        self.model.rowsInserted.connect(lambda *_: self._update_hint())
        self.model.rowsRemoved.connect(lambda *_: self._update_hint())
        bridge.message_logged.connect(self._message_logged)
        bridge.locations_changed.connect(lambda _event: self.refresh_choices())
        bridge.session_changed.connect(self._session_changed)
        bridge.session_removed.connect(lambda _session_id: self.refresh_choices())
        self.refresh_choices()
        self.model.reload()
        self._update_hint()

    # -- building -------------------------------------------------------------------------------

    def _combo(self, name: str, accessible: str) -> QComboBox:
        combo = QComboBox()
        combo.setObjectName(name)
        combo.setAccessibleName(accessible)
        combo.setToolTip(accessible)
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(10)
        return combo

    def _date_edit(self, name: str, accessible: str, value: QDateTime) -> QDateTimeEdit:
        edit = QDateTimeEdit(value)
        edit.setObjectName(name)
        edit.setAccessibleName(accessible)
        edit.setCalendarPopup(True)
        edit.setDisplayFormat("yyyy-MM-dd HH:mm")
        return edit

    def _size_columns(self) -> None:
        metrics = self.view.fontMetrics()
        widths = {
            LogColumn.TIME: metrics.horizontalAdvance("28 Dec 00:00") + 14,
            LogColumn.DIRECTION: metrics.horizontalAdvance("→ WhatsApp") + 14,
            LogColumn.NUMBER: metrics.horizontalAdvance("+14155550123") + 14,
            LogColumn.LOCATION: metrics.horizontalAdvance("Sandbox Location") + 14,
            LogColumn.CONTACT: metrics.horizontalAdvance("Maria Lopez (+34600111222)") + 14,
            LogColumn.KIND: metrics.horizontalAdvance("sticker") + 14,
            LogColumn.STATUS: metrics.horizontalAdvance("Delivered") + StatusDelegate.ICON + 22,
        }
        header = self.view.horizontalHeader()
        for column, width in widths.items():
            header.resizeSection(LOG_COLUMNS.index(column), width)

    def refresh(self) -> None:
        """The window's refresh: the filter entries (locations and numbers come and go); the rows
        themselves stay current through ``message_logged``."""
        self.refresh_choices()

    def _session_changed(self, session: Any) -> None:
        if self.number_box.findData(getattr(session, "id", None)) < 0 or getattr(session, "phone", None):
            self.refresh_choices()

    def refresh_choices(self) -> asyncio.Task[None]:
        """The location and number filter entries (keeps the current choice), read off the loop; a
        burst of calls reads once more after the one in flight."""
        if self._choices_task is not None and not self._choices_task.done():
            self._choices_again = True
            return self._choices_task
        self._choices_task = self.tasks.spawn(self._read_choices(), "message-log-choices")
        return self._choices_task

    async def _read_choices(self) -> None:
        while True:
            self._choices_again = False
            try:
                locations, numbers = await self.service.filter_choices()
            except Exception:
                log.exception("could not read the filter choices")
                return
            self._set_choices(locations, numbers)
            if not self._choices_again:
                return

    def _set_choices(self, locations: list[Any], numbers: list[Any]) -> None:
        for combo, everything, choices in (
            (self.location_box, "All locations", locations),
            (self.number_box, "All numbers", numbers),
        ):
            current = combo.currentData()
            entries = [(everything, None)] + [(choice.label, choice.id) for choice in choices]
            if [(combo.itemText(i), combo.itemData(i)) for i in range(combo.count())] == entries:
                continue  # unchanged: no flicker of an open box
            combo.blockSignals(True)
            combo.clear()
            for label, data in entries:
                combo.addItem(label, data)
            found = combo.findData(current)
            combo.setCurrentIndex(max(found, 0))
            combo.blockSignals(False)

    # -- filters --------------------------------------------------------------------------------

    def current_filter(self) -> LogFilter:
        since = until = None
        span = self.time_box.currentData()
        custom = span == "custom"
        self.range_row.setVisible(custom)
        if isinstance(span, timedelta):
            since = datetime.now(UTC) - span
        elif custom:
            since = _utc(self.since_edit.dateTime())
            until = _utc(self.until_edit.dateTime())
        statuses = self.status_box.currentData()
        return LogFilter(
            location_id=self.location_box.currentData(),
            session_id=self.number_box.currentData(),
            direction=self.direction_box.currentData(),
            statuses=statuses if isinstance(statuses, frozenset) else frozenset(),
            since=since, until=until, text=self.search.text().strip(),
        )

    def apply_filters(self) -> None:
        self._search_timer.stop()
        self.model.set_filter(self.current_filter())
        self._update_hint()

    def clear_filters(self) -> None:
        for combo in (self.location_box, self.number_box, self.direction_box, self.status_box, self.time_box):
            combo.blockSignals(True)
            combo.setCurrentIndex(0)
            combo.blockSignals(False)
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self.apply_filters()

    def _update_hint(self) -> None:
        count = self.model.rowCount()
        if self.model.loading and count == 0:
            self.hint.setText(LOADING)
        elif count == 0:
            self.hint.setText(NO_MESSAGES if self.model.log_filter.is_empty else NO_MATCH)
        self.stack.setCurrentWidget(self.view if count else self.hint)
        if self.model.loading:
            self.count_label.setText("Searching…" if not self.model.log_filter.is_empty else LOADING)
        elif self.model.log_filter.is_empty:
            self.count_label.setText(f"{count:,} message{'s' * (count != 1)}")
        else:
            self.count_label.setText(f"{count:,} message{'s' * (count != 1)} match")
        self.export_button.setEnabled(count > 0 and not self.model.loading)

    def _loaded(self, _count: int) -> None:
        self._update_hint()
        target = self._select_after_load
        if target is not None:
            self._select_after_load = None
            self._select_row_of(target)
        elif self._details_id is not None:
            row = self.model.row_of(self._details_id)
            if row is not None:
                self.view.selectRow(row)
            else:
                self._show_details(None)
        elif self.selected_id() is not None:
            self._show_details(self.selected_id())  # a row selected before its id was known

    # -- selection and details ------------------------------------------------------------------

    def select_message(self, message_id: int) -> bool:
        """Select this message; when the filters hide it, they are cleared first (once its existence
        is read, off the loop). Returns False only when it is known at once not to be there: use
        :meth:`reveal_message` to await the answer."""
        if self.model.loading:
            self._select_after_load = message_id
            return True
        if self._select_row_of(message_id):
            return True
        self.tasks.spawn(self.reveal_message(message_id), "message-log-reveal")
        return True

    async def reveal_message(self, message_id: int) -> bool:
        """:meth:`select_message`, awaited: False when the message is not stored."""
        if self.model.loading:
            self._select_after_load = message_id
            return True
        if self._select_row_of(message_id):
            return True
        if await self.service.details(message_id) is None:
            return False
        if self._select_row_of(message_id):  # it arrived meanwhile
            return True
        self._select_after_load = message_id
        self.clear_filters()
        if not self.model.loading:  # the filters were already clear: the message arrived meanwhile
            self.model.reload()
        return True

    def _select_row_of(self, message_id: int) -> bool:
        row = self.model.row_of(message_id)
        if row is None:
            return False
        index = self.model.index(row, 0)
        self.view.setCurrentIndex(index)
        self.view.selectRow(row)
        self.view.scrollTo(index, QAbstractItemView.ScrollHint.PositionAtCenter)
        return True

    def _focus_details(self, _index: QModelIndex) -> None:
        self.details.setFocus()

    def selected_id(self) -> int | None:
        value = self.view.currentIndex().data(IdRole)  # None: no row, or its id is not known yet
        return int(value) if value else None

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        value = current.data(IdRole) if current.isValid() else None
        self._show_details(int(value) if value else None)

    def _show_details(self, message_id: int | None) -> None:
        """Show this message's details: read off the loop; the pane keeps what it shows until they
        arrive (no blank flash), an answer for an earlier selection is dropped."""
        self._details_id = message_id
        self._details_seq += 1
        seq = self._details_seq
        if message_id is None:
            self._set_details(None)
            return
        self.tasks.soon(lambda: self._read_details(message_id, seq), "message-log-details")

    async def _read_details(self, message_id: int, seq: int) -> None:
        try:
            details = await self.service.details(message_id)
        except Exception:
            log.exception("could not read the details of message %s", message_id)
            details = None
        if seq == self._details_seq:
            self._set_details(details)

    def _set_details(self, details: LogDetails | None) -> None:
        self.current_details = details
        self.retry_button.setEnabled(bool(details and details.retryable))
        self.copy_button.setEnabled(details is not None)
        if details is None:
            self.details.clear()
            return
        self.details.setHtml(details_html(details, self.palette()))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        details = getattr(self, "current_details", None)  # (a palette change can come during __init__)
        if event.type() == QEvent.Type.PaletteChange and details is not None:
            self.details.setHtml(details_html(details, self.palette()))  # colours follow the scheme

    def _message_logged(self, message: Any) -> None:
        self.model.apply_message(message)  # read and applied off the loop (changes_applied follows)

    def _changes_applied(self, message_ids: list[int]) -> None:
        current = self.selected_id()
        if current != self._details_id or (self._details_id is not None and self._details_id in message_ids):
            # the shown message changed, or its row went away and the selection moved on
            self._show_details(current)
        self._update_hint()

    # -- actions --------------------------------------------------------------------------------

    def retry_selected(self) -> asyncio.Task[None] | None:
        message_id = self.selected_id() or self._details_id
        if message_id is None:
            return None
        self.retry_button.setEnabled(False)  # one press, one retry (the answer re-enables it)
        return self.tasks.spawn(self._retry(message_id), "message-log-retry")

    async def _retry(self, message_id: int) -> None:
        try:
            result = await self.service.retry_message(message_id)
        except Exception as exc:
            log.exception("retry of message %s failed", message_id)
            self.action_label.setText(f"Retry failed: {exc}")
            self._show_details(self.selected_id())
            return
        self.action_label.setText(result.message)
        self.status_changed.emit(result.message)
        # the change came back through the bridge; the row may have left this view (a "Failed" filter)
        self._show_details(self.selected_id())

    def _context_menu(self, pos: QPoint) -> QMenu | None:
        index = menu_index(self.view, pos)
        if index is None:
            return None
        row: LogRow | None = index.data(RowRole)
        menu = QMenu(self)
        menu.setAccessibleName("Message actions")
        details = QAction("Show details", menu)
        details.triggered.connect(self.details.setFocus)
        menu.addAction(details)
        retry = QAction("Retry", menu)
        retry.setEnabled(self.retry_button.isEnabled())
        retry.triggered.connect(self.retry_selected)
        menu.addAction(retry)
        copy_text = QAction("Copy text", menu)
        copy_text.setEnabled(row is not None)
        copy_text.triggered.connect(lambda: QGuiApplication.clipboard().setText(
            (self.current_details.body if self.current_details else None) or (row.text if row else "")))
        menu.addAction(copy_text)
        self.last_menu = menu
        menu.popup(self.view.viewport().mapToGlobal(pos))
        return menu

    def _export_clicked(self) -> None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M")
        path, _ = QFileDialog.getSaveFileName(self, "Export messages", f"messages-{stamp}.csv", "CSV files (*.csv)")
        if path:
            self.export_to(path)

    def export_to(self, path: str) -> asyncio.Task[int]:
        """Write the shown messages (this filter, this order) to ``path``, off the loop thread."""
        self.export_button.setEnabled(False)
        self.action_label.setText("Exporting…")
        ids = self.model.ids()

        async def run() -> int:
            try:
                written = await self.service.export_csv(path, self.model.log_filter, self.model.log_sort, ids=ids)
            except OSError as exc:
                self.action_label.setText(f"Export failed: {exc.strerror or exc}")
                raise
            finally:
                self._update_hint()
            self.last_export = (path, written)
            self.action_label.setText(f"Exported {written:,} message{'s' * (written != 1)} to {path}")
            self.status_changed.emit(self.action_label.text())
            return written

        return self.tasks.spawn(run(), "message-log-export")

    async def aclose(self) -> None:
        """The window is shutting down: cancel the reads in flight (their threads finish on their own)."""
        self._search_timer.stop()
        await self.tasks.cancel_all()
        await self.model.aclose()

    async def wait_idle(self) -> None:
        """Until the ids query, the page reads, the live changes, the details and any export have
        finished (tests, the bench)."""
        while True:
            await self.model.wait_idle()
            await self.tasks.wait()
            if not self.model.busy:
                return


def _utc(value: QDateTime) -> datetime:
    """A local QDateTime (what the user picked) as an aware UTC datetime."""
    return datetime.fromtimestamp(value.toSecsSinceEpoch(), UTC)


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    local = value.astimezone()
    text = local.strftime("%Y-%m-%d %H:%M:%S %Z")
    if local.utcoffset():
        text += f" <span style='opacity:.7'>({value.astimezone(UTC):%H:%M:%S} UTC)</span>"
    return text


def details_html(d: LogDetails, palette: QPalette) -> str:
    """The details pane: one table of facts, the error in full (red), the text, the jobs' payloads."""
    row = d.row
    _, bad, _, muted = status_colors()
    facts = [
        ("Status", _esc(status_text(row).split(":", 1)[0])),
        ("Direction", _esc(DIRECTION_LABELS[row.direction])),
        ("Kind", _esc(row.kind.value)),
        ("Number", _esc(row.number or "—")),
        ("Location", f"{_esc(row.location_name or '—')} <code>{_esc(row.location_id)}</code>"),
        ("Contact", _esc(row.contact_label) + (f" <code>{_esc(row.chat_jid)}</code>" if row.chat_jid else "")),
        ("Our id", _esc(row.id)),
        ("WhatsApp id", f"<code>{_esc(d.wa_message_id or '—')}</code>"),
        ("HighLevel id", f"<code>{_esc(d.ghl_message_id or '—')}</code>"),
        ("Logged", _when(d.created_at)),
        ("Sent at", _when(d.sent_at)),
        ("Updated", _when(d.updated_at)),
    ]
    if d.media_name or d.media_ref:
        size = f", {d.media_size:,} bytes" if d.media_size else ""
        facts.append(("Attachment", _esc(f"{d.media_name or ''} {d.media_mime or ''}{size}".strip()) +
                      (f"<br><code>{_esc(d.media_ref)}</code>" if d.media_ref else "")))
    parts = []
    if row.error:
        parts.append(f"<p style='color:{bad.name()}'><b>Failed:</b> {_esc(row.error)}</p>")
    parts.append("<table cellspacing='0' cellpadding='2'>" + "".join(
        f"<tr><td style='color:{muted.name()}; padding-right:8px'>{label}</td><td>{value}</td></tr>"
        for label, value in facts) + "</table>")
    if d.body:
        parts.append(f"<h4>Text</h4><p style='white-space:pre-wrap'>{_esc(d.body)}</p>")
    for job in d.jobs:
        kind = JOB_KIND_LABELS.get(job.kind, job.kind)
        error = f"<br><span style='color:{bad.name()}'>{_esc(job.last_error)}</span>" if job.last_error else ""
        parts.append(f"<h4>Job #{job.id} — {_esc(kind)} ({_esc(job.state)}, {job.attempts} attempt"
                     f"{'s' * (job.attempts != 1)})</h4>{error}"
                     f"<pre style='white-space:pre-wrap'>{_esc(job.payload)}</pre>")  # wraps: no sideways scrolling
    if not d.jobs:
        parts.append(f"<p style='color:{muted.name()}'>No job payload stored (finished jobs are purged after a "
                     "week).</p>")
    return "".join(parts)



__all__ = ["NO_MATCH", "NO_MESSAGES", "MessageLogPanel", "details_html"]
