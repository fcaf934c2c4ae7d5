"""``Version`` headers (issue 11 item 10): the per-path table, a sandbox in strict mode that refuses the
retired values, and ``version_overrides`` switching every path the client and token manager call."""

from __future__ import annotations

from typing import Any

import pytest

from ghl_desktop.adapters.ghl import ClientOptions, GhlClient, OAuthConnector, OAuthOptions, TokenManager
from ghl_desktop.adapters.ghl.transport import VERSION_TABLE, parse_version_overrides, version_for
from ghl_desktop.core.errors import ConfigError, GhlVersionHeaderError
from ghl_desktop.core.models import LocationState
from ghl_desktop.sandbox.runtime import RETIRED_VERSIONS
from tests.adapters.ghl.conftest import FAST_RETRY, Browser, Harness

NEW = "2023-02-21"
EVERY_PATH = {prefix: NEW for prefix in VERSION_TABLE}
PNG = bytes.fromhex("89504e470d0a1a0a") + b"\x00" * 200


def _versions_seen(stats: dict[str, int]) -> dict[str, set[str]]:
    """API area -> Version values the sandbox received there."""
    seen: dict[str, set[str]] = {}
    for key in stats:
        if key.startswith("version "):
            _, version, area = key.split(" ", 2)
            seen.setdefault(area, set()).add(version)
    return seen


def _pair(ghl: Harness, overrides: dict[str, str], **options: Any) -> tuple[TokenManager, GhlClient]:
    tokens = TokenManager(ghl.secrets, ghl.db.locations, ghl.http, ghl.settings, retry=FAST_RETRY,
                          version_overrides=overrides)
    client = GhlClient(ghl.settings, tokens, ghl.http, rate=FAST_RETRY,
                       options=ClientOptions(version_overrides=overrides, **options))
    return tokens, client


def test_the_table_gives_the_specs_values_and_overrides_win_by_longest_prefix() -> None:
    assert version_for("/conversations/messages/inbound") == "2021-04-15"
    assert version_for("/contacts/upsert") == "2021-07-28"
    assert version_for("/oauth/installedLocations") == "2021-07-28"
    overrides = {"/conversations": NEW, "/conversations/messages/upload": "2021-07-28"}
    assert version_for("/conversations/search", overrides) == NEW
    assert version_for("/conversations/messages/upload", overrides) == "2021-07-28"
    assert version_for("/contacts/upsert", overrides) == "2021-07-28"  # not overridden: the table's


@pytest.mark.asyncio
async def test_strict_sandbox_refuses_the_retired_values_the_client_sends_by_default(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    async with ghl_factory(strict_versions=True) as ghl:
        loc = (await ghl.connect()).id
        with pytest.raises(GhlVersionHeaderError):
            await ghl.client.get_location(loc)
        with pytest.raises(GhlVersionHeaderError):
            await ghl.contact(loc)
        assert ghl.stats["retired_version_refused"] == 2
        assert "oauth_token_refresh_token" not in ghl.stats  # a Version refusal is not an auth failure
        assert ghl.db.locations.get(loc).state is LocationState.CONNECTED  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_version_overrides_switch_every_path_the_app_calls(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    """Against a sandbox that has retired 2021-04-15 and 2021-07-28, the app does everything it does in
    production (agency install, contacts, provider messages, statuses, both upload paths, lookups, token
    refresh and re-mint) with every table prefix overridden, and not one retired value reaches it."""
    async with ghl_factory(strict_versions=True) as ghl:
        tokens, client = _pair(ghl, EVERY_PATH, multipart_max_bytes=1024)
        browser = Browser(click="agency")
        connector = OAuthConnector(ghl.settings, tokens, client, ghl.db.locations, open_url=browser,
                                   options=OAuthOptions.from_settings(ghl.settings, timeout_seconds=10.0))
        [location] = await connector.connect(choose=lambda found: [found[0]])  # installedLocations, locationToken
        await browser.finish()
        loc = location.id

        upserted = await client.upsert_contact(loc, "+14155552671", name="Ada")
        contact = upserted.contact.id
        assert (await client.find_duplicate_contact(loc, "+14155552671")) is not None
        assert (await client.get_contact(loc, contact)).id == contact
        first = await client.add_inbound_message(loc, contact, "hi", alt_id="wamid.v1")
        await client.add_inbound_message(loc, contact, "from the phone", alt_id="wamid.v2", direction="outbound",
                                         conversation_id=first.conversation_id)
        assert [c.id for c in await client.search_conversations(loc, contact_id=contact)] == [first.conversation_id]
        other = (await client.upsert_contact(loc, "+14155552672")).contact.id
        assert (await client.get_or_create_conversation(loc, other)).id  # POST /conversations/
        assert await client.list_conversation_messages(loc, first.conversation_id)
        assert (await client.find_message_by_alt_id(loc, "wamid.v1", contact_id=contact)) is not None
        small = await client.upload_attachment(loc, first.conversation_id, contact, "a.png", PNG, "image/png")
        large = await client.upload_attachment(loc, first.conversation_id, contact, "b.png",
                                               PNG + b"\x00" * 4096, "image/png")
        assert (small.via, large.via) == ("multipart", "signed-url")
        reply = await ghl.control("POST", f"/_sandbox/locations/{loc}/reply", {"contactId": contact, "message": "yo"})
        await client.update_message_status(loc, reply["messageId"], "delivered")
        assert (await client.get_location(loc)).id == loc
        # the location's refresh token is refused: the agency token re-mints (after its own refresh)
        await ghl.control("POST", "/_sandbox/oauth/refresh_failures", {"kind": "location_inactive", "company": False})
        await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": loc})
        await ghl.control("POST", "/_sandbox/tokens/expire", {"company": True})
        assert (await client.get_location(loc)).id == loc
        assert ghl.stats["oauth_location_tokens"] == 2

        assert "retired_version_refused" not in ghl.stats
        seen = _versions_seen(ghl.stats)
        assert set(seen) == set(VERSION_TABLE), "every prefix of the table was exercised"
        assert all(values == {NEW} for values in seen.values()), seen
        assert not set().union(*seen.values()) & set(RETIRED_VERSIONS)
        # with the old values retired, the new one is no deviation from the spec: nothing recorded
        assert ghl.sandbox.state.validation_failures == []


@pytest.mark.asyncio
async def test_strict_mode_and_the_retired_list_can_be_changed_at_runtime(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    answer = await ghl.control("POST", "/_sandbox/config",
                               {"strict_versions": True, "retired_versions": ["2021-04-15"]})
    assert answer["strict_versions"] is True and answer["retired_versions"] == ["2021-04-15"]
    contact = await ghl.contact(loc)  # /contacts sends 2021-07-28: still accepted
    with pytest.raises(GhlVersionHeaderError):
        await ghl.client.add_inbound_message(loc, contact, "hi", alt_id="w")
    await ghl.control("POST", "/_sandbox/config", {"strict_versions": False})
    assert (await ghl.client.add_inbound_message(loc, contact, "hi", alt_id="w")).message_id


def test_overrides_come_from_one_setting() -> None:
    assert parse_version_overrides("") == {}
    assert parse_version_overrides("*=2023-02-21") == {"/": NEW}
    assert parse_version_overrides(" /conversations=2023-02-21, /contacts = 2021-07-28 ;") == {
        "/conversations": NEW, "/contacts": "2021-07-28"}
    assert version_for("/oauth/locationToken", parse_version_overrides("*=2023-02-21")) == NEW
    for bad in ("2023-02-21", "contacts=2023-02-21", "/contacts=", "=x"):
        with pytest.raises(ConfigError, match="GHL_API_VERSIONS"):
            parse_version_overrides(bad)
