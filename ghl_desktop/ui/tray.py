"""The system tray icon: it tells the user about failures (a session logged out, a location needing
reconnect) with one tray message instead of a storm of popups, and offers Show window / Quit.

Where there is no tray (no tray host under X, offscreen), :meth:`Tray.notify` is a no-op that
returns False; nothing else changes."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon


class Tray(QObject):
    """Signals: show_requested (the user wants the window), quit_requested (Quit in the tray menu)."""

    show_requested = Signal()
    quit_requested = Signal()

    def __init__(self, icon: QIcon, tooltip: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.icon: QSystemTrayIcon | None = None
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        self._menu = QMenu()
        show = QAction("Show window", self._menu)
        show.triggered.connect(self.show_requested.emit)
        quit_ = QAction("Quit", self._menu)
        quit_.triggered.connect(self.quit_requested.emit)
        self._menu.addAction(show)
        self._menu.addSeparator()
        self._menu.addAction(quit_)
        self.icon = QSystemTrayIcon(icon, self)
        self.icon.setToolTip(tooltip)
        self.icon.setContextMenu(self._menu)
        self.icon.activated.connect(self._activated)
        self.icon.show()

    @property
    def available(self) -> bool:
        return self.icon is not None

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_requested.emit()

    def notify(self, title: str, text: str, *, warning: bool = False) -> bool:
        """Show a tray message; False (and nothing happens) when the desktop has no tray."""
        if self.icon is None or not self.icon.supportsMessages():
            return False
        kind = QSystemTrayIcon.MessageIcon.Warning if warning else QSystemTrayIcon.MessageIcon.Information
        self.icon.showMessage(title, text, kind, 8000)
        return True

    def hide(self) -> None:
        if self.icon is not None:
            self.icon.hide()


__all__ = ["Tray"]
