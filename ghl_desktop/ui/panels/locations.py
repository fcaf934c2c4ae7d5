"""The HighLevel locations panel: the locations table with its Reconnect buttons, and Connect
HighLevel (the OAuth install in the browser, cancellable, its progress under the table)."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QWidget

from ghl_desktop.core.models import Location, LocationState
from ghl_desktop.ui.panels.base import PanelBase, _panel, _status_label
from ghl_desktop.ui.widgets import EmptyStateView, make_table


class LocationsPanel(PanelBase):
    """HighLevel locations and Connect HighLevel."""

    _connect_task: asyncio.Task[None] | None

    def _build_locations_panel(self) -> QWidget:
        self.connect_button = QPushButton("Connect HighLevel…")
        self.connect_button.clicked.connect(lambda: self.start_connect())
        frame, layout = _panel("HighLevel locations", self.connect_button)
        self.locations_view = make_table(self.locations_model, stretch_column=0, fit_columns=(1, 2, 3, 4))
        self.locations_view.verticalHeader().setDefaultSectionSize(30)
        self.locations_panel = EmptyStateView(
            self.locations_view, "No locations yet — connect HighLevel to add your sub-accounts."
        )
        layout.addWidget(self.locations_panel)
        status_row = QHBoxLayout()
        self.connect_status = _status_label("connectStatus")
        self.connect_status.linkActivated.connect(self.open_url)
        self.cancel_connect_button = QPushButton("Cancel")
        self.cancel_connect_button.setVisible(False)
        self.cancel_connect_button.clicked.connect(self.cancel_connect)
        status_row.addWidget(self.connect_status, 1)
        status_row.addWidget(self.cancel_connect_button, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(status_row)
        self._row_actions(self.locations_view, self.locations_model, self._location_actions)
        return frame

    def _location_actions(self, location: Location) -> list[tuple[str, Callable[[], object]]]:
        if self.runtime is None or location.state is not LocationState.NEEDS_RECONNECT:
            return []
        return [("Reconnect", lambda: self.start_connect(reconnect=location))]

    # -- Connect HighLevel --

    @property
    def connecting(self) -> bool:
        """True from the click until the panel shows the outcome (the button is usable again)."""
        return getattr(self, "_connect_in_progress", False)

    def start_connect(self, *, reconnect: Location | None = None) -> asyncio.Task[None] | None:
        """Run the OAuth install with the browser; the result lands in the locations panel."""
        if self.runtime is None or self.connecting:
            return None
        self._connect_in_progress = True
        self.connect_button.setEnabled(False)
        self.cancel_connect_button.setVisible(True)
        self._connect_task = self._spawn(
            self._connect(reconnect), name="connect",
            on_error=lambda text: self._say(self.connect_status, f"Could not connect HighLevel: {text}", error=True),
        )
        self._connect_task.add_done_callback(lambda _t: self._connect_finished())
        return self._connect_task

    def cancel_connect(self) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            self._say(self.connect_status, "Cancelled — nothing was connected.")

    def _connect_finished(self) -> None:
        self._connect_in_progress = False
        self.connect_button.setEnabled(self.runtime is not None)
        self.cancel_connect_button.setVisible(False)

    async def _connect(self, reconnect: Location | None) -> None:
        assert self.runtime is not None
        oauth = self.runtime.oauth
        what = f"“{reconnect.name}”" if reconnect else "a location"
        self._say(self.connect_status, f"Opening the HighLevel sign-in in your browser — approve {what} there…")
        flow = asyncio.get_running_loop().create_task(oauth.connect(), name="oauth-connect")
        shown_url: str | None = None
        try:
            while not flow.done():
                url = oauth.authorize_url
                if url and url != shown_url:
                    shown_url = url
                    self._say(self.connect_status,
                              f"Waiting for you to approve {what} in the browser. "
                              f"Nothing opened? <a href='{html.escape(url)}'>Open the sign-in page</a>.")
                await asyncio.wait({flow}, timeout=0.1)
        except asyncio.CancelledError:
            flow.cancel()  # the connector closes its loopback listener on the way out
            await asyncio.gather(flow, return_exceptions=True)
            return
        connected = flow.result()
        names = ", ".join(loc.name for loc in connected)
        self._say(self.connect_status, f"Connected: {names}.")
        self.refresh()
