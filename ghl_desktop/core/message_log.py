"""The message log as the services and the UI see it: which messages (a filter), in which order (a
sort), and what one row and one message's details hold. Qt-free and storage-free.

The log covers all history: the storage answers a filter and a sort with the matching message ids
only (8 bytes each), and rows are read on demand, a page at a time (``MessageLogQuery`` in
``core.ports``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ghl_desktop.core.models import Direction, MessageKind, MessageStatus


class LogColumn(StrEnum):
    """The log's columns, in display order; every one sorts (in SQL)."""

    TIME = "time"
    DIRECTION = "direction"
    NUMBER = "number"
    LOCATION = "location"
    CONTACT = "contact"
    KIND = "kind"
    STATUS = "status"
    TEXT = "text"


LOG_COLUMNS: tuple[LogColumn, ...] = tuple(LogColumn)


@dataclass(frozen=True, slots=True)
class LogSort:
    column: LogColumn = LogColumn.TIME
    descending: bool = True


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which messages the log shows. Empty fields do not filter; ``statuses`` empty means all.

    ``text`` matches (case-insensitively, as a substring) the message text, the attachment name, the
    chat's phone/JID and the contact's name and phone — "Maria" finds Maria's messages."""

    location_id: str | None = None
    session_id: str | None = None
    direction: Direction | None = None
    statuses: frozenset[MessageStatus] = frozenset()
    since: datetime | None = None  # inclusive, timezone-aware
    until: datetime | None = None  # exclusive, timezone-aware
    text: str = ""

    @property
    def is_empty(self) -> bool:
        return (
            self.location_id is None
            and self.session_id is None
            and self.direction is None
            and not self.statuses
            and self.since is None
            and self.until is None
            and not self.text.strip()
        )


#: the longest text a row carries (the details pane reads the whole message)
ROW_TEXT_CHARS = 300


@dataclass(frozen=True, slots=True)
class LogRow:
    """One line of the log: what the table shows, nothing more."""

    id: int
    time: datetime
    direction: Direction
    kind: MessageKind
    status: MessageStatus
    location_id: str
    chat_jid: str
    session_id: str | None = None
    number: str | None = None  # the WhatsApp number (E.164) that carried it
    location_name: str | None = None
    contact_name: str | None = None
    contact_phone: str | None = None  # E.164, from the contact link or the chat's JID
    text: str = ""  # body (or attachment name), at most ROW_TEXT_CHARS
    error: str | None = None

    @property
    def contact_label(self) -> str:
        """"Maria Lopez (+34600111222)", "+34600111222", or the chat JID."""
        phone = self.contact_phone or phone_of_jid(self.chat_jid)
        if self.contact_name and phone:
            return f"{self.contact_name} ({phone})"
        if self.contact_name:
            return self.contact_name
        if phone:
            return phone
        user, _, server = self.chat_jid.partition("@")
        return f"group {user}" if server == "g.us" else self.chat_jid


@dataclass(frozen=True, slots=True)
class LogJob:
    """A job that carried (or carries) a message; its payload is already redacted text."""

    id: int
    kind: str
    state: str
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    payload: str


@dataclass(frozen=True, slots=True)
class LogDetails:
    """Everything the details pane shows about one message."""

    row: LogRow
    wa_message_id: str | None
    ghl_message_id: str | None
    sender_jid: str | None
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime
    body: str | None
    media_ref: str | None
    media_mime: str | None
    media_name: str | None
    media_size: int | None
    from_me: bool
    jobs: tuple[LogJob, ...] = ()
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that gave up: what it was doing, when, after how many attempts, and why."""

    job_id: int
    kind: str
    attempts: int
    reason: str
    gave_up_at: datetime
    created_at: datetime
    message_id: int | None = None  # the message it carried, when it carried one
    summary: str = ""  # "to +34600111222: Hello…" — what it was about


@dataclass(frozen=True, slots=True)
class FilterChoice:
    """One entry of a location or number filter: its id and the label people read."""

    id: str
    label: str


@dataclass(frozen=True, slots=True)
class RetryResult:
    """What a Retry did; ``message`` is one sentence for the user."""

    requeued: int
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def phone_of_jid(jid: str) -> str | None:
    """"+34600111222" for ``34600111222@s.whatsapp.net`` (device suffixes dropped); None otherwise."""
    user, _, server = jid.partition("@")
    user = user.split(":", 1)[0]
    if server == "s.whatsapp.net" and user.isdigit():
        return "+" + user
    return None


__all__ = [
    "LOG_COLUMNS",
    "ROW_TEXT_CHARS",
    "DeadLetter",
    "FilterChoice",
    "LogColumn",
    "LogDetails",
    "LogFilter",
    "LogJob",
    "LogRow",
    "LogSort",
    "RetryResult",
    "phone_of_jid",
]
