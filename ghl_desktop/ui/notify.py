"""Desktop notices driven by the health model.

:class:`NoticeCenter` takes the debounced :class:`~ghl_desktop.services.health.NoticeRequested`
events (``ServiceBridge.notice_requested``: the grace period for transient drops and the "never twice
until it clears" rule are the HealthMonitor's) and shows them through the platform's notification
service (:mod:`ghl_desktop.ui.notifications`), falling back to the tray balloon when there is none.
Clicking one calls ``reveal(session_id, location_id)``: the window opens on the affected row.

Bursts: notices arriving within ``window_ms`` of each other are shown together — each on its own up
to :data:`MAX_SEPARATE`, beyond that one summary ("5 problems need attention") that opens the window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QTimer

from ghl_desktop.services.health import HealthLevel, NoticeRequested

log = logging.getLogger("ghl.ui.notify")

#: a burst of more notices than this becomes one summary notice
MAX_SEPARATE = 3

Reveal = Callable[[str | None, str | None], Any]


@dataclass(frozen=True, slots=True)
class Shown:
    """One notice as it was shown: ``channel`` is "service", "balloon" or "none"."""

    notice: NoticeRequested
    channel: str


class NoticeCenter(QObject):
    def __init__(
        self,
        notifications: Any | None,
        *,
        balloon: Callable[[str, str, bool], bool] | None = None,
        reveal: Reveal | None = None,
        window_ms: int = 600,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._notifications = notifications
        self._balloon = balloon
        self._reveal = reveal
        self._pending: list[NoticeRequested] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(window_ms)
        self._timer.timeout.connect(self.flush)
        self._closed = False
        #: every notice shown so far, with the way it went
        self.shown: list[Shown] = []

    # --- input ---------------------------------------------------------------------------------

    def add(self, notice: NoticeRequested) -> None:
        """Slot for ``ServiceBridge.notice_requested``."""
        if self._closed:
            return
        self._pending.append(notice)
        if not self._timer.isActive():
            self._timer.start()

    def say(self, key: str, title: str, text: str) -> None:
        """A notice of the app itself (e.g. "still running in the tray"), shown at once."""
        self._show(NoticeRequested(key, title, text, HealthLevel.OK))

    def flush(self) -> None:
        self._timer.stop()
        batch, self._pending = self._pending, []
        if not batch:
            return
        if len(batch) <= MAX_SEPARATE:
            for notice in batch:
                self._show(notice)
            return
        worst = HealthLevel.worst_of([n.level for n in batch])
        lines = "\n".join(f"• {n.title}" for n in batch)
        self._show(NoticeRequested("summary", f"{len(batch)} problems need attention", lines, worst))

    # --- output --------------------------------------------------------------------------------

    def _show(self, notice: NoticeRequested) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._record(notice, self._fallback(notice))
            return
        task = loop.create_task(self._deliver(notice), name=f"notice-{notice.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, notice: NoticeRequested) -> None:
        channel = "none"
        if self._notifications is not None:
            try:
                channel = await self._notifications.send(
                    notice.title, notice.text, critical=notice.level is HealthLevel.NEEDS_YOU,
                    on_clicked=lambda: self.clicked(notice))
            except Exception:
                log.warning("desktop notification failed", exc_info=True)
        if channel != "service":
            channel = self._fallback(notice)
        self._record(notice, channel)

    def _fallback(self, notice: NoticeRequested) -> str:
        if self._balloon is not None and self._balloon(notice.title, notice.text, notice.level is not HealthLevel.OK):
            return "balloon"
        return "none"

    def _record(self, notice: NoticeRequested, channel: str) -> None:
        log.info("notice (%s): %s — %s", channel, notice.title, notice.text)
        self.shown.append(Shown(notice, channel))

    def clicked(self, notice: NoticeRequested) -> None:
        """The user clicked the notice: open the window on the affected row."""
        if self._reveal is not None:
            self._reveal(notice.session_id, notice.location_id)

    async def drain(self) -> None:
        """Wait for the notices being sent (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def stop(self) -> None:
        self._closed = True
        self._timer.stop()
        self._pending.clear()


__all__ = ["MAX_SEPARATE", "NoticeCenter", "Shown"]
