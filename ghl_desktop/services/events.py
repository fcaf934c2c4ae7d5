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
