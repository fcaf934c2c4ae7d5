"""Reply settings of a location with several WhatsApp numbers (issue 15): which number a contact who
never wrote in gets replies from (the default), and whether a reply whose number is down falls back to
another connected number instead of waiting. Opened from a number's row actions ("Reply settings…")
when its location has more than one linked number. Reads and saves through the :class:`Cockpit` only,
awaited (core/routing.py has the rule itself)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.core.models import WhatsAppSession
from ghl_desktop.core.routing import NumberRouting
from ghl_desktop.services.cockpit import Cockpit
from ghl_desktop.ui.panels.base import Tasks

ACTION = "Reply settings…"
ANY_NUMBER = "Any connected number"


def several_numbers(records: Sequence[WhatsAppSession], session: WhatsAppSession) -> list[WhatsAppSession]:
    """The linked numbers of ``session``'s location when it has more than one, else []."""
    siblings = [s for s in records if s.location_id == session.location_id and s.phone]
    return siblings if len(siblings) > 1 else []


class NumberRoutingDialog(QDialog):
    """The two settings of one location; :meth:`load` fills them, OK saves them (both awaited)."""

    def __init__(self, cockpit: Cockpit, tasks: Tasks, location_id: str, numbers: Sequence[WhatsAppSession],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cockpit = cockpit
        self.tasks = tasks
        self.location_id = location_id
        self.setWindowTitle("Reply settings")
        self.setObjectName("numberRoutingDialog")
        intro = QLabel("A reply from HighLevel goes out from the number the contact last wrote to. "
                       "Contacts who never wrote in get it from the default number.")
        intro.setWordWrap(True)
        self.default = QComboBox()
        self.default.setAccessibleName("Default number for replies")
        self.default.addItem(ANY_NUMBER, None)
        for number in numbers:
            self.default.addItem(number.phone or number.id, number.id)
        self.fallback = QCheckBox("Fall back to another number when the contact's number is down")
        self.fallback.setAccessibleName("Fall back to another number")
        self.fallback.setToolTip("Off: the reply waits for its number (the message log says why). "
                                 "On: it goes from another connected number of this location.")
        self.status = QLabel("")
        self.status.setObjectName("numberRoutingStatus")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Default number:", self.default)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.fallback)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self._set_enabled(False)

    def _set_enabled(self, on: bool) -> None:
        self.default.setEnabled(on)
        self.fallback.setEnabled(on)
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        if ok is not None:
            ok.setEnabled(on)

    def _show_error(self, text: str) -> None:
        self.status.setText(text)
        self._set_enabled(True)

    def start(self) -> None:
        """Show the dialog and read the settings (they appear when the read returns)."""
        self.open()
        self.tasks.spawn(self.load(), name="number-routing-load", on_error=self._show_error)

    async def load(self) -> NumberRouting:
        routing = await self.cockpit.number_routing(self.location_id)
        index = self.default.findData(routing.default_session_id)
        self.default.setCurrentIndex(index if index >= 0 else 0)
        self.fallback.setChecked(routing.fallback)
        self._set_enabled(True)
        return routing

    def save(self) -> None:
        self._set_enabled(False)
        self.tasks.spawn(self._save(), name="number-routing-save", on_error=self._show_error)

    async def _save(self) -> NumberRouting:
        default = self.default.currentData()
        await self.cockpit.set_default_number(self.location_id, default if isinstance(default, str) else None)
        routing = await self.cockpit.set_number_fallback(self.location_id, self.fallback.isChecked())
        self.accept()
        return routing


def open_number_routing(parent: QWidget, cockpit: Cockpit, tasks: Tasks, location_id: str,
                        numbers: Sequence[WhatsAppSession]) -> NumberRoutingDialog:
    dialog = NumberRoutingDialog(cockpit, tasks, location_id, numbers, parent)
    dialog.finished.connect(dialog.deleteLater)
    dialog.start()
    return dialog
