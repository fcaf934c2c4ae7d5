"""The job payloads are written and read in one place (core.jobs): round trips, the legacy bare
provider event, and a readable error for a row that lost a field."""

from __future__ import annotations

import json

import pytest

from ghl_desktop.core.jobs import InboundPayload, PayloadError, ProviderPayload, StatusPayload


def test_each_payload_survives_the_database_round_trip() -> None:
    inbound = InboundPayload("s1", {"id": "WA1", "chat": "4917@s.whatsapp.net", "text": "hi"})
    status = StatusPayload("loc", "G1", "delivered", None)
    provider = ProviderPayload({"type": "SMS", "locationId": "loc", "messageId": "G2", "contactId": "C"}, "relay",
                               {"received_at": "2026-12-03T12:00:00+00:00"})
    for value in (inbound, status, provider):
        stored = json.loads(json.dumps(value.to_json()))  # what the job queue keeps
        assert type(value).from_json(stored) == value
    assert (provider.location_id, provider.message_id, provider.contact_id) == ("loc", "G2", "C")


def test_a_bare_provider_event_from_older_rows_is_still_read() -> None:
    bare = {"type": "SMS", "locationId": "loc", "messageId": "G3", "message": "hello"}
    payload = ProviderPayload.from_json(bare)
    assert payload.event == bare and payload.via is None and payload.message_id == "G3"


@pytest.mark.parametrize(("kind", "payload"), [
    (InboundPayload, {"message": {"id": "x"}}),
    (InboundPayload, {"session_id": "s1", "message": "not a dict"}),
    (StatusPayload, {"location_id": "loc", "status": "read"}),
])
def test_a_payload_missing_its_fields_is_a_readable_error(kind: type, payload: dict[str, object]) -> None:
    with pytest.raises(PayloadError, match="job needs"):
        kind.from_json(payload)
