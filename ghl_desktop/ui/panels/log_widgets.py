"""The pieces the message log and the dead letters panels share: the status column's tick icons
(:class:`StatusDelegate`, :func:`draw_status_icon`), their table view, the row-key filter that opens a
row's menu, and the tasks a panel keeps for its reads and actions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from PySide6.QtCore import (
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QPointF,
    QRect,
    QRectF,
    QSize,
    Qt,
)
from PySide6.QtGui import QColor, QGuiApplication, QKeyEvent, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
)

from ghl_desktop.core.models import MessageStatus
from ghl_desktop.ui.message_log_models import (
    StatusRole,
)

_COLOR_CACHE: dict[int, tuple[QColor, QColor, QColor, QColor]] = {}


def status_colors() -> tuple[QColor, QColor, QColor, QColor]:
    """(good, bad, accent, muted) from the palette (``ui.theme`` when present); computed once per palette."""
    key = QGuiApplication.palette().cacheKey()
    cached = _COLOR_CACHE.get(key)
    if cached is None:
        _COLOR_CACHE.clear()
        cached = _COLOR_CACHE[key] = _palette_colors()
    return cached


def _palette_colors() -> tuple[QColor, QColor, QColor, QColor]:
    try:
        from ghl_desktop.ui.theme import colors
    except ImportError:  # pragma: no cover - the theme module ships with the window
        pal = QGuiApplication.palette()
        text = pal.color(QPalette.ColorRole.Text)
        return text, QColor.fromHsl(0, 200, 110), pal.color(QPalette.ColorRole.Link), text
    c = colors()
    return c.good, c.bad, QGuiApplication.palette().color(QPalette.ColorRole.Link), c.muted


class StatusDelegate(QStyledItemDelegate):
    """The status column: a tick icon (queued clock, sent ✓, delivered ✓✓, read ✓✓ in the accent
    colour, failed ⚠ in red, received ↓) and the label, with the failure reason after it."""

    ICON = 16

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
              ) -> None:
        value = index.data(StatusRole)  # a StrEnum comes back through QVariant as a plain str
        status = MessageStatus(value) if isinstance(value, str) and value in MessageStatus._value2member_map_ else None
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        text = opt.text
        opt.text = ""
        style = opt.widget.style() if opt.widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        if status is None:
            return
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        pal = opt.palette
        fg = pal.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text)
        _, bad, accent, muted = status_colors()
        icon = QRect(opt.rect.left() + 4, opt.rect.center().y() - self.ICON // 2, self.ICON, self.ICON)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        color = fg if selected else {MessageStatus.FAILED: bad, MessageStatus.READ: accent,
                                     MessageStatus.PLAYED: accent, MessageStatus.PENDING: muted,
                                     MessageStatus.RECEIVED: muted}.get(status, fg)
        draw_status_icon(painter, QRectF(icon), status, color)
        painter.restore()
        text_rect = opt.rect.adjusted(self.ICON + 10, 0, -4, 0)
        painter.save()
        painter.setPen(fg if selected or status is not MessageStatus.FAILED else bad)
        elided = opt.fontMetrics.elidedText(text, Qt.TextElideMode.ElideRight, text_rect.width())
        painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), elided)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        size = super().sizeHint(option, index)
        return QSize(size.width() + self.ICON + 10, max(size.height(), self.ICON + 4))


def draw_status_icon(painter: QPainter, rect: QRectF, status: MessageStatus, color: QColor) -> None:
    """Small vector icons in ``color`` (they follow the palette, light or dark)."""
    pen = QPen(color, 1.7)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    x, y, w, h = rect.x(), rect.y(), rect.width(), rect.height()

    def tick(dx: float) -> None:
        path = QPainterPath(QPointF(x + dx + w * 0.10, y + h * 0.55))
        path.lineTo(QPointF(x + dx + w * 0.32, y + h * 0.78))
        path.lineTo(QPointF(x + dx + w * 0.70, y + h * 0.25))
        painter.drawPath(path)

    if status is MessageStatus.SENT:
        tick(w * 0.1)
    elif status in (MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.PLAYED):
        tick(-w * 0.02)
        tick(w * 0.26)
    elif status is MessageStatus.PENDING:  # a clock: queued, not yet handed to WhatsApp
        painter.drawEllipse(rect.adjusted(2, 2, -2, -2))
        painter.drawLine(QPointF(x + w / 2, y + h / 2), QPointF(x + w / 2, y + h * 0.28))
        painter.drawLine(QPointF(x + w / 2, y + h / 2), QPointF(x + w * 0.68, y + h / 2))
    elif status is MessageStatus.RECEIVED:  # an arrow down: in, waiting for HighLevel
        painter.drawLine(QPointF(x + w / 2, y + h * 0.18), QPointF(x + w / 2, y + h * 0.80))
        painter.drawLine(QPointF(x + w * 0.28, y + h * 0.58), QPointF(x + w / 2, y + h * 0.80))
        painter.drawLine(QPointF(x + w * 0.72, y + h * 0.58), QPointF(x + w / 2, y + h * 0.80))
    elif status is MessageStatus.FAILED:  # a warning triangle
        path = QPainterPath(QPointF(x + w / 2, y + h * 0.10))
        path.lineTo(QPointF(x + w * 0.95, y + h * 0.88))
        path.lineTo(QPointF(x + w * 0.05, y + h * 0.88))
        path.closeSubpath()
        painter.drawPath(path)
        painter.drawLine(QPointF(x + w / 2, y + h * 0.38), QPointF(x + w / 2, y + h * 0.60))
        painter.drawPoint(QPointF(x + w / 2, y + h * 0.74))


def action_button(text: str, accessible_name: str, on_click: Callable[[], object], *, name: str | None = None,
                  enabled: bool = True) -> QPushButton:
    """A panel's button: its text, what a screen reader says, what a click does (and its object name)."""
    button = QPushButton(text)
    if name:
        button.setObjectName(name)
    button.setAccessibleName(accessible_name)
    button.setEnabled(enabled)
    button.clicked.connect(on_click)
    return button


def menu_index(view: QTableView, pos: QPoint) -> QModelIndex | None:
    """The row a context menu opened at ``pos`` is for (else the current row, for Enter or the Menu
    key), made current; None when there is none."""
    index = view.indexAt(pos)
    if not index.isValid():
        index = view.currentIndex()
    if not index.isValid():
        return None
    view.setCurrentIndex(index)
    return index


def log_table(name: str) -> QTableView:
    view = QTableView()
    view.setObjectName(name)
    view.setAccessibleName(name)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setTabKeyNavigation(False)  # Tab leaves the table (arrows move inside it)
    view.setWordWrap(False)
    view.setTextElideMode(Qt.TextElideMode.ElideRight)
    view.setAlternatingRowColors(True)
    view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    vertical = view.verticalHeader()
    vertical.setVisible(False)
    vertical.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    vertical.setDefaultSectionSize(max(24, view.fontMetrics().height() + 8))
    header = view.horizontalHeader()
    header.setHighlightSections(False)
    header.setStretchLastSection(True)
    return view


class RowKeys(QObject):
    """Enter / Return / the Menu key on a table row open its actions menu."""

    def __init__(self, view: QTableView, open_menu: Any) -> None:
        super().__init__(view)
        self._open = open_menu
        view.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent) and event.key() in (
                Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Menu):
            view = watched if isinstance(watched, QTableView) else None
            if view is not None and view.currentIndex().isValid():
                rect = view.visualRect(view.currentIndex())
                self._open(rect.center())
                return True
        return False


def loop_usable() -> bool:
    """Whether this thread has an open event loop to run a read on (a Qt timer may outlive it)."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        return False
    return not loop.is_closed()


class PanelTasks:
    """Asyncio tasks a panel started (kept referenced; failures logged). :meth:`soon` starts a read
    on the next loop iteration: one asked for while the loop is not running (a widget built before
    it, a test between two runs) and never started leaves no pending task or coroutine behind."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._soon: set[asyncio.Handle] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_event_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def soon(self, make: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
        handle: asyncio.Handle | None = None

        def start() -> None:
            self._soon.discard(handle)  # type: ignore[arg-type]
            self.spawn(make(), name)

        handle = asyncio.get_event_loop().call_soon(start)
        self._soon.add(handle)

    @property
    def idle(self) -> bool:
        return not self._tasks and not self._soon

    async def cancel_all(self) -> None:
        for handle in self._soon:
            handle.cancel()
        self._soon.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self) -> None:
        while self._tasks or self._soon:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(0)


__all__ = ["PanelTasks", "RowKeys", "StatusDelegate", "action_button", "draw_status_icon", "log_table", "loop_usable",
           "menu_index",
           "status_colors"]
