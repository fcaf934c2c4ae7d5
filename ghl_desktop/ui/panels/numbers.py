"""The WhatsApp numbers panel: every linked (or being-linked) number with its health — a number
whose location needs reconnecting says "Bridging stalled" with what waits, a banned one until when
(local time) — and its actions in a row menu (Log out, Cancel linking, Retry, Link again,
Reconnect location, Remove). Reads and actions go through the :class:`Cockpit` only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHeaderView, QPushButton, QVBoxLayout, QWidget

from ghl_desktop.core.models import SessionState, WhatsAppSession, can_transition
from ghl_desktop.services.cockpit import NO_RUNTIME, Cockpit
from ghl_desktop.services.health import HealthAction, HealthSnapshot
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.models import SessionsModel, health_maps
from ghl_desktop.ui.panels.base import Confirm, Tasks, panel_frame
from ghl_desktop.ui.panels.history import ACTION as HISTORY_ACTION
from ghl_desktop.ui.panels.history import HistoryStrip, open_history, phone_in
from ghl_desktop.ui.panels.number_routing import ACTION as ROUTING_ACTION
from ghl_desktop.ui.panels.number_routing import open_number_routing, several_numbers
from ghl_desktop.ui.widgets import ActionTable, EmptyStateView, RowAction, StatusLabel

_LIVE = frozenset({SessionState.CONNECTING, SessionState.CONNECTED, SessionState.RECONNECTING,
                   SessionState.PHONE_OFFLINE})


class NumbersPanel(QWidget):
    """WhatsApp numbers.

    Signals: link_requested() — "Link WhatsApp number…" was pressed (the linking panel starts);
    linking(str) — a number is being linked again (the linking panel follows it);
    reconnect_requested(str) — Reconnect for the number's location (the locations panel runs it)."""

    link_requested = Signal()
    linking = Signal(str)
    reconnect_requested = Signal(str)

    def __init__(self, cockpit: Cockpit, bridge: ServiceBridge, *, tasks: Tasks, confirm: Confirm,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cockpit = cockpit
        self.tasks = tasks
        self.confirm = confirm
        self.link_button = QPushButton("Link WhatsApp number…")
        self.link_button.setAccessibleName("Link a WhatsApp number")
        self.link_button.setToolTip("Show a QR code to scan with WhatsApp on the phone")
        self.link_button.clicked.connect(self.link_requested.emit)
        frame, layout = panel_frame("WhatsApp numbers", self.link_button)
        self.model = SessionsModel(self)
        self.view = ActionTable(self.model, self._actions, name="WhatsApp numbers",
                                actions_column=SessionsModel.ACTIONS_COLUMN)
        header = self.view.horizontalHeader()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        for column in (0, 1, 2, 4, 5, 6):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.view.setColumnHidden(SessionsModel.WORKER_COLUMN, True)  # shown on a cluster's window only
        self.empty = EmptyStateView(
            self.view, "No WhatsApp numbers linked yet — link one to a location to start bridging.")
        layout.addWidget(self.empty)
        self.history = HistoryStrip(cockpit, bridge, tasks, lambda sid: phone_in(self.model, sid), self)  # issue 15
        layout.addWidget(self.history)
        self.status = StatusLabel("numbersStatus")
        self.status.setAccessibleName("Numbers status")
        layout.addWidget(self.status)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(frame)
        if not cockpit.available:
            self.link_button.setEnabled(False)
            self.link_button.setToolTip(NO_RUNTIME)
        bridge.session_changed.connect(self.model.upsert)
        bridge.session_removed.connect(self.model.remove)

    # -- data --

    def refresh(self) -> asyncio.Task[None]:
        """Read the numbers and the location names (off the loop); shown when they arrive."""
        return self.tasks.spawn(self._refresh(), name="numbers-refresh")

    async def _refresh(self) -> None:
        overview = await self.cockpit.overview()
        self.set_numbers(overview.numbers, overview.location_names, overview.holders)

    def set_numbers(self, numbers: list[WhatsAppSession], names: dict[str, str] | None = None,
                    holders: dict[str, str] | None = None) -> None:
        """``holders`` (a cluster's window): the worker holding each number, shown in a Worker column."""
        if names is not None:
            self.model.set_location_names(names)
        if holders is not None:
            self.model.set_holders(holders)
            self.view.setColumnHidden(SessionsModel.WORKER_COLUMN, False)
            if self.model.rowCount():
                self.model.merge(numbers)  # read every poll on a cluster: in place, the selection stays
                return
        self.model.set_records(numbers)

    def set_location_names(self, names: dict[str, str]) -> None:
        self.model.set_location_names(names)

    def apply_health(self, snapshot: HealthSnapshot) -> None:
        self.model.set_health(health_maps(snapshot)[1])

    def select(self, session_id: str) -> bool:
        row = self.model.row_of(session_id)
        if row is None:
            return False
        self.view.selectRow(row)
        self.view.setFocus()
        return True

    # -- row actions --

    def _actions(self, session: WhatsAppSession) -> list[RowAction]:
        if not self.cockpit.available:
            return []
        sid = session.id
        actions: list[RowAction] = []
        health = self.model.health_of(session)
        if health.action is HealthAction.RECONNECT_LOCATION:
            location_id = session.location_id
            actions.append(("Reconnect location", lambda: self.reconnect_requested.emit(location_id)))
        if session.state in _LIVE:
            actions.append(("Log out", lambda: self.run("logout", sid)))
        elif session.state is SessionState.WAITING_FOR_SCAN:
            actions.append(("Cancel linking", lambda: self.run("cancel", sid)))
        else:
            if session.jid and can_transition(session.state, SessionState.CONNECTING):
                actions.append(("Retry", lambda: self.run("retry", sid)))
            if can_transition(session.state, SessionState.WAITING_FOR_SCAN):
                actions.append(("Link again", lambda: self.run("link_again", sid)))
        siblings = several_numbers(self.model.records(), session)  # issue 15: a location with several numbers
        if siblings:
            actions.append((ROUTING_ACTION, lambda: open_number_routing(
                self, self.cockpit, self.tasks, session.location_id, siblings)))
        if session.state is SessionState.WAITING_FOR_SCAN or self.history.has_import(sid):  # issue 15
            actions.append((HISTORY_ACTION, lambda: open_history(self, self.cockpit, self.tasks, sid,
                                                                 phone_in(self.model, sid))))
        actions.append(("Remove", lambda: self.run("remove", sid)))
        return actions

    def run(self, action: str, session_id: str) -> asyncio.Task[None] | None:
        """Log out / Cancel linking / Remove / Retry / Link again on one number (destructive ones ask)."""
        if not self.cockpit.available:
            return None
        row = self.model.row_of(session_id)
        who = (self.model.record(row).phone if row is not None else None) or "this number"
        if action == "logout" and not self.confirm(
                "Log out", f"Log {who} out of WhatsApp? You will have to scan a QR code to link it again."):
            return None
        if action == "remove" and not self.confirm(
                "Remove number", f"Remove {who} from ghl-desktop? It is logged out and its WhatsApp data on this "
                                 "computer is deleted; the message log keeps its messages."):
            return None
        if action == "link_again":
            self.linking.emit(session_id)
        calls: dict[str, Callable[[str], Coroutine[Any, Any, None]]] = {
            "logout": self.cockpit.logout,
            "cancel": self.cockpit.cancel_link,
            "remove": self.cockpit.remove,
            "retry": self.cockpit.retry_number,
            "link_again": self.cockpit.link_again,
        }
        self.status.say(None)
        return self.tasks.spawn(calls[action](session_id), name=f"number-{action}",
                                on_error=lambda text: self.status.say(f"{who}: {text}", error=True))


__all__ = ["NumbersPanel"]
