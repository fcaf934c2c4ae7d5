"""Small reusable widgets: tables whose rows offer their actions by keyboard and mouse (a context
menu; no widget per row), a table that explains itself when empty, status labels that colour
themselves from the palette, and the QR code area."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import qrcode
import qrcode.constants
from PySide6.QtCore import QAbstractItemModel, QEvent, QModelIndex, QPersistentModelIndex, QPoint, QSize, Qt
from PySide6.QtGui import QColor, QContextMenuEvent, QKeyEvent, QMouseEvent, QPainter, QPalette, QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QLabel,
    QMenu,
    QSizePolicy,
    QStackedWidget,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QWidget,
)

from ghl_desktop.ui import theme

#: what a row offers: (label, callback) in menu order; the first is the row's main action
RowAction = tuple[str, Callable[[], object]]


class StatusLabel(QLabel):
    """A sentence under a panel: normal or error (red from the palette — no stylesheet involved, so
    no selector can outrank it)."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.setOpenExternalLinks(False)
        self.setAccessibleName(name)
        self.setVisible(False)
        self._error = False
        self.setProperty("error", "false")

    @property
    def error(self) -> bool:
        return self._error

    def say(self, text: str | None, *, error: bool = False) -> None:
        self._error = error
        self.setProperty("error", "true" if error else "false")
        self._recolor()
        self.setText(text or "")
        self.setAccessibleDescription(text or "")
        self.setVisible(bool(text))

    def _recolor(self) -> None:
        pal = QPalette(self.palette())
        app_pal = QApplication.palette()
        color = theme.colors(app_pal).bad if self._error else app_pal.color(QPalette.ColorRole.WindowText)
        pal.setColor(QPalette.ColorRole.WindowText, color)
        pal.setColor(QPalette.ColorRole.Text, color)
        self.setPalette(pal)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.ApplicationPaletteChange:
            self._recolor()


class _ActionsDelegate(QStyledItemDelegate):
    """Paints the actions cell as a small menu button (the menu opens on click, Enter or the Menu key)."""

    def __init__(self, view: ActionTable) -> None:
        super().__init__(view)
        self._view = view

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        super().paint(painter, option, index)
        names = self._view.action_names(index.row())
        if not names:
            return
        rect = option.rect.adjusted(3, 3, -3, -3)  # type: ignore[attr-defined]
        palette = option.palette  # type: ignore[attr-defined]
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(theme.colors(palette).border)
        painter.setBrush(palette.color(QPalette.ColorRole.Button))
        painter.drawRoundedRect(rect, 4, 4)
        painter.setPen(palette.color(QPalette.ColorRole.ButtonText))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, names[0] + (" ▾" if len(names) > 1 else ""))
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        names = self._view.action_names(index.row())
        text = (names[0] + " ▾") if names else ""
        return QSize(option.fontMetrics.horizontalAdvance(text) + 28, 28)  # type: ignore[attr-defined]


class ActionTable(QTableView):
    """A read-only, row-selecting table; each row's actions live in a context menu (right click, the
    Menu key, Enter, or a click on the row's action cell). Tab moves to the next control."""

    def __init__(self, model: QAbstractItemModel, actions_for: Callable[[Any], list[RowAction]] | None = None, *,
                 name: str, actions_column: int = -1, record_of: Callable[[int], Any] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setModel(model)
        self._actions_for = actions_for
        self._record_of = record_of or (lambda row: model.index(row, 0).data(Qt.ItemDataRole.UserRole + 1))
        self.actions_column = actions_column
        self.last_menu: QMenu | None = None
        self.setAccessibleName(name)
        self.setObjectName(name.replace(" ", "") + "Table")
        self.setTabKeyNavigation(False)  # Tab leaves the table; arrows move inside it
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.DefaultContextMenu)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(30)
        header = self.horizontalHeader()
        header.setHighlightSections(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        if actions_column >= 0:
            self.setItemDelegateForColumn(actions_column, _ActionsDelegate(self))

    # -- actions --

    def actions(self, row: int) -> list[RowAction]:  # type: ignore[override]
        if self._actions_for is None or not (0 <= row < self.model().rowCount()):
            return []
        record = self._record_of(row)
        return self._actions_for(record) if record is not None else []

    def action_names(self, row: int) -> list[str]:
        return [name for name, _ in self.actions(row)]

    def trigger(self, row: int, name: str) -> bool:
        """Run the row's action ``name`` (what choosing it in the menu does)."""
        for label, callback in self.actions(row):
            if label == name:
                callback()
                return True
        return False

    def menu_for(self, row: int) -> QMenu | None:
        actions = self.actions(row)
        if not actions:
            return None
        menu = QMenu(self)
        menu.setAccessibleName("Row actions")
        for label, callback in actions:
            action = menu.addAction(label)
            action.triggered.connect(lambda _checked=False, cb=callback: cb())
        return menu

    def open_menu(self, row: int, at: QPoint | None = None) -> QMenu | None:
        menu = self.menu_for(row)
        if menu is None:
            return None
        self.selectRow(row)
        if at is None:
            rect = self.visualRect(self.model().index(row, max(self.actions_column, 0)))
            at = self.viewport().mapToGlobal(rect.bottomLeft())
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        if menu.actions():
            menu.setActiveAction(menu.actions()[0])
        self.last_menu = menu
        menu.popup(at)
        return menu

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        if event.reason() == QContextMenuEvent.Reason.Mouse:
            row = self.indexAt(event.pos()).row()
            at: QPoint | None = event.globalPos()
        else:
            row = self.currentIndex().row()
            at = None
        if row >= 0 and self.open_menu(row, at) is not None:
            event.accept()
        else:
            event.ignore()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentIndex().isValid():
            if self.open_menu(self.currentIndex().row()) is not None:
                return
        super().keyPressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        index = self.indexAt(event.position().toPoint())
        if (event.button() == Qt.MouseButton.LeftButton and index.isValid()
                and index.column() == self.actions_column and self.action_names(index.row())):
            self.open_menu(index.row(), self.viewport().mapToGlobal(event.position().toPoint()))


def fit_columns(view: QTableView, *, stretch: int, fit: tuple[int, ...] = ()) -> None:
    header = view.horizontalHeader()
    header.setStretchLastSection(False)
    header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    for column in fit:
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)


def make_table(model: QAbstractItemModel, parent: QWidget | None = None, *, stretch_column: int = -1,
               fit_columns: tuple[int, ...] = (), name: str = "Table") -> QTableView:
    """A plain read-only table (no row actions) with the same keyboard rules."""
    view = ActionTable(model, name=name, parent=parent)
    header = view.horizontalHeader()
    header.setStretchLastSection(stretch_column in (-1, model.columnCount() - 1))
    if stretch_column >= 0:
        header.setSectionResizeMode(stretch_column, QHeaderView.ResizeMode.Stretch)
    for column in fit_columns:
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
    return view


class EmptyStateView(QStackedWidget):
    """Shows ``view`` when its model has rows, otherwise a centred hint saying what to do next."""

    def __init__(self, view: QTableView, hint: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = view
        self.hint = QLabel(hint, self)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.hint.setObjectName("emptyHint")
        self.hint.setContentsMargins(16, 16, 16, 16)
        self.hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.addWidget(self.view)
        self.addWidget(self.hint)
        model = view.model()
        for signal in (model.modelReset, model.rowsInserted, model.rowsRemoved, model.layoutChanged):
            signal.connect(self._update)
        self._update()

    @property
    def showing_hint(self) -> bool:
        return self.currentWidget() is self.hint

    def _update(self, *args: object) -> None:
        self.setCurrentWidget(self.view if self.view.model().rowCount() > 0 else self.hint)


def qr_png(code: str, *, box_size: int = 4, border: int = 2) -> bytes:
    """The QR code for ``code`` as PNG bytes (error correction M, like WhatsApp's own)."""
    qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=box_size, border=border)
    qr.add_data(code)
    qr.make(fit=True)
    buffer = io.BytesIO()
    qr.make_image(fill_color="black", back_color="white").save(buffer, format="PNG")
    return buffer.getvalue()


class QrView(QLabel):
    """Where a WhatsApp pairing QR code appears; it rotates, so each call replaces the last. The code
    is always black on white (phones read that in any scheme); a stale code is shown faded."""

    IDLE_TEXT = "When you link a WhatsApp number, its QR code appears here."

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("qrView")
        self.setAccessibleName("QR code")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setMargin(6)
        self.setMinimumSize(QSize(180, 180))
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.code: str | None = None
        self.stale = False
        self._source = QPixmap()
        self.clear_qr()

    def show_qr(self, code: str) -> None:
        if not code:
            raise ValueError("an empty QR payload cannot be shown")
        pixmap = QPixmap()
        if not pixmap.loadFromData(qr_png(code), "PNG"):
            raise RuntimeError("the QR image could not be decoded by Qt")
        self.code = code
        self.stale = False
        self._source = pixmap
        self.setToolTip("Scan with WhatsApp on the phone: Settings → Linked devices → Link a device")
        self.setAccessibleDescription("A QR code to scan with WhatsApp on the phone")
        self._fit()

    def mark_stale(self) -> None:
        """The code expired: keep it faded so nobody scans it."""
        if self.code is None:
            return
        self.stale = True
        faded = QPixmap(self._source.size())
        faded.fill(Qt.GlobalColor.transparent)
        painter = QPainter(faded)
        painter.setOpacity(0.15)
        painter.drawPixmap(0, 0, self._source)
        painter.end()
        self._source = faded
        self._fit()

    def clear_qr(self) -> None:
        self.show_message(self.IDLE_TEXT)

    def show_message(self, text: str, *, success: bool = False) -> None:
        """No code: a sentence in its place (linking finished, expired, a pairing code shown);
        ``success`` shows it larger, in the palette's "ok" colour (a number was just linked)."""
        self.code = None
        self.stale = False
        self._source = QPixmap()
        self.setPixmap(QPixmap())
        self.setToolTip("")
        font = self.font()
        font.setPointSizeF(QApplication.font().pointSizeF() * (1.35 if success else 1.0))
        font.setBold(success)
        self.setFont(font)
        if success:
            pal = QPalette(self.palette())
            pal.setColor(QPalette.ColorRole.WindowText, theme.colors().good)
            self.setPalette(pal)
            self.setForegroundRole(QPalette.ColorRole.WindowText)
        else:
            self.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.setText(text)
        self.setAccessibleDescription(text)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if not self._source.isNull():
            self._fit()

    def _fit(self) -> None:
        """Scale the code to the label, whole modules only (no blur), never cropped."""
        side = max(1, min(self.width(), self.height()) - 12)
        factor = max(1, side // max(1, self._source.width())) if side >= self._source.width() else 0
        if factor:
            size = self._source.width() * factor
            scaled = self._source.scaled(
                size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation
            )
        else:
            scaled = self._source.scaled(
                side, side, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
        self.setPixmap(scaled)





#: characters left as they are in a link's href (a URL's own syntax); everything else is percent-encoded
_HREF_SAFE = ":/?#[]@!$&()*+,;=%~-._"


def rich_link(url: str, text: str, color: QColor | None = None) -> str:
    """``<a href=…>text</a>`` for a QLabel: the text HTML-escaped, the href percent-encoded and never
    HTML-escaped (Qt hands an href over verbatim: ``&amp;`` would reach the browser as such)."""
    import html
    from urllib.parse import quote

    style = f' style="color:{color.name()}"' if color is not None else ""
    return f'<a href="{quote(url, safe=_HREF_SAFE)}"{style}>{html.escape(text)}</a>'


def link_targets(rich_text: str) -> list[str]:
    """The hrefs a QLabel showing ``rich_text`` emits on a click (for tests and accessibility)."""
    from PySide6.QtGui import QTextDocument

    document = QTextDocument()
    document.setHtml(rich_text)
    found: list[str] = []
    block = document.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            href = it.fragment().charFormat().anchorHref()
            if href and href not in found:
                found.append(href)
            it += 1
        block = block.next()
    return found


__all__ = ["ActionTable", "EmptyStateView", "QrView", "RowAction", "StatusLabel", "link_targets", "make_table",
           "qr_png", "rich_link"]
