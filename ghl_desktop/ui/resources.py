"""Finding the app's icon and other files in ``resources/``: next to the source tree in a checkout,
inside the bundle in a PyInstaller build (``sys._MEIPASS/resources``)."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPen, QPixmap

from ghl_desktop.services.health import HealthLevel


def resources_dir() -> Path:
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def app_icon() -> QIcon:
    """The app icon (SVG when Qt's SVG plugin is there, the 256 px PNG otherwise)."""
    icon = QIcon()
    folder = resources_dir()
    for name in ("ghl-desktop.svg", "ghl-desktop.png"):
        path = folder / name
        if path.exists():
            icon.addFile(str(path))
    return icon


_GLYPHS = {HealthLevel.OK: "✓", HealthLevel.DEGRADED: "!", HealthLevel.NEEDS_YOU: "✕"}
_icons: dict[tuple[HealthLevel, bool], QIcon] = {}


def _draw_state(level: HealthLevel, size: int) -> QPixmap:
    from ghl_desktop.ui import theme

    c = theme.colors()
    fill = {HealthLevel.OK: c.good, HealthLevel.DEGRADED: c.warn, HealthLevel.NEEDS_YOU: c.bad}[level]
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(Qt.PenStyle.NoPen))
    painter.setBrush(fill)
    margin = size * 0.08
    painter.drawEllipse(QRectF(margin, margin, size - 2 * margin, size - 2 * margin))
    glyph_colour = QColor(Qt.GlobalColor.black) if theme.luminance(fill) > 0.4 else QColor(Qt.GlobalColor.white)
    painter.setPen(glyph_colour)
    font = QFont()
    font.setBold(True)
    font.setPixelSize(max(6, int(size * 0.62)))
    painter.setFont(font)
    painter.drawText(QRectF(QPointF(0, 0), QRectF(0, 0, size, size).size()), Qt.AlignmentFlag.AlignCenter,
                     _GLYPHS[level])
    painter.end()
    return pixmap


def state_icon(level: HealthLevel) -> QIcon:
    """A small round icon per health level (✓ ok, ! attention, ✕ needs you) in the palette's colours;
    a shape as well as a colour, so the state reads without colour vision too."""
    from ghl_desktop.ui import theme

    key = (level, theme.is_dark())
    icon = _icons.get(key)
    if icon is None:
        icon = QIcon()
        for size in (16, 24, 32):
            icon.addPixmap(_draw_state(level, size))
        _icons[key] = icon
    return icon


__all__ = ["app_icon", "resources_dir", "state_icon"]
