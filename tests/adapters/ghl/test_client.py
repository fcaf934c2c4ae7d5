"""The endpoints the bridge uses, against the sandbox: contacts, provider messages, statuses,
uploads, crash-recovery lookups, and the failure modes each one maps to a core error."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ghl_desktop.adapters.ghl import ClientOptions, GhlClient, InvalidPhoneNumber, TokenManager, create_http_client
from ghl_desktop.adapters.ghl.rate import RateLimitConfig
from ghl_desktop.config import Settings
from ghl_desktop.core.errors import (
    GhlBadRequest,
    GhlContactNotFound,
    GhlForbidden,
    GhlNotFound,
    GhlPayloadTooLarge,
    GhlStatusRace,
    GhlTransientError,
    MediaTooLarge,
)
from tests.adapters.ghl.conftest import Harness

PNG = bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 200


def _messages(snapshot: dict, location_id: str) -> list[dict]:  # type: ignore[type-arg]
    return [m for m in snapshot["messages"] if m["locationId"] == location_id]


@pytest.mark.asyncio
async def test_upsert_normalises_the_phone_and_dedupes(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    first = await ghl.client.upsert_contact(loc, "+1 (415) 555-2671", name="Ada", tags=["whatsapp"])
    again = await ghl.client.upsert_contact(loc, "14155552671", name="Ada L.")
    assert first.created and not again.created
    assert first.contact.id == again.contact.id and first.contact.phone == "+14155552671"
    found = await ghl.client.find_duplicate_contact(loc, "+14155552671")
    assert found is not None and found.id == first.contact.id
    assert await ghl.client.find_duplicate_contact(loc, "+442079460958") is None
    contacts = [c for c in (await ghl.snapshot())["contacts"] if c["locationId"] == loc]
    assert [c["phone"] for c in contacts] == ["+14155552671"]


@pytest.mark.asyncio
async def test_invalid_phone_is_refused_before_any_request(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    before = ghl.stats.get("api_requests", 0)
    with pytest.raises(InvalidPhoneNumber):
        await ghl.client.upsert_contact(loc, "not a number")
    with pytest.raises(InvalidPhoneNumber):
        await ghl.client.find_duplicate_contact(loc, "+1 555")
    assert ghl.stats.get("api_requests", 0) == before


@pytest.mark.asyncio
async def test_inbound_and_phone_sent_messages_land_in_the_conversation(ghl: Harness) -> None:
    from datetime import UTC, datetime

    loc = (await ghl.connect()).id
    contact = await ghl.contact(loc)
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    inbound = await ghl.client.add_inbound_message(loc, contact, "hi there", alt_id="wamid.in",
                                                   attachments=["https://example.com/a.png"], date=when)
    outbound = await ghl.client.add_inbound_message(loc, contact, "sent from the phone", alt_id="wamid.out",
                                                    direction="outbound", conversation_id=inbound.conversation_id)
    assert inbound.conversation_id == outbound.conversation_id
    stored = {m["altId"]: m for m in _messages(await ghl.snapshot(), loc)}
    assert stored["wamid.in"]["direction"] == "inbound" and stored["wamid.in"]["body"] == "hi there"
    assert stored["wamid.in"]["attachments"] == ["https://example.com/a.png"]
    assert stored["wamid.in"]["dateAdded"] == "2026-01-02T03:04:05.000Z"
    assert stored["wamid.out"]["direction"] == "outbound"


@pytest.mark.asyncio
async def test_dropped_inbound_message_is_an_error_not_a_success(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    """Without the provider id HighLevel answers 201 with an empty body and stores nothing (ISSUE #70)."""
    async with ghl_factory(options=ClientOptions(send_provider_id=False)) as ghl:
        loc = (await ghl.connect()).id
        contact = await ghl.contact(loc)
        with pytest.raises(GhlBadRequest, match="stored nothing"):
            await ghl.client.add_inbound_message(loc, contact, "lost?", alt_id="wamid.x")
        assert _messages(await ghl.snapshot(), loc) == []
        assert ghl.stats["inbound_dropped_no_provider"] == 1
        ghl.expected_validation_failures = 1  # the sandbox counts the missing provider id as a spec breach


@pytest.mark.asyncio
async def test_merged_contact_maps_to_contact_not_found(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    keep = await ghl.contact(loc, "+14155552671")
    gone = await ghl.contact(loc, "+14155552672")
    await ghl.control("POST", "/_sandbox/contacts/merge", {"keepContactId": keep, "mergeContactId": gone})
    with pytest.raises(GhlContactNotFound) as caught:
        await ghl.client.add_inbound_message(loc, gone, "hello?", alt_id="wamid.m")
    assert caught.value.code == "CONVERSATIONS_CONTACT_NOT_FOUND" and not caught.value.transient


@pytest.mark.asyncio
async def test_status_update_rides_out_the_403_race_without_refreshing(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    opts = ClientOptions(status_race_total_seconds=5.0, status_race_initial_delay=0.05, status_race_max_delay=0.2)
    async with ghl_factory(status_race_seconds=0.4, options=opts) as ghl:
        loc = (await ghl.connect()).id
        contact = await ghl.contact(loc)
        reply = await ghl.sandbox.reply(loc, contact, "agent says hi")  # outbound, handed to the provider
        await ghl.client.update_message_status(loc, reply["messageId"], "delivered")
        assert ghl.stats["status_race_refusals"] >= 1
        assert "oauth_token_refresh_token" not in ghl.stats
        message = next(m for m in (await ghl.snapshot())["messages"] if m["id"] == reply["messageId"])
        assert message["status"] == "delivered"


@pytest.mark.asyncio
async def test_status_race_longer_than_the_budget_raises_status_race(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    opts = ClientOptions(status_race_total_seconds=0.3, status_race_initial_delay=0.05, status_race_max_delay=0.1)
    async with ghl_factory(status_race_seconds=60, options=opts) as ghl:
        loc = (await ghl.connect()).id
        reply = await ghl.sandbox.reply(loc, await ghl.contact(loc), "x")
        with pytest.raises(GhlStatusRace) as caught:
            await ghl.client.update_message_status(loc, reply["messageId"], "read")
        assert caught.value.transient
        assert ghl.stats["status_race_refusals"] >= 2
        assert "oauth_token_refresh_token" not in ghl.stats


@pytest.mark.asyncio
async def test_failed_status_carries_the_error_and_bad_status_is_refused_locally(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    reply = await ghl.sandbox.reply(loc, await ghl.contact(loc), "x")
    await ghl.client.update_message_status(loc, reply["messageId"], "failed", error="not on WhatsApp")
    message = next(m for m in (await ghl.snapshot())["messages"] if m["id"] == reply["messageId"])
    assert message["status"] == "failed" and message["error"]["message"] == "not on WhatsApp"
    with pytest.raises(ValueError):
        await ghl.client.update_message_status(loc, reply["messageId"], "sent")
    with pytest.raises(GhlNotFound):
        await ghl.client.update_message_status(loc, "noSuchMessage000000", "read")


@pytest.mark.asyncio
async def test_a_token_of_another_location_is_forbidden_not_refreshed(ghl: Harness) -> None:
    first, second = ghl.sandbox.location_ids
    await ghl.connect(first)
    with pytest.raises(GhlForbidden, match="does not have access to this location"):
        await ghl.client._call("GET", "/conversations/search", location_id=first, params={"locationId": second})
    assert "oauth_token_refresh_token" not in ghl.stats


@pytest.mark.asyncio
async def test_small_upload_goes_multipart_and_the_url_serves_the_bytes(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    contact = await ghl.contact(loc)
    conv = (await ghl.client.add_inbound_message(loc, contact, "photo follows", alt_id="w1")).conversation_id
    uploaded = await ghl.client.upload_attachment(loc, conv, contact, "photo.png", PNG, "image/png")
    assert uploaded.via == "multipart" and uploaded.size == len(PNG)
    async with httpx.AsyncClient() as http:
        assert (await http.get(uploaded.url)).content == PNG
    sent = await ghl.client.add_inbound_message(loc, contact, None, attachments=[uploaded.url], alt_id="w2",
                                                conversation_id=conv)
    assert sent.message_id


@pytest.mark.asyncio
async def test_large_upload_uses_initiate_put_complete(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    async with ghl_factory(options=ClientOptions(multipart_max_bytes=4096)) as ghl:
        loc = (await ghl.connect()).id
        contact = await ghl.contact(loc)
        conv = (await ghl.client.add_inbound_message(loc, contact, "video", alt_id="w1")).conversation_id
        video = bytes(range(256)) * 512  # 128 KiB
        uploaded = await ghl.client.upload_attachment(loc, conv, contact, "clip.mp4", video, "video/mp4")
        assert uploaded.via == "signed-url"
        async with httpx.AsyncClient() as http:
            assert (await http.get(uploaded.url)).content == video


@pytest.mark.asyncio
async def test_upload_limits(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    opts = ClientOptions(multipart_max_bytes=1024, large_upload_max_bytes=8192)
    async with ghl_factory(options=opts) as ghl:
        loc = (await ghl.connect()).id
        contact = await ghl.contact(loc)
        conv = (await ghl.client.add_inbound_message(loc, contact, "x", alt_id="w1")).conversation_id
        before = ghl.stats.get("api_requests", 0)
        with pytest.raises(MediaTooLarge):
            await ghl.client.upload_attachment(loc, conv, contact, "big.mp4", b"\0" * 9000, "video/mp4")
        assert ghl.stats["api_requests"] == before  # refused before sending
        with pytest.raises(GhlPayloadTooLarge):  # the sandbox refuses the file type with 415
            await ghl.client.upload_attachment(loc, conv, contact, "tool.exe", b"MZ", "application/octet-stream")


@pytest.mark.asyncio
async def test_find_message_by_alt_id_pages_through_the_conversation(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    async with ghl_factory(options=ClientOptions(message_page_limit=10)) as ghl:
        loc = (await ghl.connect()).id
        contact = await ghl.contact(loc)
        first = await ghl.client.add_inbound_message(loc, contact, "m0", alt_id="wamid.0")
        for i in range(1, 25):
            await ghl.client.add_inbound_message(loc, contact, f"m{i}", alt_id=f"wamid.{i}",
                                                 conversation_id=first.conversation_id)
        found = await ghl.client.find_message_by_alt_id(loc, "wamid.0", contact_id=contact)
        assert found is not None and found.id == first.message_id and found.direction == "inbound"
        by_conv = await ghl.client.find_message_by_alt_id(loc, "wamid.17", conversation_id=first.conversation_id)
        assert by_conv is not None and by_conv.body == "m17"
        assert await ghl.client.find_message_by_alt_id(loc, "wamid.nope", contact_id=contact) is None
        other = await ghl.contact(loc, "+14155552699")
        assert await ghl.client.find_message_by_alt_id(loc, "wamid.0", contact_id=other) is None


@pytest.mark.asyncio
async def test_search_conversations_and_location_details(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    contact = await ghl.contact(loc)
    assert await ghl.client.search_conversations(loc, contact_id=contact) == []
    sent = await ghl.client.add_inbound_message(loc, contact, "hi", alt_id="w")
    [conv] = await ghl.client.search_conversations(loc, contact_id=contact)
    assert conv.id == sent.conversation_id and conv.contact_id == contact
    details = await ghl.client.get_location(loc)
    assert details.name == "Sandbox Location 1" and details.company_id == ghl.sandbox.company_id
    assert (await ghl.client.get_or_create_conversation(loc, contact)).id == sent.conversation_id


@pytest.mark.asyncio
async def test_5xx_are_retried_until_they_succeed(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    rate = RateLimitConfig(max_retries=10, backoff_base_seconds=0.005, backoff_cap_seconds=0.02)
    async with ghl_factory(seed=7, rate=rate) as ghl:
        loc = (await ghl.connect()).id
        contact = await ghl.contact(loc)
        ghl.sandbox.set_faults(error_rate=0.3)
        results = await asyncio.gather(*(ghl.client.get_location(loc) for _ in range(20)))
        assert len(results) == 20
        # inbound posts are not blindly repeated: after a 5xx the client looks the altId up first
        for i in range(10):
            await ghl.client.add_inbound_message(loc, contact, f"n{i}", alt_id=f"wamid.r{i}")
        assert ghl.stats["injected_errors"] >= 5
        ghl.sandbox.set_faults(error_rate=0.0)
        alt_ids = sorted(m["altId"] for m in _messages(await ghl.snapshot(), loc))
        assert alt_ids == sorted(f"wamid.r{i}" for i in range(10))  # each exactly once


@pytest.mark.asyncio
async def test_a_server_that_keeps_failing_gives_a_transient_error(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    rate = RateLimitConfig(max_retries=3, backoff_base_seconds=0.005, backoff_cap_seconds=0.01)
    async with ghl_factory(rate=rate) as ghl:
        loc = (await ghl.connect()).id
        ghl.sandbox.set_faults(error_rate=1.0)
        before = ghl.stats.get("api_requests", 0)
        with pytest.raises(GhlTransientError) as caught:
            await ghl.client.get_location(loc)
        assert caught.value.transient and caught.value.status >= 500
        assert ghl.stats["api_requests"] - before == 4  # first try + 3 retries


@pytest.mark.asyncio
async def test_timeouts_and_refused_connections_are_transient(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    rate = RateLimitConfig(max_retries=1, backoff_base_seconds=0.005, backoff_cap_seconds=0.01)
    async with ghl_factory(rate=rate) as ghl:
        loc = (await ghl.connect()).id
        ghl.sandbox.set_faults(latency_ms=300)
        slow = create_http_client(ghl.settings, timeout=httpx.Timeout(0.1))
        try:
            tokens = TokenManager(ghl.secrets, ghl.db.locations, slow, ghl.settings, retry=rate)
            client = GhlClient(ghl.settings, tokens, slow, rate=rate)
            before = ghl.stats.get("api_requests", 0)
            with pytest.raises(GhlTransientError, match="ReadTimeout"):
                await client.get_location(loc)
            assert ghl.stats["api_requests"] - before == 2  # retried once
        finally:
            await slow.aclose()
        ghl.sandbox.set_faults(latency_ms=0)
        dead = Settings(client_id="x", client_secret="y", api_base="http://127.0.0.1:9", home=ghl.settings.home)
        nowhere = create_http_client(dead)
        try:
            tokens = TokenManager(ghl.secrets, ghl.db.locations, nowhere, dead, retry=rate)
            with pytest.raises(GhlTransientError, match="ConnectError"):
                await GhlClient(dead, tokens, nowhere, rate=rate).get_location(loc)
        finally:
            await nowhere.aclose()


@pytest.mark.asyncio
async def test_get_or_create_conversation_creates_one_for_a_new_contact(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    contact = await ghl.contact(loc)
    conv = await ghl.client.get_or_create_conversation(loc, contact)
    assert conv.contact_id == contact
    again = await ghl.client.create_conversation(loc, contact)  # "already exists" → the existing one
    assert again.id == conv.id
