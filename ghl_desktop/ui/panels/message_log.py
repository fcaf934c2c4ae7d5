"""The message log panel: the recent messages with their filter, and the dead letters tab (jobs that
gave up, with Retry / Retry all)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QTabWidget, QVBoxLayout, QWidget

from ghl_desktop.core.models import Job, Message, MessageStatus
from ghl_desktop.ui.panels.base import PanelBase, _panel, _status_label
from ghl_desktop.ui.widgets import EmptyStateView, make_table

MESSAGE_LOG_LIMIT = 500
DEAD_LIMIT = 500


class MessageLogPanel(PanelBase):
    """The message log and its dead letters."""

    def _build_log_panel(self) -> QWidget:
        self.filter_box = QLineEdit()
        self.filter_box.setPlaceholderText("Filter messages — text, chat, status, kind…")
        self.filter_box.setClearButtonEnabled(True)
        self.filter_box.setMinimumWidth(320)
        self.filter_box.textChanged.connect(self._filter_changed)
        self.shown_label = QLabel()
        self.shown_label.setObjectName("shownLabel")
        frame, layout = _panel("Message log", self.shown_label, self.filter_box)
        self.messages_view = make_table(self.messages_filter)
        header = self.messages_view.horizontalHeader()
        for column, width in enumerate((90, 110, 80, 220, 90)):
            header.resizeSection(column, width)
        self.messages_panel = EmptyStateView(
            self.messages_view, "No messages yet — they appear here as they cross the bridge."
        )
        self.dead_view = make_table(self.dead_model, stretch_column=4, fit_columns=(0, 1, 2, 3, 5))
        self.dead_view.verticalHeader().setDefaultSectionSize(30)
        self.dead_panel = EmptyStateView(
            self.dead_view, "No dead letters — every message that gave up would be listed here, to retry."
        )
        self._row_actions(self.dead_view, self.dead_model, self._dead_actions)
        self.retry_all_button = QPushButton("Retry all")
        self.retry_all_button.clicked.connect(lambda: self.retry_dead_jobs([j.id for j in self.dead_model.records()]))
        dead_page = QWidget()
        dead_layout = QVBoxLayout(dead_page)
        dead_layout.setContentsMargins(0, 4, 0, 0)
        dead_bar = QHBoxLayout()
        self.dead_status = _status_label("deadStatus")
        dead_bar.addWidget(self.dead_status, 1)
        dead_bar.addWidget(self.retry_all_button)
        dead_layout.addLayout(dead_bar)
        dead_layout.addWidget(self.dead_panel)
        self.log_tabs = QTabWidget()
        self.log_tabs.setDocumentMode(True)
        self.log_tabs.addTab(self.messages_panel, "Messages")
        self.log_tabs.addTab(dead_page, "Dead letters")
        layout.addWidget(self.log_tabs)
        return frame

    def _dead_actions(self, job: Job) -> list[tuple[str, Callable[[], object]]]:
        return [("Retry", lambda: self.retry_dead_jobs([job.id]))]

    # -- dead letters --

    def refresh_dead(self) -> None:
        jobs = self.app.db.jobs.list("dead", limit=DEAD_LIMIT)
        if [(j.id, j.updated_at) for j in jobs] != [(j.id, j.updated_at) for j in self.dead_model.records()]:
            self.dead_model.set_records(jobs)
        count = len(jobs)
        self.log_tabs.setTabText(1, f"Dead letters ({count})" if count else "Dead letters")
        self.retry_all_button.setEnabled(count > 0 and self.runtime is not None)

    def _message_of(self, job: Job) -> Message | None:
        """The message a dead job was carrying, when it carried one."""
        payload = job.payload
        messages = self.app.db.messages
        if isinstance(payload.get("message"), dict) and payload.get("session_id"):
            wa_id = payload["message"].get("id")
            return messages.by_wa_id(str(payload["session_id"]), str(wa_id)) if wa_id else None
        event: dict[str, Any] = payload["event"] if isinstance(payload.get("event"), dict) else payload
        if event.get("messageId") and event.get("locationId"):
            return messages.by_ghl_id(str(event["locationId"]), str(event["messageId"]))
        return None

    def retry_dead_jobs(self, job_ids: list[int]) -> int:
        """Requeue dead jobs (their failed message back to where it started) and wake the runner."""
        if self.runtime is None or self.app.closed:
            return 0
        requeued = 0
        for job_id in job_ids:
            job = self.app.db.jobs.get(job_id)
            if job is None:
                continue
            message = self._message_of(job)
            if self.app.db.jobs.requeue_dead(job_id):
                requeued += 1
                if message is not None and message.id is not None and message.status is MessageStatus.FAILED:
                    self.messages_model.upsert(self.app.db.messages.reset_failed(message.id))
        if requeued:
            self.runtime.runner.wake()
        self._say(self.dead_status, f"{requeued} job{'s' * (requeued != 1)} queued again." if requeued
                  else "Nothing to retry (already retried?).")
        QTimer.singleShot(0, self.refresh_dead)  # not under the clicked button's feet
        return requeued

    def _message_logged(self, message: Message) -> None:
        self.messages_model.upsert(message)
        self._update_shown()

    def _filter_changed(self, text: str) -> None:
        self.messages_filter.set_text(text)
        self._update_shown()

    def _update_shown(self) -> None:
        total = self.messages_model.rowCount()
        shown = self.messages_filter.rowCount()
        self.shown_label.setText(
            f"{shown} of {total} shown" if self.filter_box.text().strip() else f"{total} message{'s' * (total != 1)}"
        )
