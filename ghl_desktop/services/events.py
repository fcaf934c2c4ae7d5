"""Events the services publish on the :class:`~ghl_desktop.core.events.EventBus`.

Immutable, so the UI bridge, the tray and tests can hold them without copying.
"""

from __future__ import annotations

from dataclasses import dataclass

from ghl_desktop.core.models import WhatsAppSession


@dataclass(frozen=True, slots=True)
class SessionChanged:
    """A session's stored row after a change (state, detail, identity)."""

    session: WhatsAppSession


@dataclass(frozen=True, slots=True)
class SessionQr:
    """A fresh QR code to show for a session waiting for its scan (replaces the previous one)."""

    session_id: str
    code: str
    expires_in: float


@dataclass(frozen=True, slots=True)
class SessionPairCode:
    """A pairing code to type on the phone (Linked devices → Link with phone number)."""

    session_id: str
    code: str


@dataclass(frozen=True, slots=True)
class SessionRemoved:
    session_id: str


@dataclass(frozen=True, slots=True)
class RunnerProblem:
    """The job runner could not record what happened to a job (``action``: complete, retry,
    dead-letter, lease, renew), e.g. the database stayed locked. Nothing is lost: the job stays leased
    and runs again when its lease expires (handlers are idempotent); this makes the failure visible."""

    action: str
    error: str
    job_id: int | None = None
    kind: str | None = None
