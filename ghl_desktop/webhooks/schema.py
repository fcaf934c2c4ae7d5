"""Shape checks for the webhook bodies we act on: ProviderOutboundMessage, INSTALL and UNINSTALL.

Hand-written on purpose: strict about the fields the bridge relies on (present, right type, not
empty) and lenient about fields HighLevel adds later (unknown keys pass through untouched). Every
refusal names the field so the log line tells an operator what HighLevel actually sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ghl_desktop.core.errors import MalformedWebhook

#: HighLevel ids are 20-char alphanumerics; provider/app ids 24-hex. We only bound the length so a
#: future id format still passes, but a megabyte "id" does not.
_MAX_ID = 128
_MAX_TEXT = 1_000_000


def _req_id(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise MalformedWebhook(f"field {name!r} must be a non-empty string")
    if len(value) > _MAX_ID or any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise MalformedWebhook(f"field {name!r} is not an id")
    return value


def _opt(body: Mapping[str, Any], name: str, *types: type) -> None:
    """Optional field: absent or null is fine, otherwise it must have one of ``types``."""
    value = body.get(name)
    if value is None:
        return
    # bool is an int subclass; never let True pass as a number
    if isinstance(value, bool) and bool not in types:
        raise MalformedWebhook(f"field {name!r} has the wrong type")
    if not isinstance(value, types):
        raise MalformedWebhook(f"field {name!r} has the wrong type")
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        raise MalformedWebhook(f"field {name!r} is too long")


def _opt_id(body: Mapping[str, Any], name: str) -> None:
    if body.get(name) is not None:
        _req_id(body, name)


def validate_provider_outbound(body: Mapping[str, Any]) -> None:
    """ProviderOutboundMessage (docs/highlevel-api.md §2.2): an agent's reply for us to deliver."""
    for name in ("locationId", "messageId", "contactId"):
        _req_id(body, name)
    kind = body.get("type")
    if not isinstance(kind, str) or not kind.strip() or len(kind) > 64:
        raise MalformedWebhook("field 'type' must be a non-empty string")
    for name in ("userId", "conversationProviderId", "conversationId", "emailMessageId", "webhookId"):
        _opt_id(body, name)
    for name in ("message", "phone", "emailFrom", "html", "subject"):
        _opt(body, name, str)
    _opt(body, "emailTo", str, list)
    attachments = body.get("attachments")
    if attachments is not None:
        if not isinstance(attachments, list) or len(attachments) > 100:
            raise MalformedWebhook("field 'attachments' must be a list of URLs")
        for url in attachments:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 8192:
                raise MalformedWebhook("field 'attachments' must be a list of http(s) URLs")
    _check_timestamp_type(body)


def _validate_app_common(body: Mapping[str, Any]) -> None:
    _req_id(body, "appId")
    _opt_id(body, "locationId")
    _opt_id(body, "companyId")
    if body.get("locationId") is None and body.get("companyId") is None:
        raise MalformedWebhook("an app event needs 'locationId' or 'companyId'")
    for name in ("versionId", "userId", "planId", "webhookId"):
        _opt_id(body, name)
    _check_timestamp_type(body)


def validate_install(body: Mapping[str, Any]) -> None:
    """INSTALL (docs/highlevel-api.md §5): agency installs carry companyId only; auto-installs may lack userId."""
    _validate_app_common(body)
    install_type = body.get("installType")
    if install_type is not None and install_type not in ("Location", "Company"):
        raise MalformedWebhook("field 'installType' must be 'Location' or 'Company'")
    _opt(body, "trial", dict)
    _opt(body, "whitelabelDetails", dict)
    _opt(body, "isWhitelabelCompany", bool)
    _opt(body, "companyName", str)


def validate_uninstall(body: Mapping[str, Any]) -> None:
    """UNINSTALL: ``{type, appId, locationId}`` or, agency level, ``companyId`` instead."""
    _validate_app_common(body)


def _check_timestamp_type(body: Mapping[str, Any]) -> None:
    if body.get("timestamp") is not None:
        parse_timestamp(body["timestamp"])


def parse_timestamp(value: Any) -> datetime:
    """HighLevel sends ISO-8601 (``2025-01-28T14:35:00Z``); epoch seconds/milliseconds are accepted too."""
    if isinstance(value, bool):
        raise MalformedWebhook("field 'timestamp' is not a time")
    if isinstance(value, int | float):
        seconds = value / 1000.0 if abs(value) > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise MalformedWebhook("field 'timestamp' is out of range") from exc
    if isinstance(value, str) and 0 < len(value) <= 64:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            raise MalformedWebhook("field 'timestamp' is not an ISO-8601 time") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise MalformedWebhook("field 'timestamp' is not a time")


APP_EVENT_VALIDATORS = {"INSTALL": validate_install, "UNINSTALL": validate_uninstall}

__all__ = [
    "APP_EVENT_VALIDATORS",
    "parse_timestamp",
    "validate_install",
    "validate_provider_outbound",
    "validate_uninstall",
]
