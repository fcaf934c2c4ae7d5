"""The job queue's payloads, typed: the one place that says which JSON each kind of job stores and
how it is read back.

A job's payload is JSON in the database (it must survive a restart and a worker on another machine).
Everything that writes one builds it here, everything that reads one decodes it here, so a field is
never spelled twice and a handler, the message log, the health counts and a retry cannot disagree on
where the location of a reply lives.

Kinds:
* ``wa.inbound`` — a WhatsApp event to bring into HighLevel: :class:`InboundPayload`;
* ``ghl.outbound_message`` / ``ghl.app_event`` — a provider webhook as the intake stored it
  (``{"event": {...}, "via": ..., ...}``; older rows hold the bare event): :class:`ProviderPayload`;
* ``ghl.status`` — a delivery status to report to HighLevel: :class:`StatusPayload`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INBOUND = "wa.inbound"
OUTBOUND = "ghl.outbound_message"
STATUS = "ghl.status"
APP_EVENT = "ghl.app_event"

#: where the counting queries find a job's number / location (health counts, waiting reasons)
INBOUND_SESSION_PATH: tuple[str, ...] = ("session_id",)
OUTBOUND_LOCATION_PATH: tuple[str, ...] = ("event", "locationId")


class PayloadError(ValueError):
    """A stored payload does not have the shape its kind needs (a bug or a hand-edited row)."""


@dataclass(frozen=True, slots=True)
class InboundPayload:
    session_id: str
    #: the normalised WhatsApp event (core.whatsapp incoming_to_payload)
    message: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "message": dict(self.message)}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> InboundPayload:
        session_id, message = payload.get("session_id"), payload.get("message")
        if not session_id or not isinstance(message, dict):
            raise PayloadError("an inbound job needs session_id and message")
        return cls(str(session_id), dict(message))


@dataclass(frozen=True, slots=True)
class StatusPayload:
    location_id: str
    message_id: str  # HighLevel's message id
    status: str  # HighLevel's word: delivered, read, failed…
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"location_id": self.location_id, "message_id": self.message_id, "status": self.status,
                "error": self.error}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> StatusPayload:
        try:
            location_id, message_id, status = payload["location_id"], payload["message_id"], payload["status"]
        except KeyError as exc:
            raise PayloadError(f"a status job needs {exc.args[0]}") from None
        error = payload.get("error")
        return cls(str(location_id), str(message_id), str(status), error if isinstance(error, str) else None)


@dataclass(frozen=True, slots=True)
class ProviderPayload:
    """A HighLevel provider/app webhook event plus how it arrived; ``extra`` keeps the rest of the
    stored keys (received_at, signature, retry bookkeeping) so a rebuilt job loses nothing."""

    event: dict[str, Any]
    via: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "event": dict(self.event)}
        if self.via is not None:
            out["via"] = self.via
        return out

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> ProviderPayload:
        event = payload.get("event")
        if not isinstance(event, dict):  # rows stored before the intake wrapped events
            return cls(dict(payload))
        via = payload.get("via")
        extra = {k: v for k, v in payload.items() if k not in ("event", "via")}
        return cls(dict(event), str(via) if via is not None else None, extra)

    @property
    def location_id(self) -> str | None:
        value = self.event.get("locationId")
        return str(value) if value else None

    @property
    def message_id(self) -> str | None:
        value = self.event.get("messageId")
        return str(value) if value else None

    @property
    def contact_id(self) -> str | None:
        value = self.event.get("contactId")
        return str(value) if value else None


__all__ = [
    "APP_EVENT", "INBOUND", "INBOUND_SESSION_PATH", "OUTBOUND", "OUTBOUND_LOCATION_PATH", "STATUS",
    "InboundPayload", "PayloadError", "ProviderPayload", "StatusPayload",
]
