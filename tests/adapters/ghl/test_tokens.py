"""Token refresh against the sandbox: one refresh per location however many callers, rotation
persisted before use, invalid_grant → needs reconnect, re-minting from the agency token."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from ghl_desktop.adapters.ghl import ClientOptions, GhlClient, TokenManager
from ghl_desktop.adapters.ghl.tokens import location_key
from ghl_desktop.core.errors import GhlNeedsReconnect, GhlVersionHeaderError, SecretStoreError
from ghl_desktop.core.models import LocationState, utcnow
from tests.adapters.ghl.conftest import Browser, Harness
from tests.fakes.secrets import MemorySecretStore


@pytest.mark.asyncio
async def test_20_calls_on_an_expired_token_make_exactly_one_refresh(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    old_access = ghl.secrets.get(location_key(loc, "access_token"))
    old_refresh = ghl.secrets.get(location_key(loc, "refresh_token"))
    # the app was closed for a day: the server has expired the token, the DB says it expired
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": loc})
    ghl.db.locations.set_token_expiry(loc, utcnow() - timedelta(minutes=1))
    tokens, client = ghl.build()  # restart: state comes from the DB and the secret store

    results = await asyncio.gather(*(client.get_location(loc) for _ in range(20)))

    assert {r.id for r in results} == {loc}
    assert ghl.stats["oauth_token_refresh_token"] == 1
    assert tokens.refresh_requests == 1
    new_access = ghl.secrets.get(location_key(loc, "access_token"))
    new_refresh = ghl.secrets.get(location_key(loc, "refresh_token"))
    assert new_access != old_access and new_refresh != old_refresh  # rotated pair persisted
    row = ghl.db.locations.get(loc)
    assert row is not None and row.token_expires_at is not None and row.token_expires_at > utcnow()


@pytest.mark.asyncio
async def test_20_calls_hitting_a_401_share_one_refresh(ghl: Harness) -> None:
    """The server revoked the token early (our expiry looks fine): the 401 triggers one refresh only."""
    loc = (await ghl.connect()).id
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": loc})
    results = await asyncio.gather(*(ghl.client.get_location(loc) for _ in range(20)))
    assert len(results) == 20
    assert ghl.stats["oauth_token_refresh_token"] == 1


@pytest.mark.asyncio
async def test_refresh_happens_before_expiry_within_the_skew(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    ghl.db.locations.set_token_expiry(loc, utcnow() + timedelta(minutes=2))
    _, client = ghl.build(refresh_skew=timedelta(minutes=5))
    await client.get_location(loc)
    assert ghl.stats["oauth_token_refresh_token"] == 1
    await client.get_location(loc)  # the new expiry is a day away: no second refresh
    assert ghl.stats["oauth_token_refresh_token"] == 1


@pytest.mark.asyncio
async def test_reused_refresh_token_within_grace_works_after_grace_needs_reconnect(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    stale = ghl.secrets.get(location_key(loc, "refresh_token"))
    assert stale
    await ghl.tokens.refresh(loc)  # rotates: the stored refresh token is now a new one
    assert ghl.secrets.get(location_key(loc, "refresh_token")) != stale

    # a second copy of the app (or a restored backup) uses the old token within the 30 s grace: same pair
    ghl.secrets.set(location_key(loc, "refresh_token"), stale)
    await ghl.tokens.refresh(loc)
    assert ghl.stats.get("oauth_refresh_grace_reuse") == 1
    assert ghl.db.locations.get(loc).state is LocationState.CONNECTED  # type: ignore[union-attr]

    # ...and again after the grace: invalid_grant → the location needs reconnecting, no loop
    await ghl.control("POST", "/_sandbox/clock", {"advance_seconds": 31})
    ghl.secrets.set(location_key(loc, "refresh_token"), stale)
    with pytest.raises(GhlNeedsReconnect):
        await ghl.tokens.refresh(loc)
    assert ghl.db.locations.get(loc).state is LocationState.NEEDS_RECONNECT  # type: ignore[union-attr]
    calls = ghl.stats["oauth_token_refresh_token"]
    assert calls == 3

    # every later call fails fast without asking the server again
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": loc})
    for _ in range(3):
        with pytest.raises(GhlNeedsReconnect):
            await ghl.client.get_location(loc)
    _, client = ghl.build()  # also after a restart (state read from the DB)
    with pytest.raises(GhlNeedsReconnect):
        await client.get_location(loc)
    assert ghl.stats["oauth_token_refresh_token"] == calls


@pytest.mark.asyncio
async def test_reconnecting_through_oauth_clears_needs_reconnect(ghl: Harness) -> None:
    loc = ghl.sandbox.location_ids[0]
    await ghl.connect(loc)
    ghl.secrets.set(location_key(loc, "refresh_token"), "not-a-token")
    with pytest.raises(GhlNeedsReconnect):
        await ghl.tokens.refresh(loc)
    browser = Browser(click="location:0")
    await ghl.oauth(browser).connect()
    await browser.finish()
    assert ghl.db.locations.get(loc).state is LocationState.CONNECTED  # type: ignore[union-attr]
    assert (await ghl.client.get_location(loc)).id == loc


@pytest.mark.asyncio
async def test_dead_location_refresh_token_is_reminted_from_the_agency_token(ghl: Harness) -> None:
    browser = Browser(click="agency")
    [location] = await ghl.oauth(browser).connect(choose=lambda found: [found[0]])
    await browser.finish()
    ghl.secrets.set(location_key(location.id, "refresh_token"), "revoked-long-ago")
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": location.id})
    await ghl.control("POST", "/_sandbox/tokens/expire", {"company": True})  # the agency token too

    assert (await ghl.client.get_location(location.id)).id == location.id
    assert ghl.stats["oauth_location_tokens"] == 2  # install + re-mint
    # one refused location refresh, one agency refresh (its 401 on /oauth/locationToken)
    assert ghl.stats["oauth_token_refresh_token"] == 2 and ghl.stats["oauth_refreshes"] == 1
    assert ghl.db.locations.get(location.id).state is LocationState.CONNECTED  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_version_header_401_is_not_treated_as_an_auth_failure(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    token_before = ghl.secrets.get(location_key(loc, "access_token"))
    _, client = ghl.build(options=ClientOptions(version_overrides={"/locations": "2019-01-01"}))
    with pytest.raises(GhlVersionHeaderError, match="version header is invalid"):
        await client.get_location(loc)
    assert "oauth_token_refresh_token" not in ghl.stats
    assert ghl.secrets.get(location_key(loc, "access_token")) == token_before
    assert ghl.db.locations.get(loc).state is LocationState.CONNECTED  # type: ignore[union-attr]
    ghl.expected_validation_failures = 1  # the invalid Version we sent on purpose


@pytest.mark.asyncio
async def test_no_token_or_message_text_is_logged_at_info(ghl: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    browser = Browser()
    [loc] = await ghl.oauth(browser).connect()
    await browser.finish()
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": loc.id})
    contact = await ghl.contact(loc.id)
    await ghl.client.add_inbound_message(loc.id, contact, "very private words", alt_id="wamid.secret")
    secrets = [v for v in ghl.secrets.values.values() if len(v) > 8] + [ghl.settings.client_secret or ""]
    assert ghl.stats["oauth_token_refresh_token"] == 1  # the refresh path was logged too
    texts = [r.getMessage() for r in caplog.records if r.name.startswith("ghl.") and r.levelno >= logging.INFO]
    assert texts, "expected some INFO logging from the adapter"
    for text in texts:
        assert "very private words" not in text
        assert not any(secret in text for secret in secrets)


class FlakyStore(MemorySecretStore):
    """A secret store whose next write of a refresh token fails (keyring daemon hiccup)."""

    fail_next_refresh_write = False

    def set(self, key: str, value: str) -> None:
        if self.fail_next_refresh_write and key.endswith(":refresh_token"):
            self.fail_next_refresh_write = False
            raise SecretStoreError("keyring went away")
        super().set(key, value)


@pytest.mark.asyncio
async def test_a_token_that_could_not_be_saved_is_never_used(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    store = FlakyStore()
    store.values = dict(ghl.secrets.values)
    tokens = TokenManager(store, ghl.db.locations, ghl.http, ghl.settings)
    client = GhlClient(ghl.settings, tokens, ghl.http)
    old_access = store.get(location_key(loc, "access_token"))
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": loc})

    store.fail_next_refresh_write = True
    with pytest.raises(SecretStoreError):
        await client.get_location(loc)
    assert store.get(location_key(loc, "access_token")) == old_access  # nothing half-saved is in use
    # the old refresh token is still in the store; within HighLevel's grace it yields the same pair again
    assert (await client.get_location(loc)).id == loc
    assert ghl.stats["oauth_refresh_grace_reuse"] == 1
    assert ghl.db.locations.get(loc).state is LocationState.CONNECTED  # type: ignore[union-attr]


# --- issue 11 item 7: a refused refresh is any 400/401 of the token endpoint, whatever its body ----------

REFUSAL_KINDS = ["invalid_grant", "location_inactive", "unauthorized"]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", REFUSAL_KINDS)
async def test_any_refused_refresh_marks_needs_reconnect_without_a_retry_loop(ghl: Harness, kind: str) -> None:
    loc = (await ghl.connect()).id
    await ghl.control("POST", "/_sandbox/oauth/refresh_failures", {"kind": kind, "count": 5})
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": loc})

    with pytest.raises(GhlNeedsReconnect):
        await ghl.client.get_location(loc)
    assert ghl.db.locations.get(loc).state is LocationState.NEEDS_RECONNECT  # type: ignore[union-attr]
    assert ghl.stats["oauth_token_refresh_token"] == 1  # refused once, never retried
    assert ghl.stats["oauth_refresh_refused"] == 1
    with pytest.raises(GhlNeedsReconnect):  # later calls fail fast, the server is not asked again
        await ghl.client.get_location(loc)
    assert ghl.stats["oauth_token_refresh_token"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", REFUSAL_KINDS)
async def test_any_refused_refresh_is_reminted_from_the_agency_token(ghl: Harness, kind: str) -> None:
    browser = Browser(click="agency")
    [location] = await ghl.oauth(browser).connect(choose=lambda found: [found[0]])
    await browser.finish()
    await ghl.control("POST", "/_sandbox/oauth/refresh_failures",
                      {"kind": kind, "locationId": location.id, "company": False})
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": location.id})

    assert (await ghl.client.get_location(location.id)).id == location.id
    assert ghl.stats["oauth_refresh_refused"] == 1
    assert ghl.stats["oauth_location_tokens"] == 2  # install + re-mint
    assert ghl.db.locations.get(location.id).state is LocationState.CONNECTED  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_refused_agency_refresh_ends_in_needs_reconnect(ghl: Harness) -> None:
    browser = Browser(click="agency")
    [location] = await ghl.oauth(browser).connect(choose=lambda found: [found[0]])
    await browser.finish()
    ghl.secrets.set(location_key(location.id, "refresh_token"), "revoked-long-ago")
    await ghl.control("POST", "/_sandbox/oauth/refresh_failures", {"kind": "location_inactive", "company": True})
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": location.id})
    await ghl.control("POST", "/_sandbox/tokens/expire", {"company": True})

    with pytest.raises(GhlNeedsReconnect):
        await ghl.client.get_location(location.id)
    assert ghl.db.locations.get(location.id).state is LocationState.NEEDS_RECONNECT  # type: ignore[union-attr]
    assert ghl.stats["oauth_refresh_refused"] == 1


@pytest.mark.asyncio
async def test_a_5xx_from_the_token_endpoint_is_still_retried(ghl: Harness) -> None:
    loc = (await ghl.connect()).id
    await ghl.control("POST", "/_sandbox/oauth/refresh_failures",
                      {"status": 503, "body": {"statusCode": 503, "message": "Service Unavailable"}})
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": loc})
    assert (await ghl.client.get_location(loc)).id == loc
    assert ghl.stats["oauth_token_refresh_token"] == 2
    assert ghl.db.locations.get(loc).state is LocationState.CONNECTED  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_with_an_offload_no_secret_is_read_on_the_loop(ghl: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's TokenManager (``offload`` = the storage executor): the first use of a location, its
    refused refresh and the agency re-mint read the secret store (keyring: D-Bus round trips) and the
    location's row off the loop thread only."""
    import threading

    browser = Browser(click="agency")
    [location] = await ghl.oauth(browser).connect(choose=lambda found: [found[0]])
    await browser.finish()
    ghl.secrets.set(location_key(location.id, "refresh_token"), "revoked-long-ago")
    await ghl.control("POST", "/_sandbox/tokens/expire", {"locationId": location.id})
    await ghl.control("POST", "/_sandbox/tokens/expire", {"company": True})
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    get = ghl.secrets.get

    def watched(key: str) -> str | None:
        if threading.get_ident() == loop_thread:
            on_loop.append(key)
        return get(key)

    monkeypatch.setattr(ghl.secrets, "get", watched)
    tokens, client = ghl.build(offload=asyncio.to_thread)  # a restart: nothing in memory yet
    assert (await client.get_location(location.id)).id == location.id
    assert ghl.stats["oauth_location_tokens"] == 2  # install + re-mint: the path above was taken
    assert tokens.refresh_requests >= 2 and on_loop == []
