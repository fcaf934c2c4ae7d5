"""The dead letters panel: work that gave up (a message HighLevel or WhatsApp refused, a job out of
attempts), with why, and Retry / Retry all. A plain QWidget over :class:`MessageLogService`; it never
touches the database and never waits for it (docs/event-loop.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from PySide6.QtCore import (
    QPoint,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMenu,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.core.message_log import DeadLetter
from ghl_desktop.services.message_log import MessageLogService
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.message_log_models import (
    DeadLettersModel,
    IdRole,
)
from ghl_desktop.ui.panels.log_widgets import PanelTasks, RowKeys, action_button, log_table, loop_usable, menu_index

log = logging.getLogger("ghl.ui.log")

NO_DEAD = "No dead letters — work that gives up is listed here, to retry."
DEAD_POLL_MS = 3000


class DeadLettersPanel(QWidget):
    """Work that gave up, with the reason; Retry one (context menu, Enter, the button) or Retry all."""

    status_changed = Signal(str)
    #: the user asked to see a dead letter's message in the log
    message_requested = Signal(int)
    #: the number of dead letters changed (for a tab title)
    count_changed = Signal(int)

    def __init__(self, log: MessageLogService, bridge: ServiceBridge, parent: QWidget | None = None, *,
                 poll_ms: int = DEAD_POLL_MS) -> None:
        super().__init__(parent)
        self.setObjectName("deadLettersPanel")
        self.service = log
        self.model = DeadLettersModel(self)
        self.view = log_table("deadLettersTable")
        self.view.setAccessibleName("Dead letters")
        self.view.setModel(self.model)
        header = self.view.horizontalHeader()
        metrics = self.view.fontMetrics()
        for column, sample in enumerate(("#00000", "HighLevel → WhatsApp", "to +14155550123: Hello there",
                                         "28 Dec 00:00", "Attempts")):
            header.resizeSection(column, metrics.horizontalAdvance(sample) + 20)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self._keys = RowKeys(self.view, self._context_menu)
        self.hint = QLabel(NO_DEAD)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)
        self.stack = QStackedWidget()
        self.stack.addWidget(self.view)
        self.stack.addWidget(self.hint)
        self.retry_button = action_button("Retry", "Retry the selected dead letter", self.retry_selected)
        self.retry_all_button = action_button("Retry all", "Retry all dead letters", self.retry_all,
                                              name="deadRetryAll")
        self.status = QLabel()
        self.status.setObjectName("deadStatus")
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Dead letters status")
        bar = QHBoxLayout()
        bar.addWidget(self.status, 1)
        bar.addWidget(self.retry_button)
        bar.addWidget(self.retry_all_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        self.view.selectionModel().currentRowChanged.connect(lambda *_: self._update_buttons())
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.poll)
        self._stamp: tuple[int, int, str] | None = None
        self.tasks = PanelTasks()
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._again_force = False
        self._closing = False
        if poll_ms > 0:
            self._timer.start()
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(300)
        self._debounce.timeout.connect(self.poll)
        bridge.message_logged.connect(lambda _m: self._debounce.start())
        self.refresh()

    def poll(self) -> asyncio.Task[None] | None:
        """Reload the list only when the dead letters changed (one aggregate query otherwise)."""
        if self._closing or not loop_usable():
            return None  # the window shut down (or the loop is gone): nothing to read for
        return self._read(force=False)

    def refresh(self) -> asyncio.Task[None]:
        return self._read(force=True)

    def _read(self, *, force: bool) -> asyncio.Task[None]:
        """One read in flight; a call meanwhile reads once more after it (forced if any was)."""
        self._again_force = force or self._again_force if self._again else force
        if self._task is not None and not self._task.done():
            self._again = True
            return self._task
        self._again = False
        self._task = self.tasks.spawn(self._read_loop(force), "dead-letters")
        return self._task

    async def _read_loop(self, force: bool) -> None:
        while True:
            try:
                stamp, records = await self.service.dead_letters_if_changed(None if force else self._stamp)
            except Exception:
                if not self._closing:
                    log.exception("could not read the dead letters")
                return
            self._stamp = stamp
            if records is not None:
                self._show(records)
            if not self._again:
                return
            self._again = False
            force = self._again_force

    def _show(self, records: list[DeadLetter]) -> None:
        current = self.view.currentIndex()
        job_id = current.data(IdRole) if current.isValid() else None
        before = self.model.rowCount()
        self.model.set_records(records)
        if job_id is not None:
            for row, record in enumerate(self.model.records()):
                if record.job_id == job_id:
                    self.view.selectRow(row)
                    break
        count = self.model.rowCount()
        self.stack.setCurrentWidget(self.view if count else self.hint)
        self._update_buttons()
        if count != before:
            self.count_changed.emit(count)

    async def wait_idle(self) -> None:
        """Until the reads and retries asked for so far are done (tests)."""
        await self.tasks.wait()

    def stop(self) -> None:
        """The window is shutting down: no more polls."""
        self._closing = True
        self._timer.stop()
        self._debounce.stop()

    async def aclose(self) -> None:
        self.stop()
        await self.tasks.cancel_all()

    def _update_buttons(self) -> None:
        self.retry_all_button.setEnabled(self.model.rowCount() > 0)
        self.retry_button.setEnabled(self.view.currentIndex().isValid())

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.status_changed.emit(text)

    def retry_selected(self) -> asyncio.Task[None] | None:
        index = self.view.currentIndex()
        if not index.isValid():
            return None
        job_id = int(index.data(IdRole))
        return self.tasks.spawn(self._retry(self.service.retry_dead([job_id])), "dead-letters-retry")

    def retry_all(self) -> asyncio.Task[None]:
        return self.tasks.spawn(self._retry(self.service.retry_all_dead()), "dead-letters-retry-all")

    async def _retry(self, retry: Coroutine[Any, Any, Any]) -> None:
        try:
            result = await retry
        except Exception as exc:
            log.exception("retry of dead letters failed")
            self._say(f"Retry failed: {exc}")
            return
        self._say(result.message)
        self.refresh()

    def _context_menu(self, pos: QPoint) -> QMenu | None:
        index = menu_index(self.view, pos)
        if index is None:
            return None
        record = self.model.record(index.row())
        menu = QMenu(self)
        menu.setAccessibleName("Dead letter actions")
        retry = QAction("Retry", menu)
        retry.triggered.connect(self.retry_selected)
        menu.addAction(retry)
        show = QAction("Show the message", menu)
        show.setEnabled(record.message_id is not None)
        show.triggered.connect(lambda: self.message_requested.emit(record.message_id))
        menu.addAction(show)
        copy = QAction("Copy the reason", menu)
        copy.triggered.connect(lambda: QGuiApplication.clipboard().setText(record.reason))
        menu.addAction(copy)
        self.last_menu = menu
        menu.popup(self.view.viewport().mapToGlobal(pos))
        return menu


__all__ = ["DEAD_POLL_MS", "NO_DEAD", "DeadLettersPanel"]
