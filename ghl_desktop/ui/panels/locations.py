"""The HighLevel locations panel: the locations with their health (a location that needs reconnecting
says so and offers Reconnect), and Connect HighLevel (the OAuth install in the browser, cancellable,
its progress under the table). Reads and actions go through the :class:`Cockpit` only, awaited
(nothing waits for the database on the loop thread)."""

from __future__ import annotations

import asyncio

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from ghl_desktop.core.models import Location, LocationState
from ghl_desktop.services.cockpit import NO_RUNTIME, Cockpit
from ghl_desktop.services.health import HealthAction, HealthSnapshot
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.models import LocationsModel, health_maps
from ghl_desktop.ui.panels.base import OpenUrl, Tasks, panel_frame
from ghl_desktop.ui.widgets import ActionTable, EmptyStateView, RowAction, StatusLabel, rich_link


class LocationsPanel(QWidget):
    """HighLevel locations and Connect HighLevel.

    Signals: changed() — the locations were reloaded (the window refreshes what depends on them)."""

    changed = Signal()

    def __init__(self, cockpit: Cockpit, bridge: ServiceBridge, *, tasks: Tasks, open_url: OpenUrl,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cockpit = cockpit
        self.tasks = tasks
        self.open_url = open_url
        self._connect_task: asyncio.Task[None] | None = None
        self._connect_in_progress = False

        self.connect_button = QPushButton("Connect HighLevel…")
        self.connect_button.setAccessibleName("Connect HighLevel")
        self.connect_button.setToolTip("Sign in to HighLevel in the browser and pick the locations to bridge")
        self.connect_button.clicked.connect(lambda: self.start_connect())
        frame, layout = panel_frame("HighLevel locations", self.connect_button)
        self.model = LocationsModel(self)
        self.view = ActionTable(self.model, self._actions, name="HighLevel locations",
                                actions_column=LocationsModel.ACTIONS_COLUMN)
        header = self.view.horizontalHeader()
        header.setStretchLastSection(False)
        from PySide6.QtWidgets import QHeaderView

        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in (1, 2, 3, 4):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.empty = EmptyStateView(self.view, "No locations yet — connect HighLevel to add your sub-accounts.")
        layout.addWidget(self.empty)
        status_row = QHBoxLayout()
        self.connect_status = StatusLabel("connectStatus")
        self.connect_status.setAccessibleName("Connect status")
        self.connect_status.linkActivated.connect(self.open_url)
        self.cancel_connect_button = QPushButton("Cancel")
        self.cancel_connect_button.setAccessibleName("Cancel connecting HighLevel")
        self.cancel_connect_button.setVisible(False)
        self.cancel_connect_button.clicked.connect(self.cancel_connect)
        status_row.addWidget(self.connect_status, 1)
        status_row.addWidget(self.cancel_connect_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(status_row)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(frame)
        if not cockpit.available:
            self.connect_button.setEnabled(False)
            self.connect_button.setToolTip(NO_RUNTIME)
        bridge.locations_changed.connect(lambda _event: self.refresh())

    # -- data --

    def refresh(self) -> asyncio.Task[None]:
        """Read the locations (off the loop) and show them when they arrive."""
        return self.tasks.spawn(self._refresh(), name="locations-refresh")

    async def _refresh(self) -> None:
        self.set_locations(await self.cockpit.locations())

    def set_locations(self, locations: list[Location]) -> None:
        """Show these locations (a reset only when something shown changed); ``changed`` follows."""
        if [(loc.id, loc.name, loc.state, loc.token_expires_at) for loc in locations] != [
                (loc.id, loc.name, loc.state, loc.token_expires_at) for loc in self.model.records()]:
            self.model.set_records(locations)
        self.changed.emit()

    def linkable(self) -> list[Location]:
        """The shown locations a new number can bridge to (connected ones)."""
        return [loc for loc in self.model.records() if loc.state is LocationState.CONNECTED]

    def apply_health(self, snapshot: HealthSnapshot) -> None:
        self.model.set_health(health_maps(snapshot)[0])

    def select(self, location_id: str) -> bool:
        row = self.model.row_of(location_id)
        if row is None:
            return False
        self.view.selectRow(row)
        self.view.setFocus()
        return True

    def _actions(self, location: Location) -> list[RowAction]:
        if not self.cockpit.available:
            return []
        health = self.model.health_of(location)
        if health.action is HealthAction.RECONNECT_LOCATION:
            return [("Reconnect", lambda: self.start_connect(reconnect=location))]
        return []

    # -- Connect HighLevel --

    @property
    def connecting(self) -> bool:
        """True from the click until the panel shows the outcome (the button is usable again)."""
        return self._connect_in_progress

    def start_connect(self, *, reconnect: Location | None = None) -> asyncio.Task[None] | None:
        """Run the OAuth install with the browser; the result lands in this panel."""
        if not self.cockpit.available or self.connecting:
            return None
        self._connect_in_progress = True
        self.connect_button.setEnabled(False)
        self.cancel_connect_button.setVisible(True)
        self._connect_task = self.tasks.spawn(
            self._connect(reconnect), name="connect",
            on_error=lambda text: self.connect_status.say(f"Could not connect HighLevel: {text}", error=True),
        )
        self._connect_task.add_done_callback(lambda _t: self._connect_finished())
        return self._connect_task

    def cancel_connect(self) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            self.connect_status.say("Cancelled — nothing was connected.")

    def _connect_finished(self) -> None:
        self._connect_in_progress = False
        self.connect_button.setEnabled(self.cockpit.available)
        self.cancel_connect_button.setVisible(False)

    async def _connect(self, reconnect: Location | None) -> None:
        what = f"“{reconnect.name}”" if reconnect else "a location"
        self.connect_status.say(
            "Checking that HighLevel can be reached…" if not self.cockpit.sandbox
            else f"Opening the HighLevel sign-in in your browser — approve {what} there…")

        def show_url(url: str) -> None:
            self.connect_status.say(f"Waiting for you to approve {what} in the browser. Nothing opened? "
                                    f"{rich_link(url, 'Open the sign-in page')}.")

        try:
            if reconnect is not None:
                connected = await self.cockpit.reconnect_location(reconnect.id, show_url)
            else:
                connected = await self.cockpit.connect_location(show_url)
        except asyncio.CancelledError:
            return
        names = ", ".join(loc.name for loc in connected)
        self.connect_status.say(f"Connected: {names}.")
        self.apply_health(await self.cockpit.refresh_health())
        await self._refresh()


__all__ = ["LocationsPanel"]
