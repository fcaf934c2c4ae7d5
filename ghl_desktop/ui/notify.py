"""Desktop notices driven by the health model.

:class:`NoticeCenter` takes the debounced :class:`~ghl_desktop.services.health.NoticeRequested`
events (``ServiceBridge.notice_requested``: the grace period for transient drops and the "never twice
until it clears" rule are the HealthMonitor's) and shows them through the platform's notification
service (:mod:`ghl_desktop.ui.notifications`), falling back to the tray balloon when there is none.
Clicking one calls ``reveal(session_id, location_id)``: the window opens on the affected row.

Bursts: notices arriving within ``window_ms`` of each other are shown together — each on its own up
to :data:`MAX_SEPARATE`, beyond that one summary ("5 problems need attention") that opens the window.

The Qt-balloon coalescer below (:class:`NoticeCoalescer`, :class:`NoticePolicy`) is the previous
design, kept only while the old panels still import it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QTimer

from ghl_desktop.core.models import Location, LocationState, SessionState, WhatsAppSession
from ghl_desktop.relay.client import RelayLinkState, RelayStateChanged
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


# --- legacy: the Qt-balloon coalescer (still imported by the old panels) ------------------------



_UP = frozenset({SessionState.CONNECTED, SessionState.PHONE_OFFLINE})


@dataclass(frozen=True, slots=True)
class Notice:
    title: str
    text: str
    warning: bool = True
    #: what the notice is about ("session:<id>", "relay", "location:<id>"): later news replaces earlier
    key: str = ""
    #: a transient drop: dropped from the batch when the thing recovered before it was shown
    transient: bool = False


def _number(session: WhatsAppSession) -> str:
    return session.phone or "A WhatsApp number"


def session_notice(session: WhatsAppSession) -> Notice:
    """The text for a number that is no longer connected."""
    who = _number(session)
    state = session.state
    key = f"session:{session.id}"
    if state is SessionState.LOGGED_OUT:
        return Notice("WhatsApp number logged out",
                      f"{who} was logged out of WhatsApp. Link it again in ghl-desktop.", key=key)
    if state is SessionState.TEMPORARILY_BANNED:
        until = f" until {session.state_until:%Y-%m-%d %H:%M} UTC" if session.state_until else ""
        return Notice("WhatsApp number banned", f"WhatsApp temporarily banned {who}{until}.", key=key)
    if state is SessionState.REPLACED:
        return Notice("WhatsApp number taken over",
                      f"{who} was opened by another WhatsApp client; ghl-desktop stopped using it. "
                      "Press Retry to take it back.", key=key)
    if state is SessionState.CLIENT_OUTDATED:
        return Notice("ghl-desktop needs an update", f"WhatsApp refuses this app version for {who}.", key=key)
    if state is SessionState.FAILED:
        return Notice("WhatsApp number failed", f"{who} stopped: {session.detail or 'failed'}.", key=key)
    detail = f" ({session.detail})" if session.detail else ""
    return Notice("WhatsApp number disconnected", f"{who} dropped; reconnecting{detail}.", key=key, transient=True)


class NoticePolicy:
    """Turns state changes into notices; remembers the last state of each thing it watches."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionState] = {}
        self._reported_drop: set[str] = set()
        self._relay: RelayLinkState | None = None
        self._locations: dict[str, LocationState] = {}

    def on_session(self, session: WhatsAppSession) -> Notice | None:
        previous = self._sessions.get(session.id)
        self._sessions[session.id] = session.state
        if session.state in _UP:
            self._reported_drop.discard(session.id)
            return None
        if previous is None or previous is session.state:
            return None
        if previous in _UP:
            self._reported_drop.add(session.id)
            return session_notice(session)
        if session.id in self._reported_drop and session.state.is_final:
            return session_notice(session)  # a drop turned into something the user must act on
        return None

    def on_session_removed(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
        self._reported_drop.discard(session_id)

    def on_relay(self, change: RelayStateChanged) -> Notice | None:
        previous, self._relay = self._relay, change.state
        if change.state is previous:
            return None
        if change.state is RelayLinkState.UNAUTHORIZED:
            return Notice("Relay refused the token",
                          "The relay no longer accepts this computer's token: paste a new relay token in "
                          "Settings. HighLevel replies wait in the relay meanwhile.", key="relay")
        if change.state is RelayLinkState.RECONNECTING and previous is RelayLinkState.CONNECTED:
            detail = f" ({change.detail})" if change.detail else ""
            return Notice("Relay connection lost", f"The link to the relay dropped{detail}; reconnecting.",
                          key="relay", transient=True)
        return None

    def relay_is_up(self) -> bool:
        return self._relay is RelayLinkState.CONNECTED

    def session_is_up(self, session_id: str) -> bool:
        return self._sessions.get(session_id) in _UP

    def on_location(self, location: Location) -> Notice | None:
        previous = self._locations.get(location.id)
        self._locations[location.id] = location.state
        if location.state is LocationState.NEEDS_RECONNECT and previous is LocationState.CONNECTED:
            return Notice("HighLevel needs you to reconnect",
                          f"HighLevel refused the saved sign-in for {location.name}. Press Reconnect in ghl-desktop.",
                          key=f"location:{location.id}")
        return None


def combine(notices: list[Notice]) -> Notice:
    """One notice for a batch: the notice itself, or a summary listing each."""
    if len(notices) == 1:
        return notices[0]
    lines = "\n".join(f"• {n.text}" for n in notices)
    return Notice(f"{len(notices)} problems need attention", lines, warning=any(n.warning for n in notices))


class NoticeCoalescer(QObject):
    """Collects notices for ``window_ms`` and shows one (``show(notice)``) per burst."""

    def __init__(
        self,
        show: Callable[[Notice], object],
        *,
        still_down: Callable[[Notice], bool] | None = None,
        window_ms: int = 1000,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._show = show
        self._still_down = still_down or (lambda _notice: True)
        self._pending: dict[str, Notice] = {}
        self._order = 0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(window_ms)
        self._timer.timeout.connect(self.flush)
        #: every notice shown so far (for the window's history and tests)
        self.shown: list[Notice] = []

    def add(self, notice: Notice | None) -> None:
        if notice is None:
            return
        key = notice.key or f"#{self._order}"
        self._order += 1
        self._pending.pop(key, None)
        self._pending[key] = notice  # later news about the same thing replaces the earlier
        if not self._timer.isActive():
            self._timer.start()

    @property
    def pending(self) -> list[Notice]:
        return list(self._pending.values())

    def flush(self) -> Notice | None:
        self._timer.stop()
        batch = [n for n in self._pending.values() if not n.transient or self._still_down(n)]
        self._pending.clear()
        if not batch:
            return None
        notice = combine(batch)
        self.shown.append(notice)
        self._show(notice)
        return notice

    def stop(self) -> None:
        self._timer.stop()
        self._pending.clear()




__all__ = ["MAX_SEPARATE", "Notice", "NoticeCenter", "NoticeCoalescer", "NoticePolicy", "Shown", "combine",
           "session_notice"]
