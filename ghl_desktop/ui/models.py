"""Table models of the locations and numbers panels. They hold domain records (never ORM rows),
filled through the Cockpit, and show each row's computed health (HealthSnapshot) in its State cell.
The message log's models are in :mod:`ghl_desktop.ui.message_log_models`.

Every model here passes ``qtmodeltester``; the column set is fixed per model (``COLUMNS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
)
from PySide6.QtGui import QBrush, QColor

from ghl_desktop.core.models import (
    Location,
    LocationState,
    SessionState,
    WhatsAppSession,
)
from ghl_desktop.services.health import OK, Health, HealthAction, HealthLevel, HealthSnapshot
from ghl_desktop.ui import theme
from ghl_desktop.ui.resources import state_icon

AnyIndex = QModelIndex | QPersistentModelIndex
T = TypeVar("T")

#: the role under which each row's domain record is available (for selection handlers and tests)
RecordRole = Qt.ItemDataRole.UserRole + 1



def _good() -> QColor:
    return theme.colors().good


def _warn() -> QColor:
    return theme.colors().warn


def _bad() -> QColor:
    return theme.colors().bad


def _muted() -> QColor:
    return theme.colors().muted


_LEVEL_COLOR = {HealthLevel.OK: _good, HealthLevel.DEGRADED: _warn, HealthLevel.NEEDS_YOU: _bad}

LOCATION_STATE_LABELS: dict[LocationState, str] = {
    LocationState.CONNECTED: "Connected",
    LocationState.NEEDS_RECONNECT: "Needs reconnect",
    LocationState.UNINSTALLED: "Uninstalled",
}

SESSION_STATE_LABELS: dict[SessionState, str] = {
    SessionState.WAITING_FOR_SCAN: "Waiting for QR scan",
    SessionState.CONNECTING: "Connecting…",
    SessionState.CONNECTED: "Connected",
    SessionState.RECONNECTING: "Reconnecting…",
    SessionState.PHONE_OFFLINE: "Phone offline",
    SessionState.LOGGED_OUT: "Logged out — pair again",
    SessionState.TEMPORARILY_BANNED: "Temporarily banned",
    SessionState.REPLACED: "Replaced by another client",
    SessionState.CLIENT_OUTDATED: "App update needed",
    SessionState.FAILED: "Failed",
}



def format_time(value: datetime | None, *, now: datetime | None = None, seconds: bool = True) -> str:
    """Local time; the date only when it is not today."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone()
    today = (now or datetime.now(UTC)).astimezone().date()
    if local.date() == today:
        return local.strftime("%H:%M:%S" if seconds else "%H:%M")
    return local.strftime("%d %b %H:%M")


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def format_expiry(value: datetime | None, *, now: datetime | None = None) -> str:
    """How long an access token stays valid, relative ("in 20 h", "expired 2 d ago")."""
    if value is None:
        return "—"
    current = now or datetime.now(UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value <= current:
        return f"expired {_span(current - value)} ago"
    return f"in {_span(value - current)}"


class RecordTableModel(QAbstractTableModel, Generic[T]):
    """A read-only table over a list of records: subclasses name the columns and render cells."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()
    #: the column whose cells show the row's actions (painted by the view; -1: none)
    ACTIONS_COLUMN: ClassVar[int] = -1

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[T] = []

    # -- Qt API --
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.DisplayRole
            and 0 <= section < len(self.COLUMNS)
        ):
            return self.COLUMNS[section]
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if (
            not index.isValid()
            or not (0 <= index.row() < len(self._rows))
            or not (0 <= index.column() < len(self.COLUMNS))
        ):
            return None
        record = self._rows[index.row()]
        if role == RecordRole:
            return record
        if role == Qt.ItemDataRole.DisplayRole:
            return self.display(record, index.column())
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.tooltip(record, index.column())
        if role == Qt.ItemDataRole.ForegroundRole:
            color = self.color(record, index.column())
            return QBrush(color) if color is not None else None
        if role == Qt.ItemDataRole.DecorationRole:
            return self.decoration(record, index.column())
        if role == Qt.ItemDataRole.AccessibleTextRole:
            return self.display(record, index.column()) or self.COLUMNS[index.column()] or "actions"
        return None

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    # -- ours --
    def set_records(self, records: Sequence[T]) -> None:
        self.beginResetModel()
        self._rows = list(records)
        self.endResetModel()

    def records(self) -> list[T]:
        return list(self._rows)

    def record(self, row: int) -> T:
        return self._rows[row]

    def display(self, record: T, column: int) -> str:
        raise NotImplementedError

    def tooltip(self, record: T, column: int) -> str | None:
        return None

    def color(self, record: T, column: int) -> QColor | None:
        return None

    def decoration(self, record: T, column: int) -> Any:
        return None

    def refresh_all(self) -> None:
        """Repaint every cell (the palette or the health changed)."""
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(self.COLUMNS) - 1))


class _HealthRows(RecordTableModel[T]):
    """Rows whose state cell shows a computed health (HealthSnapshot) rather than the raw state."""

    STATE_COLUMN: ClassVar[int] = 2

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._health: dict[str, Health] = {}

    def health_of(self, record: T) -> Health:
        return self._health.get(str(getattr(record, "id", "")), OK)

    def set_health(self, health: dict[str, Health]) -> None:
        if health != self._health:
            self._health = dict(health)
            self.refresh_all()

    def color(self, record: T, column: int) -> QColor | None:
        if column != self.STATE_COLUMN:
            return None
        return _LEVEL_COLOR[self.health_of(record).level]()

    def decoration(self, record: T, column: int) -> Any:
        if column != self.STATE_COLUMN:
            return None
        return state_icon(self.health_of(record).level)


class LocationsModel(_HealthRows[Location]):
    """HighLevel sub-accounts the app is installed in (``cockpit.locations()``)."""

    COLUMNS = ("Name", "Location ID", "State", "Token expires", "")
    #: the column showing the row's actions (Reconnect); its text is empty
    ACTIONS_COLUMN = 4

    def display(self, record: Location, column: int) -> str:
        if column == 0:
            return record.name
        if column == 1:
            return record.id
        if column == 2:
            return LOCATION_STATE_LABELS.get(record.state, str(record.state))
        if column == 3:
            return format_expiry(record.token_expires_at)
        return ""

    def tooltip(self, record: Location, column: int) -> str | None:
        health = self.health_of(record)
        if not health.ok:
            return health.reason
        if column == 3 and record.token_expires_at is not None:
            return f"Access token valid until {format_time(record.token_expires_at)} (renewed automatically)"
        return (record.company_id and f"Company {record.company_id}") or None

    def names(self) -> dict[str, str]:
        return {loc.id: loc.name for loc in self._rows}

    def row_of(self, location_id: str) -> int | None:
        return next((row for row, loc in enumerate(self._rows) if loc.id == location_id), None)


def session_state_label(record: WhatsAppSession, health: Health = OK) -> str:
    """The State cell: the number's own state, unless bridging is stalled by its location."""
    if health.action is HealthAction.RECONNECT_LOCATION:
        return "Bridging stalled"
    label = SESSION_STATE_LABELS.get(record.state, str(record.state))
    if record.state is SessionState.TEMPORARILY_BANNED and record.state_until is not None:
        label += f" until {format_time(record.state_until, seconds=False)}"
    return label


class SessionsModel(_HealthRows[WhatsAppSession]):
    """Linked (or being-linked) WhatsApp numbers (``cockpit.numbers()``)."""

    COLUMNS = ("Number", "Location", "State", "Detail", "Since", "Worker", "")
    #: the worker holding the number in a cluster (issue 14); the numbers panel hides it on one desktop
    WORKER_COLUMN = 5
    #: the column showing the row's actions (Log out, Remove, Retry…); its text is empty
    ACTIONS_COLUMN = 6

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._location_names: dict[str, str] = {}
        self._holders: dict[str, str] = {}

    def set_holders(self, holders: dict[str, str]) -> None:
        """Session id → the worker holding it (a cluster's window)."""
        if holders == self._holders:
            return
        self._holders = dict(holders)
        if self._rows:
            column = self.WORKER_COLUMN
            self.dataChanged.emit(self.index(0, column), self.index(len(self._rows) - 1, column))

    def set_location_names(self, names: dict[str, str]) -> None:
        if names == self._location_names:
            return  # every refresh passes them: no repaint (and no column re-fit) when nothing changed
        self._location_names = dict(names)
        if self._rows:
            self.dataChanged.emit(self.index(0, 1), self.index(len(self._rows) - 1, 1))

    def display(self, record: WhatsAppSession, column: int) -> str:
        if column == 0:
            return record.phone or "not linked yet"
        if column == 1:
            return self._location_names.get(record.location_id, record.location_id)
        if column == 2:
            return session_state_label(record, self.health_of(record))
        if column == 3:
            health = self.health_of(record)
            if health.action in (HealthAction.RECONNECT_LOCATION, HealthAction.WAIT) and \
                    record.state is not SessionState.RECONNECTING:
                return health.reason
            return (record.detail or "").replace("\n", " ")
        if column == 4:
            return format_time(record.updated_at, seconds=False)
        if column == self.WORKER_COLUMN:
            return self._holders.get(record.id, "—")
        return ""

    def tooltip(self, record: WhatsAppSession, column: int) -> str | None:
        if column == self.WORKER_COLUMN:
            worker = self._holders.get(record.id)
            return (f"Connected by the worker {worker}" if worker else
                    "No worker holds this number right now; one takes it over within the takeover time")
        health = self.health_of(record)
        if not health.ok and column in (2, 3):
            return health.reason
        return record.detail or (record.jid if column == 0 else None)

    def upsert(self, session: WhatsAppSession) -> None:
        """Replace the row of this session (same id) in place, or append it."""
        for row, existing in enumerate(self._rows):
            if existing.id == session.id:
                self._rows[row] = session
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))
                return
        self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows))
        self._rows.append(session)
        self.endInsertRows()

    def merge(self, sessions: Sequence[WhatsAppSession]) -> None:
        """Become ``sessions`` row by row (changed rows repaint in place, new ones appended, gone ones
        removed): a refresh that keeps the selection and never resets the view."""
        keep = {s.id for s in sessions}
        for gone in [s.id for s in self._rows if s.id not in keep]:
            self.remove(gone)
        current = {s.id: s for s in self._rows}
        for session in sessions:
            if current.get(session.id) != session:
                self.upsert(session)

    def remove(self, session_id: str) -> None:
        for row, existing in enumerate(self._rows):
            if existing.id == session_id:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._rows[row]
                self.endRemoveRows()
                return

    def row_of(self, session_id: str) -> int | None:
        return next((row for row, s in enumerate(self._rows) if s.id == session_id), None)


def health_maps(snapshot: HealthSnapshot) -> tuple[dict[str, Health], dict[str, Health]]:
    """(location id → health, session id → health) for the two models."""
    return ({loc.location_id: loc.health for loc in snapshot.locations},
            {n.session_id: n.health for n in snapshot.numbers})


__all__ = [
    "LOCATION_STATE_LABELS",
    "SESSION_STATE_LABELS",
    "LocationsModel",
    "RecordRole",
    "SessionsModel",
    "format_expiry",
    "format_time",
    "health_maps",
    "session_state_label",
]
