"""History on link (issue 15) in the numbers panel: while a number's import runs, a line under the
numbers table shows "12 of 40 imported" with a progress bar and a Cancel button; a number's row actions
offer "History import…" (its own history days — or the app setting —, its progress, Cancel). Everything
is read and done through the :class:`Cockpit`, awaited (services/bridge/history.py does the work);
progress is re-read when the bridge publishes a ``HistoryChanged`` (several in a row: one read)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.core.history import MAX_HISTORY_DAYS, HistoryChanged, HistoryProgress
from ghl_desktop.services.cockpit import Cockpit
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.panels.base import Tasks

ACTION = "History import…"

AUTOMATIONS_NOTE = ("HighLevel may run its automations (workflows, auto-replies) on imported inbound messages, "
                    "as on any message that arrives.")


def phone_in(model: Any, session_id: str) -> str:
    """The number's phone as the numbers table shows it (its id while it has none)."""
    row = model.row_of(session_id)
    record = model.record(row) if row is not None else None
    return str(getattr(record, "phone", None) or session_id)


def setting_text(days: int) -> str:
    return f"the app setting ({days} days)" if days else "the app setting (off)"


class _Rereader:
    """Re-read on demand, at most one read in flight; a demand during a read runs one more read after it."""

    def __init__(self, tasks: Tasks, read: Callable[[], Awaitable[None]], name: str) -> None:
        self._tasks = tasks
        self._read = read
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def demand(self) -> asyncio.Task[None]:
        if self._task is not None and not self._task.done():
            self._again = True
            return self._task
        self._task = self._tasks.spawn(self._loop(), name=self._name)
        return self._task

    async def _loop(self) -> None:
        while True:
            self._again = False
            await self._read()
            if not self._again:
                return


class HistoryStrip(QWidget):
    """The running imports, one line each (hidden when none runs)."""

    def __init__(self, cockpit: Cockpit, bridge: ServiceBridge, tasks: Tasks,
                 phone_of: Callable[[str], str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("historyStrip")
        self.cockpit = cockpit
        self.tasks = tasks
        self.phone_of = phone_of
        self.rows: dict[str, tuple[QLabel, QProgressBar, QPushButton]] = {}
        #: the last progress read, per number
        self.last: dict[str, HistoryProgress] = {}
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.error = QLabel("")
        self.error.setObjectName("historyStripError")
        self.error.setWordWrap(True)
        self.error.hide()
        self._layout.addWidget(self.error)
        self._reread = _Rereader(tasks, self._read, "history-progress")
        self.hide()
        if cockpit.available:
            bridge.event_published.connect(self._on_event)
            bridge.session_changed.connect(lambda _session: self.refresh())  # e.g. resumed at start-up

    def _on_event(self, event: object) -> None:
        if isinstance(event, HistoryChanged):
            self.refresh()

    def refresh(self) -> asyncio.Task[None]:
        return self._reread.demand()

    async def _read(self) -> None:
        self.set_progress(await self.cockpit.history_progress())

    def has_import(self, session_id: str) -> bool:
        """Whether the number has imported history or days of its own (as last read)."""
        p = self.last.get(session_id)
        return p is not None and (p.total > 0 or p.days is not None or p.stopped)

    def set_progress(self, progress: list[HistoryProgress]) -> None:
        self.last = {p.session_id: p for p in progress}
        # a cancelled import keeps its line until the message that was in flight is done
        running = {p.session_id: p for p in progress if p.pending > 0}
        for sid in [s for s in self.rows if s not in running]:
            for widget in self.rows.pop(sid):
                widget.deleteLater()
        for sid, p in running.items():
            if sid not in self.rows:
                label = QLabel("")
                bar = QProgressBar()
                bar.setAccessibleName(f"History import of {self.phone_of(sid)}")
                cancel = QPushButton("Cancel")
                cancel.setAccessibleName(f"Cancel the history import of {self.phone_of(sid)}")
                cancel.setToolTip("Stop importing this number's history; what is in HighLevel stays there")
                cancel.clicked.connect(lambda _checked=False, s=sid: self.cancel(s))
                line = QHBoxLayout()
                line.addWidget(label, 1)
                line.addWidget(bar, 1)
                line.addWidget(cancel)
                self._layout.addLayout(line)
                self.rows[sid] = (label, bar, cancel)
            label, bar, cancel = self.rows[sid]
            label.setText(f"History import for {self.phone_of(sid)}: {p.imported} of {p.total} imported"
                          + (" (cancelling)" if p.stopped else ""))
            cancel.setEnabled(not p.stopped)
            bar.setRange(0, max(1, p.total))
            bar.setValue(p.imported + p.cancelled)
        self.setVisible(bool(self.rows) or not self.error.isHidden())

    def cancel(self, session_id: str) -> asyncio.Task[None]:
        row = self.rows.get(session_id)
        if row is not None:
            row[2].setEnabled(False)
        return self.tasks.spawn(self._cancel(session_id), name="history-cancel", on_error=self._show_error)

    async def _cancel(self, session_id: str) -> None:
        await self.cockpit.cancel_history(session_id)
        await self.refresh()

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()
        self.show()


class HistoryDialog(QDialog):
    """One number's history import: its own days (or the app setting), its progress, Cancel."""

    def __init__(self, cockpit: Cockpit, tasks: Tasks, session_id: str, phone: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cockpit = cockpit
        self.tasks = tasks
        self.session_id = session_id
        self.setWindowTitle(f"History import — {phone}")
        self.setObjectName("historyDialog")
        intro = QLabel("When this number is linked, WhatsApp offers its recent chats. ghl-desktop imports the "
                       "messages of the last days you choose into HighLevel, oldest first, with their own dates, "
                       "each once.")
        intro.setWordWrap(True)
        warning = QLabel(AUTOMATIONS_NOTE)
        warning.setObjectName("historyAutomationsNote")
        warning.setWordWrap(True)
        self.follow = QCheckBox(f"Use {setting_text(cockpit.history_days_setting)}")
        self.follow.setAccessibleName("Use the app setting for history days")
        self.days = QSpinBox()
        self.days.setRange(0, MAX_HISTORY_DAYS)
        self.days.setSuffix(" days")
        self.days.setSpecialValueText("off")
        self.days.setAccessibleName("History days for this number")
        self.days.setToolTip(f"How far back to import (0: off; at most {MAX_HISTORY_DAYS} days)")
        self.follow.toggled.connect(lambda on: self.days.setEnabled(not on))
        self.progress_text = QLabel("")
        self.progress_text.setObjectName("historyProgress")
        self.bar = QProgressBar()
        self.bar.setAccessibleName("History import progress")
        self.cancel_button = QPushButton("Cancel import")
        self.cancel_button.setAccessibleName("Cancel the history import")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_import)
        self.status = QLabel("")
        self.status.setObjectName("historyStatus")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("", self.follow)
        form.addRow("History days:", self.days)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Close)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        progress = QHBoxLayout()
        progress.addWidget(self.bar, 1)
        progress.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(warning)
        layout.addLayout(form)
        layout.addWidget(self.progress_text)
        layout.addLayout(progress)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)

    def start(self) -> None:
        self.open()
        self.tasks.spawn(self.load(), name="history-load", on_error=self._show_error)

    async def load(self) -> HistoryProgress | None:
        found = await self.cockpit.history_progress(self.session_id)
        p = found[0] if found else None
        own = p.days if p is not None else None
        self.follow.setChecked(own is None)
        self.days.setValue(own if own is not None else self.cockpit.history_days_setting)
        self.days.setEnabled(own is not None)
        self.show_progress(p)
        return p

    def show_progress(self, p: HistoryProgress | None) -> None:
        if p is None or p.total == 0:
            self.progress_text.setText("Nothing imported from this number's history." if not (p and p.stopped)
                                       else "History import cancelled.")
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
            self.cancel_button.setEnabled(False)
            return
        self.progress_text.setText(p.summary())
        self.bar.setRange(0, p.total)
        self.bar.setValue(p.imported + p.cancelled)
        self.cancel_button.setEnabled(p.running)

    def save(self) -> None:
        self.tasks.spawn(self._save(), name="history-save", on_error=self._show_error)

    async def _save(self) -> None:
        await self.cockpit.set_history_days(self.session_id, None if self.follow.isChecked() else self.days.value())
        self.accept()

    def cancel_import(self) -> None:
        self.cancel_button.setEnabled(False)
        self.tasks.spawn(self._cancel(), name="history-cancel", on_error=self._show_error)

    async def _cancel(self) -> None:
        stopped = await self.cockpit.cancel_history(self.session_id)
        self.status.setText(f"Cancelled: {stopped} waiting message{'s' * (stopped != 1)} will not be imported.")
        await self.load()

    def _show_error(self, text: str) -> None:
        self.status.setText(text)


def open_history(parent: QWidget, cockpit: Cockpit, tasks: Tasks, session_id: str, phone: str) -> HistoryDialog:
    dialog = HistoryDialog(cockpit, tasks, session_id, phone, parent)
    dialog.finished.connect(dialog.deleteLater)
    dialog.start()
    return dialog


__all__ = ["ACTION", "AUTOMATIONS_NOTE", "HistoryDialog", "HistoryStrip", "open_history", "phone_in"]
