"""The checks every webhook passes before anything is stored, in a fixed order.

size (413) → browser ``Origin`` (403) → ``Content-Type: application/json`` (415) → signature (401) →
JSON, nesting depth ≤ 64 and schema (400) → timestamp window (401, a replay) → a :class:`VerifiedEvent`
with its dedupe and ordering keys. The desktop's endpoint and the relay share this object, so both
modes accept and refuse exactly the same deliveries.

Why the Origin and Content-Type checks run in every mode (signed or not): HighLevel's servers send
``application/json`` and never an ``Origin`` header; a web page can make a browser POST to a
loopback or public endpoint, but only as a "simple" request (``text/plain``, form types) unless
a CORS preflight succeeds, and a browser always sends ``Origin`` on a cross-site POST. Refusing both
closes the "any website can make the desktop send WhatsApp messages" hole of unsigned mode and costs
nothing for genuine deliveries.

Why the depth bound: a body nested ~980 deep parses here but cannot be stored or re-serialised
further down (RecursionError), which turned into a 429 forever or a stalled relay stream. No
HighLevel body comes near 64 levels, so anything deeper is refused with 400 before it is stored.

Timestamp window: HighLevel retries a delivery only after a 429, up to 6 times about every 10 minutes
with jitter, with the same body and the same ``timestamp``. A 5-minute window would refuse (401, final)
the retry of a delivery we asked to be retried, losing it. The window therefore covers the retry
horizon with margin (2 hours in the past, 5 minutes of clock skew into the future). Replays inside
the window are stopped by the ``webhookId``/``messageId`` dedupe, whose keys are kept far longer
(7 days on the relay, a week after completion on the desktop).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from ghl_desktop.core.errors import BadSignature, MalformedWebhook, WebhookError, WebhookTooLarge
from ghl_desktop.webhooks.schema import APP_EVENT_VALIDATORS, parse_timestamp, validate_provider_outbound
from ghl_desktop.webhooks.verify import SignatureScheme, SignatureVerifier

DEFAULT_MAX_BODY_BYTES = 256 * 1024
#: how old a delivery's ``timestamp`` may be: HighLevel's whole 429-retry horizon (6 × ~10 min + jitter)
DEFAULT_TIMESTAMP_WINDOW = timedelta(hours=2)
#: how far in the future a ``timestamp`` may be (clock skew between HighLevel and us)
DEFAULT_FUTURE_SKEW = timedelta(minutes=5)
#: deepest JSON nesting accepted on any endpoint (HighLevel's bodies are 3-4 levels deep)
MAX_JSON_DEPTH = 64

#: job kinds (the bridge consumes these from the JobQueue)
KIND_OUTBOUND_MESSAGE = "ghl.outbound_message"
KIND_APP_EVENT = "ghl.app_event"
#: only ever travels relay → desktop; never stored in the desktop's database (it is a credential)
KIND_OAUTH_CODE = "oauth.code"


class Route(StrEnum):
    """Which endpoint a delivery came in on."""

    PROVIDER = "provider"  # POST /ghl/provider/webhook — the conversation provider's Delivery URL
    APP = "app"  # POST /ghl/app/webhook — the app's Default Webhook URL (INSTALL / UNINSTALL)


class BrowserOrigin(WebhookError):
    """A request carrying a browser ``Origin``: a web page, never HighLevel."""

    http_status = 403


class WrongContentType(WebhookError):
    http_status = 415


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``{}`` 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_JSON_DEPTH:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def parse_json_object(body: bytes | str) -> dict[str, Any]:
    """``body`` as a JSON object nested at most :data:`MAX_JSON_DEPTH` deep, else MalformedWebhook (400)."""
    try:
        event = json.loads(body)
    except RecursionError as exc:
        raise MalformedWebhook(f"body is nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedWebhook("body is not JSON") from exc
    if not isinstance(event, dict):
        raise MalformedWebhook("body is not a JSON object")
    if json_depth(event) > MAX_JSON_DEPTH:
        raise MalformedWebhook(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    return event


def check_request_headers(headers: Mapping[str, str]) -> None:
    """Refuse what only a browser sends (``Origin``) and anything that is not ``application/json``."""
    if headers.get("Origin") is not None:
        raise BrowserOrigin("requests from web pages are not accepted")
    content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise WrongContentType("Content-Type must be application/json")


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
    future_skew: timedelta = DEFAULT_FUTURE_SKEW
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def check(self, route: Route | str, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        if len(body) > self.max_body_bytes:
            raise WebhookTooLarge(f"body is over {self.max_body_bytes} bytes")
        check_request_headers(headers)
        scheme = self.verifier.verify(body, headers)
        event = parse_json_object(body)
        kind, dedupe, ordering = classify(route, event)
        if event.get("timestamp") is not None:
            sent = parse_timestamp(event["timestamp"])
            now = self.clock()
            if now - sent > self.timestamp_window or sent - now > self.future_skew:
                raise BadSignature("timestamp is outside the accepted window (stale or replayed delivery)")
        return VerifiedEvent(kind=kind, event=event, dedupe_key=dedupe, ordering_key=ordering, scheme=scheme,
                             received_at=self.clock())


__all__ = [
    "DEFAULT_FUTURE_SKEW",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_TIMESTAMP_WINDOW",
    "KIND_APP_EVENT",
    "KIND_OAUTH_CODE",
    "KIND_OUTBOUND_MESSAGE",
    "MAX_JSON_DEPTH",
    "BrowserOrigin",
    "Route",
    "VerifiedEvent",
    "WebhookGate",
    "WrongContentType",
    "check_request_headers",
    "classify",
    "classify_kind",
    "json_depth",
    "parse_json_object",
]
