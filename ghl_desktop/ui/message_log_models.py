"""The message log's table model (lazy, over all history) and the dead letters' model.

:class:`MessageLogModel` follows Anki's browser table: the model holds only the ids of the rows, in
order (an ``array('q')``, 8 bytes a message), and reads the rows themselves a page at a time when
the view asks for them, keeping the most recently used pages in a small LRU cache. Sorting and
filtering are SQL (``MessageLogService.ids``, off the loop thread); the answer is applied when it
arrives, the stale answer of a superseded query is dropped.

Nothing here reads the database on the loop thread (docs/event-loop.md). ``data()`` for a row not
yet read returns a placeholder (:data:`LOADING_CELL`) and schedules its page (once per page: the
reads asked for during one paint go to the storage executor in one hop); when the rows arrive,
``dataChanged`` repaints them. A message logged or changed while the view is open is applied in
place by id (``apply_message``): the changes of a burst are read in one hop (does it still match the
filter, its new row) and then inserted at its position, updated, or removed — never a reset, and a
changed row keeps showing its previous content until the new one is there (no flicker).
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
#: live changes are applied at most once per this many seconds (a burst: one read, one insert, one
#: repaint); the first change after a quiet spell is applied at once
LIVE_TICK = 0.5
#: what a cell shows while its page is being read (the first column; the others stay empty)
LOADING_CELL = "…"


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
    if row.error:  # a failure's reason, or a note: "waiting: +1… is disconnected", "sent from … instead"
        return f"{label}: {row.error}"
    return label


_ROW_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren
#: the roles MessageLogModel.data answers (as ints: a role comes in as either)
_DATA_ROLES = frozenset(int(r) for r in (
    Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, RowRole, StatusRole, IdRole,
    Qt.ItemDataRole.AccessibleTextRole, Qt.ItemDataRole.ForegroundRole))


class MessageLogModel(QAbstractTableModel):
    """All messages matching a filter, in a sort order, read lazily (see the module docstring).

    Signals: ``loading_changed(bool)``, ``loaded(int)`` (the row count after a query was applied)."""

    loading_changed = Signal(bool)
    loaded = Signal(int)
    #: live changes were applied (their ids), after the rows were inserted/updated/removed
    changes_applied = Signal(list)

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
        # while the whole id list is on its way: the view's length is known (an index count) and its two
        # ends (first and last ``_ends`` ids); the ids between are 0 (unknown: a placeholder, no read)
        self._partial = False
        self._ends = (0, 0)
        self.pages_read = 0  # how many pages were read (tests, bench)
        self.reads = 0  # how many hops to the database the page reads took
        # page reads: ids asked for by data() (scheduled or in flight), the pages not yet sent, the call
        # that sends them (one hop per loop iteration), the reads in flight
        self._fetching: set[int] = set()
        self._want: list[tuple[int, list[int]]] = []
        self._send_handle: asyncio.Handle | None = None
        self._reads: set[asyncio.Task[None]] = set()
        self._missing: set[int] = set()  # ids whose row was not found (deleted meanwhile): not re-read
        # live changes: ids waiting for their hop, the task that applies them
        self._updates: list[int] = []
        self._updater: asyncio.Task[None] | None = None
        self._applied_at = float("-inf")  # loop time of the last live batch applied
        self.live_batches = 0  # how many live batches were applied (tests)
        # a read started before a change of the same message must not overwrite the newer row
        self._tick = 0
        self._changed_at: dict[int, int] = {}
        self._layout = 0  # bumped by every insert/remove/reset (row numbers of a read may be stale)

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
        return _ROW_FLAGS

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # a paint asks every cell for ~7 roles: the ones never answered return first (a repaint of
        # the live log is on the loop thread)
        if role not in _DATA_ROLES or not index.isValid() or not 0 <= index.row() < len(self._ids) \
                or not 0 <= index.column() < len(LOG_COLUMNS):
            return None
        if role == IdRole:
            return self._ids[index.row()] or None  # 0: not known yet (the id list is on its way)
        row = self.row_at(index.row())
        if row is None:
            if role == Qt.ItemDataRole.DisplayRole and self._ids[index.row()] not in self._missing:
                return LOADING_CELL if index.column() == 0 else ""
            if role == Qt.ItemDataRole.AccessibleTextRole:
                return "Loading…"
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
        if row.error:
            # the reason (or a waiting / routing note) is part of the row, not only a tooltip
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

    @property
    def busy(self) -> bool:
        """A query, a page read or live changes are still on their way."""
        return bool(self._loading or self._reads or self._want or self._send_handle is not None
                    or self._updates or (self._updater is not None and not self._updater.done())
                    or (self._task is not None and not self._task.done()))

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

        The unfiltered log in time order (how it opens) is shown at once at its full length (an index
        count) with its newest and its oldest ``HEAD_ROWS`` (index scans that stop there, read with the
        rows of the first and the last page in one hop: it opens and scrolls to either end without
        waiting); the rows between show a placeholder until the complete id list arrives and fills
        them in place (no reset: scroll position and selection stay)."""
        self._generation += 1
        generation = self._generation
        self._set_loading(True)
        task = asyncio.get_event_loop().create_task(self._load(generation), name="message-log-ids")
        self._task = task
        self._queries.add(task)
        task.add_done_callback(self._queries.discard)
        return task

    async def aclose(self) -> None:
        """Cancel the queries still running (the window is closing); their threads finish on their own."""
        self._generation += 1
        if self._send_handle is not None:
            self._send_handle.cancel()
            self._send_handle = None
        self._want.clear()
        tasks = [*self._queries, *self._reads, *([self._updater] if self._updater is not None else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_loaded(self) -> None:
        """Until the last query's answer is applied (tests and the bench run the loop with this)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def wait_idle(self) -> None:
        """Until the ids query, the page reads asked for so far and the live changes are applied."""
        while True:
            await self.wait_loaded()
            busy = [*self._reads, *([self._updater] if self._updater is not None and not self._updater.done()
                                    else [])]
            if busy:
                await asyncio.gather(*busy, return_exceptions=True)
            elif self._send_handle is not None or self._want:
                await asyncio.sleep(0)
            elif not (self._task is not None and not self._task.done()):
                return

    def load_now(self) -> None:
        """Query on this thread and apply at once (tests and scripts, never on the event loop)."""
        self._generation += 1
        self._apply(self._service.ids_now(self._filter, self._sort))

    async def _load(self, generation: int) -> None:
        if generation != self._generation:
            return  # superseded before it started (typing, clicking sorts): no query at all
        try:
            if self._service.head_is_cheap(self._filter, self._sort):
                tick = self._tick
                count, head, tail, rows = await self._service.ends(self._filter, self._sort, HEAD_ROWS,
                                                                   self._page)
                if generation != self._generation:
                    return
                self._store(rows, tick)
                if len(head) < HEAD_ROWS:  # that is all of them
                    self._apply(head)
                    return
                self._apply_ends(count, head, tail)
            ids = await self._service.ids(self._filter, self._sort)
            if generation == self._generation and not self._head_shown and len(ids):
                # a new list (a filter or sort change): its first page is read before it is shown, so
                # the rows appear with their content (no screenful of placeholders)
                tick = self._tick
                first = [i for i in ids[:self._page] if i not in self._cache]
                self._store(await self._service.rows(first), tick)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("message log query failed")
            if generation == self._generation:
                self._set_loading(False)
            return
        if generation == self._generation:
            self._apply(ids)

    def _apply_ends(self, count: int, head: array[int], tail: array[int]) -> None:
        """Show ``count`` rows: ``head`` first, ``tail`` last, unknown (0) between."""
        ids = array("q", head)
        count = max(count, len(head))
        tail = tail[max(0, len(head) + len(tail) - count):]  # a short log: the two ends overlap
        middle = count - len(ids) - len(tail)
        if middle:
            ids.frombytes(bytes(8 * middle))
        ids.extend(tail)
        self._apply(ids, final=False)
        self._partial = True
        self._ends = (len(head), len(tail))

    def _fill(self, ids: array[int]) -> bool:
        """The whole list arrived while only its ends are shown: fill it in place when it is the shown
        list (plus messages that arrived meanwhile, at the top or the end: inserted); else False."""
        old, (h, t) = self._ids, self._ends
        extra = len(ids) - len(old)
        if extra < 0:
            return False
        tail = old[len(old) - t:]
        if ids[extra:extra + h] == old[:h] and ids[len(ids) - t:] == tail:
            at = 0  # newer messages above (newest first)
        elif ids[:h] == old[:h] and ids[len(old) - t:len(old)] == tail:
            at = len(old)  # newer messages below (oldest first)
        else:
            return False
        if extra:
            self.beginInsertRows(QModelIndex(), at, at + extra - 1)
            self._ids = ids
            self._layout += 1
            self.endInsertRows()
        else:
            self._ids = ids
        self._partial = False
        if ids:  # the placeholders between the ends get their ids (only visible rows repaint)
            self.dataChanged.emit(self.index(0, 0), self.index(len(ids) - 1, len(LOG_COLUMNS) - 1))
        return True

    def _apply(self, ids: array[int], *, final: bool = True) -> None:
        head = len(self._ids)
        if self._partial and final and self._fill(ids):
            pass
        elif self._head_shown and final and not self._partial and len(ids) >= head and ids[:head] == self._ids:
            # the first rows are already on screen: append the rest, keep selection and scroll
            if len(ids) > head:
                self.beginInsertRows(QModelIndex(), head, len(ids) - 1)
                self._ids = ids
                self._layout += 1
                self.endInsertRows()
        else:
            # a new list (filter/sort): the cached rows stay (a row is the same whatever the view)
            self.beginResetModel()
            self._ids = ids
            self._partial = False
            self._missing.clear()
            self._layout += 1
            self.endResetModel()
        self._head_shown = not final
        if not final:
            return
        self._set_loading(False)
        pending, self._pending = self._pending, []
        if pending:
            self._updates.extend(pending)
            self._ensure_updater()
        self.loaded.emit(len(self._ids))

    def _set_loading(self, loading: bool) -> None:
        if loading != self._loading:
            self._loading = loading
            self.loading_changed.emit(loading)

    # -- rows: a page at a time, off the loop ---------------------------------------------------

    def row_at(self, row: int) -> LogRow | None:
        """The row when it has been read; else None, and its page read is scheduled (once)."""
        message_id = self._ids[row]
        cached = self._cache.get(message_id)
        if cached is not None:
            self._cache.move_to_end(message_id)
            return cached
        if message_id and message_id not in self._fetching and message_id not in self._missing:
            self._request(row)
        return None

    def _request(self, row: int) -> None:
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return  # painted after the loop is gone (a window outliving its app): nothing to read with
        if loop.is_closed():
            return
        start = row - row % self._page
        cache, fetching = self._cache, self._fetching
        wanted = [i for i in self._ids[start:start + self._page] if i and i not in cache and i not in fetching]
        message_id = self._ids[row]
        if message_id not in wanted:
            wanted.append(message_id)
        fetching.update(wanted)
        self._want.append((start, wanted))
        if self._send_handle is None:
            # every page asked for during this paint goes in one hop, on the next loop iteration
            self._send_handle = loop.call_soon(self._send_reads)

    def _send_reads(self) -> None:
        self._send_handle = None
        pages, self._want = self._want, []
        if not pages:
            return
        self.pages_read += len(pages)
        self.reads += 1
        task = asyncio.get_event_loop().create_task(self._read(pages, self._tick, self._layout),
                                                    name="message-log-page")
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read(self, pages: list[tuple[int, list[int]]], tick: int, layout: int) -> None:
        ids = [i for _start, page in pages for i in page]
        try:
            rows = await self._service.rows(ids)
        except asyncio.CancelledError:
            self._fetching.difference_update(ids)
            raise
        except Exception:
            log.exception("message log page read failed")
            self._fetching.difference_update(ids)
            return
        self._fetching.difference_update(ids)
        found = self._store(rows, tick)
        self._missing.update(i for i in ids if i not in found)
        if not self._ids:
            return
        last = len(self._ids) - 1
        if layout == self._layout:
            first = min(start for start, _ in pages)
            end = min(last, max(start + self._page - 1 for start, _ in pages))
            if first <= last:
                self.dataChanged.emit(self.index(first, 0), self.index(end, len(LOG_COLUMNS) - 1))
            return
        # rows were inserted or removed meanwhile: where the page is now is not known without a scan
        self.dataChanged.emit(self.index(0, 0), self.index(last, len(LOG_COLUMNS) - 1))

    def _store(self, rows: Sequence[LogRow], tick: int) -> set[int]:
        """Cache rows read at ``tick`` (a row changed since keeps its newer read); the LRU stays bounded."""
        found: set[int] = set()
        changed_at = self._changed_at
        for found_row in rows:
            found.add(found_row.id)
            if changed_at.get(found_row.id, -1) > tick:
                continue
            self._cache[found_row.id] = found_row
            self._cache.move_to_end(found_row.id)
        while len(self._cache) > self._cache_rows:
            self._cache.popitem(last=False)
        if changed_at and not self._reads and not self._updates and (
                self._updater is None or self._updater.done()):
            changed_at.clear()
        return found

    def cached_rows(self) -> int:
        return len(self._cache)

    def row_of(self, message_id: int) -> int | None:
        if self._sort.column is LogColumn.TIME and self._ids:
            # time order is id order: a binary search (a million ids), a scan only when unsure
            position = self._position_for(message_id)
            if position < len(self._ids) and self._ids[position] == message_id:
                return position
            ends = (self._ids[0], self._ids[-1])
            if message_id > max(ends) or message_id < min(ends):
                return None
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
        """Apply a change of this message: read (off the loop, with the others of the same burst)
        whether it matches the filter and its row, then insert/update/remove it in place."""
        self._tick += 1
        self._changed_at[message_id] = self._tick
        self._missing.discard(message_id)
        if self._loading:
            self._pending.append(message_id)
            return
        self._updates.append(message_id)
        self._ensure_updater()

    def _ensure_updater(self) -> None:
        if self._updater is None or self._updater.done():
            self._updater = asyncio.get_event_loop().create_task(self._apply_updates(), name="message-log-live")

    async def _apply_updates(self) -> None:
        loop = asyncio.get_event_loop()
        while self._updates:
            # one batch per tick: the changes of a burst gather meanwhile (one read, one repaint)
            await asyncio.sleep(max(0.0, self._applied_at + LIVE_TICK - loop.time()))
            if not self._updates:
                return
            if self._loading:  # a new query started: its answer, then these
                self._pending.extend(self._updates)
                self._updates.clear()
                return
            batch, self._updates = list(dict.fromkeys(self._updates)), []
            tick, generation, log_filter = self._tick, self._generation, self._filter
            try:
                found = await self._service.changes(batch, log_filter)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("message log live update failed")
                continue
            for message_id, row in found.items():
                if row is not None and self._changed_at.get(message_id, -1) <= tick:
                    self._cache[message_id] = row
                    self._cache.move_to_end(message_id)
            if generation != self._generation or self._loading:
                # the filter changed meanwhile: the new query's answer decides what is in view (it was
                # read after these changes were stored); the rows it shows are repainted
                if self._loading:
                    self._pending.extend(batch)
                else:
                    for message_id in batch:
                        position = self.row_of(message_id)
                        if position is not None:
                            self.dataChanged.emit(self.index(position, 0),
                                                  self.index(position, len(LOG_COLUMNS) - 1))
                continue
            self._applied_at = loop.time()
            self.live_batches += 1
            self._place_all(batch, found)
            while len(self._cache) > self._cache_rows:
                self._cache.popitem(last=False)
            if not self._reads and not self._updates:
                self._changed_at.clear()  # nothing read before these changes is still on its way
            self.changes_applied.emit(batch)

    def _place_all(self, batch: list[int], found: dict[int, LogRow | None]) -> None:
        """A batch of changes in as few model updates as it takes: removals one by one (rare), the new
        rows inserted a block per position (a burst of new messages at the top: one insert), the
        changed rows repainted with one dataChanged over their span."""
        changed: list[int] = []
        new: list[int] = []
        for message_id in batch:
            matches = found.get(message_id) is not None
            if self.row_of(message_id) is not None:
                if matches:
                    changed.append(message_id)
                else:
                    self._place(message_id, False)
            elif matches:
                new.append(message_id)
        if new:
            at: dict[int, list[int]] = {}
            for message_id in new:
                at.setdefault(self._position_for(message_id), []).append(message_id)
            descending = self._sort.descending or self._sort.column is not LogColumn.TIME
            for position in sorted(at, reverse=True):  # from the bottom: the positions above stay valid
                block = sorted(at[position], reverse=descending)
                self.beginInsertRows(QModelIndex(), position, position + len(block) - 1)
                self._ids[position:position] = array("q", block)
                self._layout += 1
                self.endInsertRows()
        rows = [r for r in (self.row_of(i) for i in changed) if r is not None]
        if rows:
            self.dataChanged.emit(self.index(min(rows), 0), self.index(max(rows), len(LOG_COLUMNS) - 1))

    def _place(self, message_id: int, matches: bool) -> None:
        row = self.row_of(message_id)
        if row is not None:
            if matches:
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(LOG_COLUMNS) - 1))
            else:
                self._cache.pop(message_id, None)
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._ids[row]
                self._layout += 1
                self.endRemoveRows()
            return
        if not matches:
            return
        position = self._position_for(message_id)
        self.beginInsertRows(QModelIndex(), position, position)
        self._ids.insert(position, message_id)
        self._layout += 1
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
    "LOADING_CELL",
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
