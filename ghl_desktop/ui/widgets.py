"""Small reusable widgets: a table that explains itself when empty, and the QR code area."""

from __future__ import annotations

import io

import qrcode
import qrcode.constants
from PySide6.QtCore import QAbstractItemModel, QSize, Qt
from PySide6.QtGui import QPixmap, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QStackedWidget,
    QTableView,
    QWidget,
)


def make_table(
    model: QAbstractItemModel,
    parent: QWidget | None = None,
    *,
    stretch_column: int = -1,
    fit_columns: tuple[int, ...] = (),
) -> QTableView:
    """A read-only, row-selecting table with tidy headers.

    ``stretch_column`` takes the spare width; ``fit_columns`` size to their contents (use only on
    small tables: Qt measures every row)."""
    view = QTableView(parent)
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setAlternatingRowColors(True)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(24)
    header = view.horizontalHeader()
    header.setHighlightSections(False)
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
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
        self.hint.setStyleSheet("#emptyHint { color: #6b7280; padding: 16px; }")
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
    """Where a WhatsApp pairing QR code appears; it rotates, so each call replaces the last."""

    IDLE_TEXT = (
        "When you link a WhatsApp number, its QR code appears here. Scan it on the phone in WhatsApp → Linked devices."
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("qrView")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setMargin(6)
        self.setMinimumSize(QSize(200, 200))
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.setStyleSheet(
            "#qrView { border: 1px dashed #b0b7c3; border-radius: 6px; color: #6b7280; background: #fafbfc; }"
        )
        self.code: str | None = None
        self.pair_code: str | None = None
        self._source = QPixmap()
        self.clear_qr()

    def show_qr(self, code: str) -> None:
        if not code:
            raise ValueError("an empty QR payload cannot be shown")
        pixmap = QPixmap()
        if not pixmap.loadFromData(qr_png(code), "PNG"):
            raise RuntimeError("the QR image could not be decoded by Qt")
        self.code = code
        self._source = pixmap
        self.setToolTip("Scan with WhatsApp on the phone: Settings → Linked devices → Link a device")
        self._fit()

    def clear_qr(self) -> None:
        self.show_message(self.IDLE_TEXT)

    def show_message(self, text: str) -> None:
        """No code: a sentence in its place (linking finished, expired, or a pairing code)."""
        self.code = None
        self.pair_code = None
        self._source = QPixmap()
        self.setPixmap(QPixmap())
        self.setToolTip("")
        self.setText(text)

    def show_pair_code(self, code: str, phone: str | None = None) -> None:
        """The 8-character code to type on the phone instead of scanning."""
        where = f" on the phone {phone}" if phone else " on the phone"
        self.show_message(
            f"<div style='font-size:11pt'>Pairing code</div>"
            f"<div style='font-size:26pt; font-weight:700; letter-spacing:3px; color:#111'>{code}</div>"
            f"<div>Enter it{where}: WhatsApp → Linked devices → Link a device → Link with phone number instead.</div>"
        )
        self.pair_code = code

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self.code is not None:
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


__all__ = ["EmptyStateView", "QrView", "make_table", "qr_png"]
