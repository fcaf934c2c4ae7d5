"""The message log's table model (lazy, over all history) and the dead letters' model.

:class:`MessageLogModel` follows Anki's browser table: the model holds only the ids of the rows, in
order (an ``array('q')``, 8 bytes a message), and reads the rows themselves a page at a time when
the view asks for them, keeping the most recently used pages in a small LRU cache. Sorting and
filtering are SQL (``MessageLogService.ids``, on a worker thread for a file database); the answer is
applied when it arrives, the stale answer of a superseded query is dropped. A message logged or
changed while the view is open is applied in place by id (``apply_message``): inserted at its
position, updated, or removed when it no longer matches the filter — never a reset.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QGuiApplication, QPalette

from ghl_desktop.core.message_log import (
    LOG_COLUMNS,
    DeadLetter,
    LogColumn,
    LogFilter,
    LogRow,
    LogSort,
)
from ghl_desktop.core.models import Direction, Message, MessageStatus
from ghl_desktop.services.message_log import JOB_KIND_LABELS, MessageLogService

log = logging.getLogger("ghl.ui.log")

AnyIndex = QModelIndex | QPersistentModelIndex

#: the row's LogRow (or DeadLetter) under this role; its message id under IdRole
RowRole = Qt.ItemDataRole.UserRole + 1
IdRole = Qt.ItemDataRole.UserRole + 2
#: the row's MessageStatus (the status delegate draws it)
StatusRole = Qt.ItemDataRole.UserRole + 3

COLUMN_TITLES: dict[LogColumn, str] = {
    LogColumn.TIME: "Time",
    LogColumn.DIRECTION: "Direction",
    LogColumn.NUMBER: "Number",
    LogColumn.LOCATION: "Location",
    LogColumn.CONTACT: "Contact",
    LogColumn.KIND: "Kind",
    LogColumn.STATUS: "Status",
    LogColumn.TEXT: "Text",
}

STATUS_LABELS: dict[MessageStatus, str] = {
    MessageStatus.RECEIVED: "Received",
    MessageStatus.PENDING: "Queued",
    MessageStatus.SENT: "Sent",
    MessageStatus.DELIVERED: "Delivered",
    MessageStatus.READ: "Read",
    MessageStatus.PLAYED: "Played",
    MessageStatus.FAILED: "Failed",
}

DIRECTION_SHORT = {Direction.INBOUND: "→ HighLevel", Direction.OUTBOUND: "→ WhatsApp"}

#: rows read per page, and how many rows the cache keeps
PAGE_SIZE = 100
CACHE_ROWS = 2000
#: rows shown at once when the unfiltered log opens, before all ids have arrived
HEAD_ROWS = 200


def format_log_time(value: datetime, *, now: datetime | None = None) -> str:
    """Local time; with the date when it is not today."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone()
    today = (now or datetime.now(UTC)).astimezone().date()
    if local.date() == today:
        return local.strftime("%H:%M:%S")
    if local.year == today.year:
        return local.strftime("%d %b %H:%M")
    return local.strftime("%d %b %Y %H:%M")


_FAILURE_COLOR: dict[int, QColor] = {}


def failure_color() -> QColor:
    """The palette's "bad" colour (``ui.theme``), readable on the table's background; once per palette."""
    key = QGuiApplication.palette().cacheKey()
    if key not in _FAILURE_COLOR:
        _FAILURE_COLOR.clear()
        _FAILURE_COLOR[key] = _failure_color()
    return _FAILURE_COLOR[key]


def _failure_color() -> QColor:
    try:
        from ghl_desktop.ui.theme import colors
    except ImportError:  # pragma: no cover - the theme module ships with the window
        return QColor.fromHsl(0, 200, 170 if QGuiApplication.palette().color(QPalette.ColorRole.Base).lightness()
                              < 128 else 95)
    return colors().bad


def status_text(row: LogRow) -> str:
    label = STATUS_LABELS.get(row.status, str(row.status))
    if row.status is MessageStatus.FAILED and row.error:
        return f"{label}: {row.error}"
    return label


class MessageLogModel(QAbstractTableModel):
    """All messages matching a filter, in a sort order, read lazily (see the module docstring).

    Signals: ``loading_changed(bool)``, ``loaded(int)`` (the row count after a query was applied)."""

    loading_changed = Signal(bool)
    loaded = Signal(int)

    def __init__(self, service: MessageLogService, parent: QObject | None = None, *,
                 page_size: int = PAGE_SIZE, cache_rows: int = CACHE_ROWS) -> None:
        super().__init__(parent)
        self._service = service
        self._ids: array[int] = array("q")
        self._cache: OrderedDict[int, LogRow] = OrderedDict()
        self._page = page_size
        self._cache_rows = max(cache_rows, page_size)
        self._filter = LogFilter()
        self._sort = LogSort()
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._loading = False
        self._queries: set[asyncio.Task[None]] = set()  # id queries in flight (cancelled by aclose)
        self._pending: list[int] = []  # messages logged while a query ran
        self._head_shown = False  # the rows are only the first screenful of a query still running
        self.pages_read = 0  # how many page queries ran (tests, bench)

    # -- Qt API ---------------------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._ids)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(LOG_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(LOG_COLUMNS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMN_TITLES[LOG_COLUMNS[section]]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"Sort by {COLUMN_TITLES[LOG_COLUMNS[section]].lower()}"
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._ids) \
                or not 0 <= index.column() < len(LOG_COLUMNS):
            return None
        if role == IdRole:
            return self._ids[index.row()]
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, RowRole, StatusRole,
                        Qt.ItemDataRole.AccessibleTextRole, Qt.ItemDataRole.ForegroundRole):
            return None
        row = self.row_at(index.row())
        if row is None:
            return None
        if role == RowRole:
            return row
        if role == StatusRole:
            return row.status
        column = LOG_COLUMNS[index.column()]
        if role == Qt.ItemDataRole.ForegroundRole:
            if row.error and row.status is MessageStatus.FAILED and column is LogColumn.TEXT:
                return QBrush(failure_color())
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, column)
        return self._display(row, column)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if not 0 <= column < len(LOG_COLUMNS):
            return
        sort = LogSort(LOG_COLUMNS[column], order == Qt.SortOrder.DescendingOrder)
        if sort != self._sort:
            self._sort = sort
            self.reload()

    # -- cells ----------------------------------------------------------------------------------

    @staticmethod
    def _display(row: LogRow, column: LogColumn) -> str:
        if column is LogColumn.TIME:
            return format_log_time(row.time)
        if column is LogColumn.DIRECTION:
            return DIRECTION_SHORT[row.direction]
        if column is LogColumn.NUMBER:
            return row.number or "—"
        if column is LogColumn.LOCATION:
            return row.location_name or row.location_id
        if column is LogColumn.CONTACT:
            return row.contact_label
        if column is LogColumn.KIND:
            return row.kind.value
        if column is LogColumn.STATUS:
            return STATUS_LABELS.get(row.status, str(row.status))
        if row.status is MessageStatus.FAILED and row.error:
            # the reason is part of the row, not only a tooltip
            return f"{row.error} — {row.text}" if row.text else row.error
        return row.text

    @staticmethod
    def _tooltip(row: LogRow, column: LogColumn) -> str | None:
        if column is LogColumn.STATUS or (row.error and column is LogColumn.TEXT):
            return status_text(row)
        if column is LogColumn.TIME:
            return row.time.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        if column is LogColumn.CONTACT:
            return row.chat_jid
        if column is LogColumn.TEXT and len(row.text) > 60:
            return row.text
        return None

    # -- ours -----------------------------------------------------------------------------------

    @property
    def log_filter(self) -> LogFilter:
        return self._filter

    @property
    def log_sort(self) -> LogSort:
        return self._sort

    @property
    def loading(self) -> bool:
        return self._loading

    def ids(self) -> array[int]:
        """The ids in view order (a copy; the export writes exactly these)."""
        return array("q", self._ids)

    def set_filter(self, log_filter: LogFilter) -> None:
        if log_filter != self._filter:
            self._filter = log_filter
            self.reload()

    def set_sort(self, sort: LogSort) -> None:
        if sort != self._sort:
            self._sort = sort
            self.reload()

    def reload(self) -> asyncio.Task[None]:
        """Query the ids for the current filter and sort; the answer replaces the rows when it arrives.

        The unfiltered log in time order (how it opens) first shows its newest ``HEAD_ROWS`` at once
        (an index scan that stops there); the complete list then only appends the rest below."""
        self._generation += 1
        generation = self._generation
        self._set_loading(True)
        if self._service.head_is_cheap(self._filter, self._sort):
            self._apply(self._service.ids_now(self._filter, self._sort, HEAD_ROWS), final=False)
        task = asyncio.get_event_loop().create_task(self._load(generation), name="message-log-ids")
        self._task = task
        self._queries.add(task)
        task.add_done_callback(self._queries.discard)
        return task

    async def aclose(self) -> None:
        """Cancel the queries still running (the window is closing); their threads finish on their own."""
        self._generation += 1
        queries = list(self._queries)
        for task in queries:
            task.cancel()
        if queries:
            await asyncio.gather(*queries, return_exceptions=True)

    async def wait_loaded(self) -> None:
        """Until the last query's answer is applied (tests and the bench run the loop with this)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def load_now(self) -> None:
        """Query on this thread and apply at once (small databases, tests)."""
        self._generation += 1
        self._apply(self._service.ids_now(self._filter, self._sort))

    async def _load(self, generation: int) -> None:
        if generation != self._generation:
            return  # superseded before it started (typing, clicking sorts): no query at all
        try:
            ids = await self._service.ids(self._filter, self._sort)
        except Exception:
            log.exception("message log query failed")
            if generation == self._generation:
                self._set_loading(False)
            return
        if generation == self._generation:
            self._apply(ids)

    def _apply(self, ids: array[int], *, final: bool = True) -> None:
        head = len(self._ids)
        if self._head_shown and final and len(ids) >= head and ids[:head] == self._ids:
            # the first rows are already on screen: append the rest, keep selection and scroll
            if len(ids) > head:
                self.beginInsertRows(QModelIndex(), head, len(ids) - 1)
                self._ids = ids
                self.endInsertRows()
        else:
            self.beginResetModel()
            self._ids = ids
            self._cache.clear()
            self.endResetModel()
        self._head_shown = not final
        if not final:
            return
        self._set_loading(False)
        pending, self._pending = self._pending, []
        for message_id in pending:
            self.apply_id(message_id)
        self.loaded.emit(len(self._ids))

    def _set_loading(self, loading: bool) -> None:
        if loading != self._loading:
            self._loading = loading
            self.loading_changed.emit(loading)

    def row_at(self, row: int) -> LogRow | None:
        """The row (read with its page when not cached); None when it vanished from the database."""
        message_id = self._ids[row]
        cached = self._cache.get(message_id)
        if cached is not None:
            self._cache.move_to_end(message_id)
            return cached
        start = row - row % self._page
        wanted = [i for i in self._ids[start:start + self._page] if i not in self._cache]
        if message_id not in wanted:
            wanted.append(message_id)
        self.pages_read += 1
        for found in self._service.rows(wanted):
            self._cache[found.id] = found
        while len(self._cache) > self._cache_rows:
            self._cache.popitem(last=False)
        return self._cache.get(message_id)

    def cached_rows(self) -> int:
        return len(self._cache)

    def row_of(self, message_id: int) -> int | None:
        try:
            return self._ids.index(message_id)
        except ValueError:
            return None

    def id_at(self, row: int) -> int:
        return self._ids[row]

    def apply_message(self, message: Message) -> None:
        """A message was stored or changed (``ServiceBridge.message_logged``)."""
        if message.id is not None:
            self.apply_id(message.id)

    def apply_id(self, message_id: int) -> None:
        if self._loading:
            self._pending.append(message_id)
            return
        row = self.row_of(message_id)
        matches = self._service.matches(message_id, self._filter)
        if row is not None:
            self._cache.pop(message_id, None)
            if matches:
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(LOG_COLUMNS) - 1))
            else:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._ids[row]
                self.endRemoveRows()
            return
        if not matches:
            return
        position = self._position_for(message_id)
        self.beginInsertRows(QModelIndex(), position, position)
        self._ids.insert(position, message_id)
        self.endInsertRows()

    def _position_for(self, message_id: int) -> int:
        """Where a new id goes: by id (= time order) when sorted by time, else at the top (the next
        sort or filter change puts it in its place)."""
        if self._sort.column is not LogColumn.TIME:
            return 0
        ids, lo, hi = self._ids, 0, len(self._ids)
        descending = self._sort.descending
        while lo < hi:
            mid = (lo + hi) // 2
            if (ids[mid] > message_id) if descending else (ids[mid] < message_id):
                lo = mid + 1
            else:
                hi = mid
        return lo


class DeadLettersModel(QAbstractTableModel):
    """Dead letters (``MessageLogService.dead_letters``): work that gave up, with its reason."""

    COLUMNS = ("Job", "What", "About", "Gave up", "Attempts", "Reason")

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[DeadLetter] = []

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole \
                and 0 <= section < len(self.COLUMNS):
            return self.COLUMNS[section]
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows) \
                or not 0 <= index.column() < len(self.COLUMNS):
            return None
        record = self._rows[index.row()]
        column = index.column()
        if role == RowRole:
            return record
        if role == IdRole:
            return record.job_id
        if role == Qt.ItemDataRole.DisplayRole:
            return (f"#{record.job_id}", JOB_KIND_LABELS.get(record.kind, record.kind), record.summary,
                    format_log_time(record.gave_up_at), str(record.attempts),
                    " ".join(record.reason.split()))[column]
        if role == Qt.ItemDataRole.ToolTipRole and column in (2, 5):
            return record.summary if column == 2 else record.reason
        return None

    def set_records(self, records: Sequence[DeadLetter]) -> None:
        """Replace the list (a reset only when something changed: the selection survives a poll)."""
        records = list(records)
        if [(r.job_id, r.gave_up_at) for r in records] == [(r.job_id, r.gave_up_at) for r in self._rows]:
            return
        self.beginResetModel()
        self._rows = records
        self.endResetModel()

    def records(self) -> list[DeadLetter]:
        return list(self._rows)

    def record(self, row: int) -> DeadLetter:
        return self._rows[row]


__all__ = [
    "CACHE_ROWS",
    "COLUMN_TITLES",
    "HEAD_ROWS",
    "PAGE_SIZE",
    "STATUS_LABELS",
    "DeadLettersModel",
    "IdRole",
    "MessageLogModel",
    "RowRole",
    "StatusRole",
    "format_log_time",
    "status_text",
]
