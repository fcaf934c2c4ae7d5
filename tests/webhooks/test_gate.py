"""Size, JSON, schema and freshness checks, and the dedupe/ordering keys they produce."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ghl_desktop.core.errors import BadSignature, MalformedWebhook, WebhookError, WebhookTooLarge
from ghl_desktop.webhooks.gate import KIND_APP_EVENT, KIND_OUTBOUND_MESSAGE, Route, WebhookGate
from ghl_desktop.webhooks.verify import SignatureScheme, SignatureVerifier
from tests.webhooks.signing import SigningKeys, dump, install_event, outbound_message

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.fixture
def gate(signing_keys: SigningKeys) -> WebhookGate:
    verifier = SignatureVerifier.from_values(signing_keys.ed25519_public_pem, signing_keys.rsa_public_pem)
    return WebhookGate(verifier, max_body_bytes=4096, clock=lambda: NOW)


def check(gate: WebhookGate, keys: SigningKeys, route: Route, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else dump(body)
    return gate.check(route, raw, keys.headers(raw))


def test_outbound_message_keys(gate: WebhookGate, signing_keys: SigningKeys) -> None:
    body = outbound_message(messageId="GKJxs4P5L8dWc5CFUITM", someFutureField={"x": 1})
    event = check(gate, signing_keys, Route.PROVIDER, body)
    assert event.kind == KIND_OUTBOUND_MESSAGE
    assert event.dedupe_key == "ghl:msg:GKJxs4P5L8dWc5CFUITM"
    assert event.ordering_key == "ghl:conv:GKAWb4yu7A4LSc0skQ6g:GKBhT6BfwY9mjzXAU3sq"
    assert event.scheme is SignatureScheme.ED25519
    assert event.event["someFutureField"] == {"x": 1}  # unknown fields pass through untouched
    assert event.location_id == "GKAWb4yu7A4LSc0skQ6g"


def test_workflow_send_without_user_id_and_custom_type(gate: WebhookGate, signing_keys: SigningKeys) -> None:
    body = outbound_message(type="Custom")
    del body["userId"], body["attachments"], body["phone"]
    assert check(gate, signing_keys, Route.PROVIDER, body).kind == KIND_OUTBOUND_MESSAGE


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"messageId": None}, "messageId"),
        ({"messageId": ""}, "messageId"),
        ({"messageId": 12345}, "messageId"),
        ({"messageId": "has space"}, "messageId"),
        ({"locationId": ["x"]}, "locationId"),
        ({"contactId": "x" * 500}, "contactId"),
        ({"type": 1}, "type"),
        ({"message": {"text": "hi"}}, "message"),
        ({"attachments": "https://x/y.png"}, "attachments"),
        ({"attachments": ["ftp://x/y.png"]}, "attachments"),
        ({"attachments": [1]}, "attachments"),
        ({"userId": 7}, "userId"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": True}, "timestamp"),
    ],
)
def test_provider_schema_refusals(gate: WebhookGate, signing_keys: SigningKeys, change: dict[str, Any],
                                  match: str) -> None:
    body = outbound_message()
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    with pytest.raises(MalformedWebhook, match=match):
        check(gate, signing_keys, Route.PROVIDER, body)


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'"text"', b"\xff\xfe{}", b"[" * 3000 + b"]" * 3000])
def test_non_object_bodies_are_malformed(gate: WebhookGate, signing_keys: SigningKeys, raw: bytes) -> None:
    with pytest.raises((MalformedWebhook, WebhookTooLarge)):
        check(gate, signing_keys, Route.PROVIDER, raw)


def test_deeply_nested_json_is_malformed_not_a_crash(signing_keys: SigningKeys) -> None:
    verifier = SignatureVerifier.from_values(signing_keys.ed25519_public_pem, signing_keys.rsa_public_pem)
    gate = WebhookGate(verifier, max_body_bytes=1_000_000)
    raw = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(MalformedWebhook):
        gate.check(Route.PROVIDER, raw, signing_keys.headers(raw))


def test_too_large_is_refused_before_the_signature(gate: WebhookGate) -> None:
    with pytest.raises(WebhookTooLarge):
        gate.check(Route.PROVIDER, b"x" * 4097, {})


def test_signature_is_checked_before_the_body_is_parsed(gate: WebhookGate) -> None:
    with pytest.raises(BadSignature):
        gate.check(Route.PROVIDER, b"not json", {"Content-Type": "application/json"})


@pytest.mark.parametrize("depth", [65, 100, 955, 979, 5000])
def test_nesting_deeper_than_64_is_refused_with_400(gate: WebhookGate, signing_keys: SigningKeys,
                                                     depth: int) -> None:
    """The stream poison pill: ~980 levels parsed at the gate but could not be stored downstream."""
    big = WebhookGate(gate.verifier, max_body_bytes=1 << 20, clock=lambda: NOW)
    raw = dump(outbound_message())[:-1] + b', "deep": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    with pytest.raises(MalformedWebhook, match="deeper than 64"):
        big.check(Route.PROVIDER, raw, signing_keys.headers(raw))


def test_nesting_of_exactly_64_is_accepted(gate: WebhookGate, signing_keys: SigningKeys) -> None:
    raw = dump(outbound_message())[:-1] + b', "deep": ' + b"[" * 63 + b"]" * 63 + b"}"
    assert gate.check(Route.PROVIDER, raw, signing_keys.headers(raw)).kind == KIND_OUTBOUND_MESSAGE


@pytest.mark.parametrize("unsigned", [False, True])
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({}, 415),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "text/plain", "Origin": "null"}, 403),
    ],
)
def test_browser_requests_are_refused_in_every_mode(signing_keys: SigningKeys, unsigned: bool,
                                                     headers: dict[str, str], status: int) -> None:
    """A web page can POST text/plain (no preflight) and always sends Origin: refused, signed or not."""
    verifier = SignatureVerifier.from_values(signing_keys.ed25519_public_pem, signing_keys.rsa_public_pem,
                                             accept_unsigned=unsigned)
    gate = WebhookGate(verifier, clock=lambda: NOW)
    raw = dump(outbound_message())
    sent = dict(headers) if unsigned else {**signing_keys.headers(raw), **headers}
    if not headers.get("Content-Type"):
        sent.pop("Content-Type", None)
    with pytest.raises(WebhookError) as refused:
        gate.check(Route.PROVIDER, raw, sent)
    assert refused.value.http_status == status


def test_json_with_charset_is_accepted(gate: WebhookGate, signing_keys: SigningKeys) -> None:
    raw = dump(outbound_message())
    headers = {**signing_keys.headers(raw), "Content-Type": "application/json; charset=utf-8"}
    assert gate.check(Route.PROVIDER, raw, headers).kind == KIND_OUTBOUND_MESSAGE


def test_install_events(gate: WebhookGate, signing_keys: SigningKeys) -> None:
    body = install_event(webhookId="abc123xyz", timestamp=NOW.isoformat())
    event = check(gate, signing_keys, Route.APP, body)
    assert (event.kind, event.dedupe_key) == (KIND_APP_EVENT, "ghl:wh:abc123xyz")
    assert event.ordering_key == "ghl:app:otg8dTQqGLh3Q6iQI55w"
    agency = install_event(installType="Company", timestamp=NOW.isoformat())
    del agency["locationId"]
    assert check(gate, signing_keys, Route.APP, agency).ordering_key == "ghl:app:otg8dTQqGLh3Q6iQI55x"


def test_uninstall_without_webhook_id_dedupes_on_the_body(gate: WebhookGate, signing_keys: SigningKeys) -> None:
    body = {"type": "UNINSTALL", "appId": "ve9EPM428h8vShlRW1KT", "locationId": "otg8dTQqGLh3Q6iQI55w"}
    first = check(gate, signing_keys, Route.APP, body)
    again = check(gate, signing_keys, Route.APP, dict(reversed(list(body.items()))))
    assert first.dedupe_key.startswith("ghl:body:")
    assert first.dedupe_key == again.dedupe_key


@pytest.mark.parametrize(
    "body",
    [
        {"type": "INSTALL", "appId": "a1"},  # neither locationId nor companyId
        {"type": "UNINSTALL", "locationId": "l1"},  # no appId
        {"type": "INSTALL", "appId": "a1", "locationId": "l1", "installType": "Galaxy"},
        {"type": "INSTALL", "appId": "a1", "locationId": "l1", "trial": "yes"},
        {"type": "INSTALL", "appId": "a1", "locationId": "l1", "isWhitelabelCompany": "no"},
        {"type": "ContactCreate", "locationId": "l1"},
        {"appId": "a1", "locationId": "l1"},
    ],
)
def test_app_schema_refusals(gate: WebhookGate, signing_keys: SigningKeys, body: dict[str, Any]) -> None:
    with pytest.raises(MalformedWebhook):
        check(gate, signing_keys, Route.APP, body)


def test_provider_message_on_the_app_endpoint_is_refused(gate: WebhookGate, signing_keys: SigningKeys) -> None:
    with pytest.raises(MalformedWebhook, match="unsupported app event"):
        check(gate, signing_keys, Route.APP, outbound_message())


@pytest.mark.parametrize(
    ("sent", "accepted"),
    [
        (NOW - timedelta(minutes=4, seconds=59), True),
        (NOW - timedelta(minutes=65), True),  # HighLevel's 6th retry after a 429, ~10 min apart
        (NOW - timedelta(hours=1, minutes=59), True),
        (NOW + timedelta(minutes=4), True),  # small clock skew
        (NOW - timedelta(hours=2, seconds=1), False),
        (NOW + timedelta(minutes=6), False),
    ],
)
def test_timestamp_window(gate: WebhookGate, signing_keys: SigningKeys, sent: datetime, accepted: bool) -> None:
    for stamp in (sent.isoformat().replace("+00:00", "Z"), int(sent.timestamp() * 1000)):
        body = install_event(timestamp=stamp)
        if accepted:
            assert check(gate, signing_keys, Route.APP, body).kind == KIND_APP_EVENT
        else:
            with pytest.raises(BadSignature, match="window"):
                check(gate, signing_keys, Route.APP, body)


def test_timestamp_window_is_configurable(signing_keys: SigningKeys) -> None:
    verifier = SignatureVerifier.from_values(signing_keys.ed25519_public_pem, signing_keys.rsa_public_pem)
    wide = WebhookGate(verifier, timestamp_window=timedelta(hours=4), clock=lambda: NOW)
    body = install_event(timestamp=(NOW - timedelta(hours=3)).isoformat())
    assert check(wide, signing_keys, Route.APP, body).kind == KIND_APP_EVENT
    narrow = WebhookGate(verifier, timestamp_window=timedelta(minutes=5), clock=lambda: NOW)
    with pytest.raises(BadSignature, match="window"):
        check(narrow, signing_keys, Route.APP, install_event(timestamp=(NOW - timedelta(minutes=6)).isoformat()))


def test_json_roundtrip_of_the_event(gate: WebhookGate, signing_keys: SigningKeys) -> None:
    body = outbound_message(message="héllo 👋")
    event = check(gate, signing_keys, Route.PROVIDER, body)
    assert json.loads(json.dumps(event.event)) == body
