"""The checks every webhook passes before anything is stored, in a fixed order.

size (413) → signature (401) → JSON + schema (400) → timestamp window (401, a replay) → a
:class:`VerifiedEvent` with its dedupe and ordering keys. The desktop's endpoint and the relay share
this object, so both modes accept and refuse exactly the same deliveries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from ghl_desktop.core.errors import BadSignature, MalformedWebhook, WebhookTooLarge
from ghl_desktop.webhooks.schema import APP_EVENT_VALIDATORS, parse_timestamp, validate_provider_outbound
from ghl_desktop.webhooks.verify import SignatureScheme, SignatureVerifier

DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_TIMESTAMP_WINDOW = timedelta(minutes=5)

#: job kinds (the bridge consumes these from the JobQueue)
KIND_OUTBOUND_MESSAGE = "ghl.outbound_message"
KIND_APP_EVENT = "ghl.app_event"
#: only ever travels relay → desktop; never stored in the desktop's database (it is a credential)
KIND_OAUTH_CODE = "oauth.code"


class Route(StrEnum):
    """Which endpoint a delivery came in on."""

    PROVIDER = "provider"  # POST /ghl/provider/webhook — the conversation provider's Delivery URL
    APP = "app"  # POST /ghl/app/webhook — the app's Default Webhook URL (INSTALL / UNINSTALL)


@dataclass(frozen=True)
class VerifiedEvent:
    """A delivery that passed every check, ready to be stored."""

    kind: str
    event: dict[str, Any]
    dedupe_key: str
    ordering_key: str | None
    scheme: SignatureScheme = SignatureScheme.UNSIGNED
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def location_id(self) -> str | None:
        value = self.event.get("locationId")
        return value if isinstance(value, str) else None


def _body_hash(event: Mapping[str, Any]) -> str:
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def classify(route: Route | str, event: dict[str, Any]) -> tuple[str, str, str | None]:
    """Validate ``event`` for ``route``; return (kind, dedupe_key, ordering_key).

    Outbound messages dedupe on ``messageId`` (HighLevel's retries and our own echo carry the same id)
    and run in order per contact; app events dedupe on ``webhookId`` (or the body's hash when a
    delivery has none) and run in order per location/company so an UNINSTALL never overtakes its
    INSTALL."""
    if Route(route) is Route.PROVIDER:
        validate_provider_outbound(event)
        return (
            KIND_OUTBOUND_MESSAGE,
            f"ghl:msg:{event['messageId']}",
            f"ghl:conv:{event['locationId']}:{event['contactId']}",
        )
    kind = event.get("type")
    validator = APP_EVENT_VALIDATORS.get(kind) if isinstance(kind, str) else None
    if validator is None:
        raise MalformedWebhook("unsupported app event type (expected INSTALL or UNINSTALL)")
    validator(event)
    webhook_id = event.get("webhookId")
    dedupe = f"ghl:wh:{webhook_id}" if isinstance(webhook_id, str) else f"ghl:body:{_body_hash(event)}"
    owner = event.get("locationId") or event.get("companyId")
    return KIND_APP_EVENT, dedupe, f"ghl:app:{owner}"


def classify_kind(kind: str, event: dict[str, Any]) -> tuple[str, str | None]:
    """Re-derive (dedupe_key, ordering_key) for an event that arrived with its kind (relay stream)."""
    if kind == KIND_OUTBOUND_MESSAGE:
        _, dedupe, ordering = classify(Route.PROVIDER, event)
    elif kind == KIND_APP_EVENT:
        _, dedupe, ordering = classify(Route.APP, event)
    else:
        raise MalformedWebhook(f"unknown event kind {kind!r}")
    return dedupe, ordering


@dataclass
class WebhookGate:
    """Size, signature, shape and freshness checks; no I/O, no storage."""

    verifier: SignatureVerifier
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    timestamp_window: timedelta = DEFAULT_TIMESTAMP_WINDOW
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def check(self, route: Route | str, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        if len(body) > self.max_body_bytes:
            raise WebhookTooLarge(f"body is over {self.max_body_bytes} bytes")
        scheme = self.verifier.verify(body, headers)
        try:
            event = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise MalformedWebhook("body is not JSON") from exc
        if not isinstance(event, dict):
            raise MalformedWebhook("body is not a JSON object")
        kind, dedupe, ordering = classify(route, event)
        if event.get("timestamp") is not None:
            sent = parse_timestamp(event["timestamp"])
            now = self.clock()
            if abs(now - sent) > self.timestamp_window:
                raise BadSignature("timestamp is outside the accepted window (stale or replayed delivery)")
        return VerifiedEvent(kind=kind, event=event, dedupe_key=dedupe, ordering_key=ordering, scheme=scheme,
                             received_at=self.clock())


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TIMESTAMP_WINDOW",
    "KIND_APP_EVENT",
    "KIND_OAUTH_CODE",
    "KIND_OUTBOUND_MESSAGE",
    "Route",
    "VerifiedEvent",
    "WebhookGate",
    "classify",
    "classify_kind",
]
