"""The system tray icon: the worst health at a glance, counts in the tooltip, and a menu listing what
needs attention.

- Icon: ``resources/tray/tray-{ok,attention,down}.svg`` (PNG fallback) — all bridging / something is
  degraded (a number reconnecting, messages failed, paused) / something needs you (logged out, banned,
  a location needing reconnect). Distinct in shape and colour, readable at 16 px.
- Tooltip: ``ghl-desktop — 5 numbers · 1 down · 2 messages failed`` (:meth:`HealthSnapshot.summary`).
- Menu: the numbers/locations that need attention (clicking one → ``reveal_requested(session_id,
  location_id)``), Pause/Resume bridging, Open window, Start at login (a check box), Quit.

The decisions (which icon, which text, which entries) are plain functions over a
:class:`HealthSnapshot` so they are tested without a tray host. Where there is no tray (no tray host
under X, offscreen), the menu still exists (tests drive it) but nothing is shown, and
:meth:`Tray.notify` returns False.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from ghl_desktop.services.health import HealthLevel, HealthSnapshot, LocationHealth, NumberHealth
from ghl_desktop.ui.resources import resources_dir

APP_NAME = "ghl-desktop"
#: at most this many "needs attention" entries in the menu; the rest is one "… and N more" entry
MENU_ENTRIES = 8


class TrayState(StrEnum):
    OK = "ok"
    ATTENTION = "attention"
    DOWN = "down"


def tray_state(snapshot: HealthSnapshot) -> TrayState:
    """Worst wins: needs-you → down, degraded (or paused, or failed messages) → attention."""
    worst = snapshot.worst
    if worst is HealthLevel.NEEDS_YOU:
        return TrayState.DOWN
    if worst is HealthLevel.DEGRADED:
        return TrayState.ATTENTION
    return TrayState.OK


def tray_tooltip(snapshot: HealthSnapshot) -> str:
    return f"{APP_NAME} — {snapshot.summary()}"


@dataclass(frozen=True, slots=True)
class TrayEntry:
    """One "needs attention" line of the menu."""

    text: str
    level: HealthLevel
    session_id: str | None = None
    location_id: str | None = None


def _short(reason: str, limit: int = 70) -> str:
    first = reason.split(". ")[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def attention_entries(snapshot: HealthSnapshot) -> list[TrayEntry]:
    """What the menu lists, worst first: each number or location that is not ok, with its reason."""
    entries: list[TrayEntry] = []
    names = {loc.location_id: loc.name for loc in snapshot.locations}
    for item in snapshot.attention:
        if isinstance(item, NumberHealth):
            where = names.get(item.location_id)
            label = f"{item.label} ({where})" if where else item.label
            entries.append(TrayEntry(f"{label}: {_short(item.health.reason)}", item.health.level,
                                     item.session_id, item.location_id))
        elif isinstance(item, LocationHealth):
            entries.append(TrayEntry(f"{item.name}: {_short(item.health.reason)}", item.health.level,
                                     None, item.location_id))
    if snapshot.failed_messages:
        n = snapshot.failed_messages
        entries.append(TrayEntry(f"{n} message{'s' if n != 1 else ''} failed: see Dead letters",
                                 HealthLevel.DEGRADED))
    return entries


def tray_icon_path(state: TrayState) -> Path:
    folder = resources_dir() / "tray"
    svg = folder / f"tray-{state.value}.svg"
    return svg if svg.exists() else folder / f"tray-{state.value}.png"


_ICONS: dict[TrayState, QIcon] = {}


def tray_icon(state: TrayState) -> QIcon:
    icon = _ICONS.get(state)
    if icon is None:
        icon = QIcon()
        folder = resources_dir() / "tray"
        for name in (f"tray-{state.value}.svg", f"tray-{state.value}.png"):
            if (folder / name).exists():
                icon.addFile(str(folder / name))
        _ICONS[state] = icon
    return icon


class Tray(QObject):
    """Signals: show_requested (Open window / a click on the icon), quit_requested (Quit),
    reveal_requested(session_id, location_id) (an attention entry), pause_requested / resume_requested."""

    show_requested = Signal()
    quit_requested = Signal()
    reveal_requested = Signal(object, object)
    pause_requested = Signal()
    resume_requested = Signal()
    start_at_login_toggled = Signal(bool)

    def __init__(self, icon: QIcon | None = None, tooltip: str = APP_NAME, parent: QObject | None = None,
                 *, show_icon: bool | None = None) -> None:
        super().__init__(parent)
        self.state = TrayState.OK
        self.tooltip = tooltip
        self.entries: list[TrayEntry] = []
        self.paused = False
        self.menu = QMenu()
        self.menu.setObjectName("trayMenu")
        self.menu.setAccessibleName("ghl-desktop tray menu")
        self._header = QAction("All numbers are bridging", self)
        self._header.setEnabled(False)
        self._entry_actions: list[QAction] = []
        self._pause = QAction("Pause bridging", self)
        self._pause.triggered.connect(self._toggle_pause)
        self._open = QAction("Open window", self)
        self._open.triggered.connect(self.show_requested.emit)
        self._autostart = QAction("Start at login", self)
        self._autostart.setCheckable(True)
        self._autostart.toggled.connect(self.start_at_login_toggled.emit)
        self._quit = QAction("Quit", self)
        self._quit.triggered.connect(self.quit_requested.emit)
        #: the fixed actions are the tray's (QMenu.clear() deletes the actions the menu owns)
        self._rebuild_menu()
        self.icon: QSystemTrayIcon | None = None
        available = QSystemTrayIcon.isSystemTrayAvailable() if show_icon is None else show_icon
        if not available:
            return
        self.icon = QSystemTrayIcon(tray_icon(self.state) if icon is None else icon, self)
        self.icon.setToolTip(tooltip)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self.icon.show()

    @property
    def available(self) -> bool:
        return self.icon is not None

    # --- health --------------------------------------------------------------------------------

    def apply_health(self, snapshot: HealthSnapshot) -> None:
        """Icon, tooltip and menu follow the snapshot (connect to ServiceBridge.health_changed)."""
        self.state = tray_state(snapshot)
        self.tooltip = tray_tooltip(snapshot)
        self.entries = attention_entries(snapshot)
        self.paused = snapshot.paused
        self._rebuild_menu()
        if self.icon is not None:
            self.icon.setIcon(tray_icon(self.state))
            self.icon.setToolTip(self.tooltip)

    def _rebuild_menu(self) -> None:
        self.menu.clear()  # deletes the entry actions (owned by the menu); the fixed ones belong to self
        self._entry_actions = []
        if self.entries:
            n = len(self.entries)
            self._header.setText(f"{n} thing{'s' if n != 1 else ''} need{'' if n != 1 else 's'} attention")
        else:
            self._header.setText("Paused: no messages are bridged" if self.paused else "All numbers are bridging")
        self.menu.addAction(self._header)
        for entry in self.entries[:MENU_ENTRIES]:
            action = QAction(entry.text, self.menu)
            action.setIcon(_level_icon(entry.level))
            action.triggered.connect(
                lambda _checked=False, e=entry: self.reveal_requested.emit(e.session_id, e.location_id))
            self._entry_actions.append(action)
            self.menu.addAction(action)
        if len(self.entries) > MENU_ENTRIES:
            more = QAction(f"… and {len(self.entries) - MENU_ENTRIES} more", self.menu)
            more.triggered.connect(self.show_requested.emit)
            self._entry_actions.append(more)
            self.menu.addAction(more)
        self.menu.addSeparator()
        self._pause.setText("Resume bridging" if self.paused else "Pause bridging")
        self.menu.addAction(self._pause)
        self.menu.addAction(self._open)
        self.menu.addAction(self._autostart)
        self.menu.addSeparator()
        self.menu.addAction(self._quit)

    def set_start_at_login(self, enabled: bool) -> None:
        """Show the setting's value (without emitting ``start_at_login_toggled``)."""
        self._autostart.blockSignals(True)
        self._autostart.setChecked(enabled)
        self._autostart.blockSignals(False)

    @property
    def start_at_login(self) -> bool:
        return self._autostart.isChecked()

    def _toggle_pause(self) -> None:
        (self.resume_requested if self.paused else self.pause_requested).emit()

    def action_texts(self) -> list[str]:
        """The menu as text (tests, screenshots); separators are ``---``."""
        return ["---" if a.isSeparator() else a.text() for a in self.menu.actions()]

    def trigger(self, text_start: str) -> None:
        """Click the first menu entry whose text starts with ``text_start`` (tests)."""
        for action in self.menu.actions():
            if not action.isSeparator() and action.text().startswith(text_start):
                action.trigger()
                return
        raise LookupError(f"no tray menu entry starts with {text_start!r}: {self.action_texts()}")

    # --- icon clicks, balloons -----------------------------------------------------------------

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_requested.emit()

    def notify(self, title: str, text: str, *, warning: bool = False) -> bool:
        """The tray balloon (the fallback when the desktop has no notification service); False when
        there is no tray either."""
        if self.icon is None or not self.icon.supportsMessages():
            return False
        kind = QSystemTrayIcon.MessageIcon.Warning if warning else QSystemTrayIcon.MessageIcon.Information
        self.icon.showMessage(title, text, kind, 15000)
        return True

    def hide(self) -> None:
        if self.icon is not None:
            self.icon.hide()


def _level_icon(level: HealthLevel) -> QIcon:
    state = {HealthLevel.NEEDS_YOU: TrayState.DOWN, HealthLevel.DEGRADED: TrayState.ATTENTION}.get(level, TrayState.OK)
    return tray_icon(state)


__all__ = ["Tray", "TrayEntry", "TrayState", "attention_entries", "tray_icon", "tray_icon_path", "tray_state",
           "tray_tooltip"]
