"""The old message-log panel (a mixin of the old window), hosted as a standalone part until the
standalone MessageLogPanel / DeadLettersPanel (ui/panels/message_log.py) land. Temporary: the
window uses the new panels as soon as ``message_log.DeadLettersPanel`` exists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ghl_desktop.app import App
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.models import DeadJobsModel, MessageLogFilter, MessageLogModel
from ghl_desktop.ui.panels.base import Tasks
from ghl_desktop.ui.panels.message_log import MESSAGE_LOG_LIMIT, MessageLogPanel

if TYPE_CHECKING:
    from ghl_desktop.runtime import BridgeRuntime


class LegacyLog(MessageLogPanel):
    def __init__(self, app: App, runtime: BridgeRuntime | None, bridge: ServiceBridge, tasks: Tasks) -> None:
        super().__init__()
        self.app = app
        self.runtime = runtime
        self._tasks = tasks._tasks  # the window's: cancelled at shutdown
        self.messages_model = MessageLogModel(self, limit=MESSAGE_LOG_LIMIT)
        self.messages_filter = MessageLogFilter(self)
        self.messages_filter.setSourceModel(self.messages_model)
        self.dead_model = DeadJobsModel(self)
        self.frame = self._build_log_panel()
        bridge.message_logged.connect(self._message_logged)

    def refresh(self) -> None:
        if self.app.closed:
            return
        self.messages_model.set_records(self.app.db.messages.recent(MESSAGE_LOG_LIMIT))
        self.refresh_dead()
        self._update_shown()

    def poll(self) -> None:
        if not self.app.closed:
            self.refresh_dead()
