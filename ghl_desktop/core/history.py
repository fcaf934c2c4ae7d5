"""History on link (issue 15): which messages of a WhatsApp history sync are imported into HighLevel,
and how far an import got. Pure: no storage, no network.

- ``history_days`` (setting / ``GHL_DESKTOP_HISTORY_DAYS``; a number may override it) is how many days
  back an import reaches; 0 turns it off (the default), at most :data:`MAX_HISTORY_DAYS`.
- The messages within those days are imported oldest first (:func:`select_history`), each once: a
  message already carried live (same WhatsApp id) is not imported again, and vice versa.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ghl_desktop.core.errors import ConfigError
from ghl_desktop.core.whatsapp import HistorySync, IncomingMessage

#: the furthest back an import may reach (WhatsApp's own history sync offers about three months)
MAX_HISTORY_DAYS = 90

#: what a history item is: waiting for its turn, in HighLevel, not imported because the user cancelled, or
#: refused for good (its job dead-lettered; the message log says why and can retry it)
PENDING = "pending"
IMPORTED = "imported"
CANCELLED = "cancelled"
FAILED = "failed"

CANCELLED_NOTE = "not imported: the history import was cancelled"


def check_history_days(value: object, what: str = "history_days") -> int:
    """``value`` as a whole number of days 0..MAX_HISTORY_DAYS, else ConfigError saying what is allowed."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a whole number of days from 0 (off) to {MAX_HISTORY_DAYS}, not {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"{what} must be a whole number of days from 0 (off) to {MAX_HISTORY_DAYS}, "
                              f"not {value!r}") from None
    if not isinstance(value, int):
        raise ConfigError(f"{what} must be a whole number of days from 0 (off) to {MAX_HISTORY_DAYS}, not {value!r}")
    if value < 0 or value > MAX_HISTORY_DAYS:
        raise ConfigError(f"{what} must be from 0 (off) to {MAX_HISTORY_DAYS} days, not {value} "
                          f"(WhatsApp offers at most about three months of history)")
    return value


def select_history(sync: HistorySync, days: int, now: datetime, *,
                   ignore_groups: bool = False) -> list[IncomingMessage]:
    """The messages of one history chunk to import: those of the last ``days`` days (none when 0),
    oldest first across all its chats (ties keep the chunk's order)."""
    if days <= 0:
        return []
    cutoff = now - timedelta(days=days)
    picked: list[IncomingMessage] = []
    for chat in sync.chats:
        if ignore_groups and chat.is_group:
            continue
        picked.extend(m for m in chat.messages
                      if m.timestamp >= cutoff and not (ignore_groups and m.is_group))
    return sorted(picked, key=lambda m: m.timestamp)


@dataclass(frozen=True, slots=True)
class HistoryChanged:
    """A number's history import moved on (stored, imported, cancelled, its days changed): published on
    the event bus by services/bridge/history.py; the window re-reads the progress."""

    session_id: str


@dataclass(frozen=True, slots=True)
class HistoryProgress:
    """One number's history import, as the window shows it: ``imported`` of ``total`` in HighLevel."""

    session_id: str
    #: the number's own history_days (None: it follows the setting)
    days: int | None
    total: int = 0
    imported: int = 0
    cancelled: int = 0
    failed: int = 0
    #: the user cancelled it: what was still waiting is not imported, later chunks are dropped
    stopped: bool = False

    @property
    def pending(self) -> int:
        return max(0, self.total - self.imported - self.cancelled - self.failed)

    @property
    def running(self) -> bool:
        return self.pending > 0 and not self.stopped

    def summary(self) -> str:
        if self.total == 0:
            return "cancelled" if self.stopped else "nothing imported"
        text = f"{self.imported} of {self.total} imported"
        if self.failed:
            text += f", {self.failed} failed (see the message log)"
        if self.stopped:
            return f"{text} (cancelled)"
        return text if self.pending else f"{text}, done"


def total_of(progress: Iterable[HistoryProgress]) -> tuple[int, int]:
    """(imported, total) over several numbers."""
    imported = total = 0
    for p in progress:
        imported += p.imported
        total += p.total
    return imported, total
