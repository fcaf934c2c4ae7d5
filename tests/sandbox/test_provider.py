"""Provider messages, contacts and conversations: HighLevel's behaviours a bridge must cope with."""

from __future__ import annotations

import httpx
import pytest

from ghl_desktop.sandbox.server import RunningSandbox
from tests.sandbox.api_helpers import CONTACTS, auth, inbound, location_install, state, upsert


async def _setup(client: httpx.AsyncClient, sb: RunningSandbox, phone: str = "+14155550111") -> tuple[str, str, str]:
    loc = sb.location_ids[0]
    token = (await location_install(client, sb, loc))["access_token"]
    contact = await upsert(client, token, loc, phone, name="Ann Lee")
    return loc, token, contact.json()["contact"]["id"]


@pytest.mark.asyncio
async def test_version_header_missing_or_invalid_is_401_and_counted(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, _ = await _setup(client, sandbox)
        body = {"locationId": loc, "phone": "+14155550112"}
        missing = await client.post("/contacts/upsert", headers={"Authorization": f"Bearer {token}"}, json=body)
        assert missing.status_code == 401
        assert missing.json()["message"] == "version header was not found."
        invalid = await client.post("/contacts/upsert", headers=auth(token, "2020-01-01"), json=body)
        assert invalid.status_code == 401 and invalid.json()["message"] == "version header is invalid"
        # another published version is accepted like HighLevel does, but counted as off-spec
        other = await client.post("/contacts/upsert", headers=auth(token, "2021-04-15"), json=body)
        assert other.status_code == 200
        snap = await state(client)
        assert snap["validation_failures"] == 3
        assert "declares 2021-07-28" in snap["validation_failure_details"][-1]["reasons"][0]
        # the version check comes before the token check (a 401 that is not an auth failure)
        no_token = await client.post("/contacts/upsert", json=body)
        assert no_token.json()["message"] == "version header was not found."


@pytest.mark.asyncio
async def test_inbound_creates_thread_and_listing_finds_it_by_alt_id(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, contact_id = await _setup(client, sandbox)
        first = await inbound(client, sandbox, token, contact_id, "hello", altId="wamid-1",
                              date="2026-01-02T03:04:05.000Z", attachments=["https://x/a.png"])
        assert first.status_code == 200
        body = first.json()
        assert body["success"] is True and body["contactId"] == contact_id and body["messageId"]
        second = await inbound(client, sandbox, token, contact_id, "sent from phone", direction="outbound",
                               altId="wamid-2", conversationId=body["conversationId"])
        assert second.json()["conversationId"] == body["conversationId"]
        listing = await client.get(f"/conversations/{body['conversationId']}/messages", headers=auth(token),
                                   params={"limit": 1})
        page = listing.json()["messages"]
        assert page["nextPage"] is True and len(page["messages"]) == 1
        assert page["messages"][0]["altId"] == "wamid-2" and page["messages"][0]["direction"] == "outbound"
        rest = await client.get(f"/conversations/{body['conversationId']}/messages", headers=auth(token),
                                params={"lastMessageId": page["lastMessageId"]})
        older = rest.json()["messages"]["messages"]
        assert [m["altId"] for m in older] == ["wamid-1"]
        assert older[0]["direction"] == "inbound" and older[0]["attachments"] == ["https://x/a.png"]
        assert older[0]["dateAdded"] == "2026-01-02T03:04:05.000Z"
        one = await client.get(f"/conversations/messages/{body['messageId']}", headers=auth(token))
        assert one.status_code == 200 and one.json()["body"] == "hello"
        search = await client.get("/conversations/search", headers=auth(token),
                                  params={"locationId": loc, "contactId": contact_id})
        assert [c["id"] for c in search.json()["conversations"]] == [body["conversationId"]]
        assert search.json()["total"] == 1


@pytest.mark.asyncio
async def test_direction_defaults_to_outbound(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        _, token, contact_id = await _setup(client, sandbox)
        r = await client.post("/conversations/messages/inbound", headers=auth(token), json={
            "type": "Custom", "contactId": contact_id, "conversationProviderId": sandbox.provider_id,
            "message": "no direction"})
        assert r.status_code == 200
        assert sandbox.state.messages[r.json()["messageId"]].direction == "outbound"


@pytest.mark.asyncio
async def test_inbound_without_provider_id_is_dropped_with_empty_201(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        _, token, contact_id = await _setup(client, sandbox)
        r = await client.post("/conversations/messages/inbound", headers=auth(token), json={
            "type": "Custom", "contactId": contact_id, "message": "lost", "direction": "inbound"})
        assert r.status_code == 201 and r.content == b""
        snap = await state(client)
        assert snap["messages"] == []
        assert snap["validation_failures"] == 1  # counted: the spec requires the provider id


@pytest.mark.asyncio
async def test_wrong_provider_id_is_400(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        _, token, contact_id = await _setup(client, sandbox)
        r = await inbound(client, sandbox, token, contact_id, conversationProviderId="0" * 24)
        assert r.status_code == 400 and r.json()["message"] == "Invalid conversationProviderId"


@pytest.mark.asyncio
async def test_only_the_provider_app_location_token_may_post_provider_messages(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, _token, contact_id = await _setup(client, sandbox)
        pit = (await client.post(f"/_sandbox/locations/{loc}/pit")).json()["token"]
        # a private integration token reads contacts fine...
        assert (await client.get(f"/contacts/{contact_id}", headers=auth(pit, CONTACTS))).status_code == 200
        # ...but is not the provider
        r = await inbound(client, sandbox, pit, contact_id)
        assert r.status_code == 401 and r.json()["message"] == "CONVERSATIONS_MSG_PROVIDER_NO_ACCESS"
        status = await client.put("/conversations/messages/whatever/status", headers=auth(pit),
                                  json={"status": "delivered"})
        assert status.status_code == 401 and "PROVIDER_NO_ACCESS" in status.json()["message"]
        # a token of another location cannot touch this location's contacts
        other = sandbox.location_ids[1]
        other_token = (await location_install(client, sandbox, other))["access_token"]
        foreign = await upsert(client, other_token, loc, "+14155550113")
        assert foreign.status_code == 403


@pytest.mark.asyncio
async def test_contacts_are_deduplicated_by_e164_phone(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, contact_id = await _setup(client, sandbox, phone="+1 415-555-0114")
        again = await upsert(client, token, loc, "(415) 555-0114", tags=["whatsapp"])
        assert again.json()["new"] is False and again.json()["contact"]["id"] == contact_id
        assert again.json()["contact"]["phone"] == "+14155550114"
        assert again.json()["contact"]["tags"] == ["whatsapp"]
        dup = await client.get("/contacts/search/duplicate", headers=auth(token, CONTACTS),
                               params={"locationId": loc, "number": "+14155550114"})
        assert dup.json()["contact"]["id"] == contact_id
        none = await client.get("/contacts/search/duplicate", headers=auth(token, CONTACTS),
                                params={"locationId": loc, "number": "+14155550199"})
        assert none.status_code == 200 and none.json()["contact"] is None
        other = await upsert(client, token, loc, "+447700900123")
        assert other.json()["new"] is True
        assert len((await state(client))["contacts"]) == 2


@pytest.mark.asyncio
async def test_merged_contact_gives_contact_not_found(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, old_id = await _setup(client, sandbox, phone="+14155550115")
        first = await inbound(client, sandbox, token, old_id, "before merge")
        old_conv = first.json()["conversationId"]
        keep = (await upsert(client, token, loc, "+14155550116", email="k@example.com")).json()["contact"]["id"]
        merged = await client.post("/_sandbox/contacts/merge", json={"keepContactId": keep, "mergeContactId": old_id})
        assert merged.status_code == 200
        r = await inbound(client, sandbox, token, old_id, "after merge")
        assert r.status_code == 400 and r.json()["message"] == "CONVERSATIONS_CONTACT_NOT_FOUND"
        by_conv = await client.post("/conversations/messages/inbound", headers=auth(token), json={
            "type": "Custom", "conversationId": old_conv, "conversationProviderId": sandbox.provider_id,
            "message": "x", "direction": "inbound"})
        assert by_conv.status_code == 400 and by_conv.json()["message"] == "CONVERSATIONS_CONTACT_NOT_FOUND"
        # re-resolving by phone finds the surviving contact, whose thread holds the history
        dup = await client.get("/contacts/search/duplicate", headers=auth(token, CONTACTS),
                               params={"locationId": loc, "number": "+14155550115"})
        assert dup.json()["contact"]["id"] == keep
        ok = await inbound(client, sandbox, token, keep, "after re-resolve")
        assert ok.status_code == 200
        listing = await client.get(f"/conversations/{ok.json()['conversationId']}/messages", headers=auth(token))
        assert [m["body"] for m in listing.json()["messages"]["messages"]] == ["after re-resolve", "before merge"]


@pytest.mark.asyncio
async def test_status_update_refused_during_race_window_then_accepted(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, contact_id = await _setup(client, sandbox)
        before = (await client.post(f"/_sandbox/locations/{loc}/reply",
                                    json={"contactId": contact_id, "message": "old"})).json()["messageId"]
        r = await client.post("/_sandbox/faults", json={"status_race_seconds": 8})
        assert r.json()["status_race_seconds"] == 8
        reply = await client.post(f"/_sandbox/locations/{loc}/reply",
                                  json={"contactId": contact_id, "message": "hello from HighLevel"})
        assert reply.status_code == 201
        mid = reply.json()["messageId"]
        assert sandbox.state.messages[mid].status == "pending"
        refused = await client.put(f"/conversations/messages/{mid}/status", headers=auth(token),
                                   json={"status": "delivered"})
        assert refused.status_code == 403
        # the window applies to messages created after the change only
        earlier = await client.put(f"/conversations/messages/{before}/status", headers=auth(token),
                                   json={"status": "delivered"})
        assert earlier.status_code == 200
        await client.post("/_sandbox/clock", json={"advance_seconds": 8.5})
        accepted = await client.put(f"/conversations/messages/{mid}/status", headers=auth(token),
                                    json={"status": "failed", "error": {"code": "1", "type": "saas",
                                                                         "message": "phone offline"}})
        assert accepted.status_code == 200
        assert accepted.json() == {**accepted.json(), "messageId": mid, "status": "failed"}
        msg = next(m for m in (await state(client))["messages"] if m["id"] == mid)
        assert msg["status"] == "failed" and msg["error"]["message"] == "phone offline"


@pytest.mark.asyncio
async def test_location_details(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, _ = await _setup(client, sandbox)
        r = await client.get(f"/locations/{loc}", headers=auth(token, CONTACTS))
        assert r.status_code == 200 and r.json()["location"]["id"] == loc
        other = await client.get(f"/locations/{sandbox.location_ids[1]}", headers=auth(token, CONTACTS))
        assert other.status_code == 403


@pytest.mark.asyncio
async def test_control_contact_and_token_shortcuts(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[1]
        made = await client.post(f"/_sandbox/locations/{loc}/contacts", json={"phone": "415 555 0190", "name": "Cy"})
        assert made.status_code == 200 and made.json()["phone"] == "+14155550190"
        same = await client.post(f"/_sandbox/locations/{loc}/contacts", json={"phone": "+14155550190"})
        assert same.json()["id"] == made.json()["id"]
        bad = await client.post(f"/_sandbox/locations/{loc}/contacts", json={"phone": "call me"})
        assert bad.status_code == 400
        tokens = (await client.post(f"/_sandbox/locations/{loc}/token")).json()
        assert tokens["userType"] == "Location" and tokens["locationId"] == loc
        got = await client.get(f"/contacts/{made.json()['id']}", headers=auth(tokens["access_token"], CONTACTS))
        assert got.status_code == 200 and got.json()["contact"]["name"] == "Cy"
        missing = await client.post("/_sandbox/locations/nope/token")
        assert missing.status_code == 404
        reply = await client.post(f"/_sandbox/locations/{loc}/reply", json={"contactId": "nope", "message": "x"})
        assert reply.status_code == 400
