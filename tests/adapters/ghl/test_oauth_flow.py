"""The whole install flow against the sandbox: consent page → loopback redirect → code exchange →
saved locations, with the browser replaced by an HTTP client that clicks the consent choice."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from pathlib import Path

import httpx
import pytest

from ghl_desktop.adapters.ghl import (
    COMPANY_SCOPES,
    PROVIDER_SCOPES,
    OAuthConnector,
    OAuthOptions,
    app_registration,
)
from ghl_desktop.adapters.ghl.tokens import company_key, location_key
from ghl_desktop.core.errors import OAuthError
from ghl_desktop.core.models import LocationState
from tests.adapters.ghl.conftest import Browser, Harness


def _closed(port: int | None) -> bool:
    assert port is not None
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.asyncio
async def test_location_install_round_trip(ghl: Harness) -> None:
    browser = Browser(click="location:1")
    connector = ghl.oauth(browser)
    connected = await connector.connect()
    await browser.finish()

    target = ghl.sandbox.location_ids[1]
    assert [loc.id for loc in connected] == [target]
    assert connected[0].name == "Sandbox Location 2"  # read from GET /locations/{id}
    assert connected[0].company_id == ghl.sandbox.company_id
    assert browser.pages[0].status_code == 200 and "close this tab" in browser.pages[0].text
    # the URL the "browser" got is the sandbox consent page with our loopback redirect and a state
    opened = httpx.URL(browser.opened[0])
    assert opened.path == "/oauth/chooselocation"
    assert opened.params["redirect_uri"].startswith("http://127.0.0.1:")
    assert len(opened.params["state"]) >= 20
    # tokens in the secret store, expiry and state in the database, nothing secret in the row
    assert ghl.secrets.get(location_key(target, "access_token"))
    assert ghl.secrets.get(location_key(target, "refresh_token"))
    row = ghl.db.locations.get(target)
    assert row is not None and row.state is LocationState.CONNECTED and row.token_expires_at is not None
    assert row.provider_id == ghl.sandbox.provider_id
    # the tokens work: a provider call goes through
    contact = await ghl.contact(target)
    result = await ghl.client.add_inbound_message(target, contact, "hello", alt_id="wamid.1")
    assert result.message_id
    assert ghl.stats["oauth_token_authorization_code"] == 1
    assert _closed(httpx.URL(opened.params["redirect_uri"]).port)


@pytest.mark.asyncio
async def test_agency_install_mints_location_tokens_for_the_chosen_locations(ghl: Harness) -> None:
    browser = Browser(click="agency")
    offered: list[str] = []

    def choose(installed):  # type: ignore[no-untyped-def]
        offered.extend(loc.id for loc in installed)
        return [loc for loc in installed if loc.id == ghl.sandbox.location_ids[0]]

    connected = await ghl.oauth(browser).connect(choose=choose)
    await browser.finish()

    first, second = ghl.sandbox.location_ids
    assert sorted(offered) == sorted([first, second])  # GET /oauth/installedLocations with the company token
    assert [loc.id for loc in connected] == [first]
    assert connected[0].name == "Sandbox Location 1"
    company = ghl.sandbox.company_id
    assert ghl.secrets.get(company_key(company, "access_token"))  # kept for re-minting
    assert ghl.secrets.get(company_key(company, "refresh_token"))
    assert ghl.secrets.get(location_key(first, "access_token"))
    assert ghl.secrets.get(location_key(second, "access_token")) is None
    assert ghl.stats["oauth_location_tokens"] == 1
    assert ghl.db.locations.get(second) is None
    # the minted Location token is accepted for provider calls (a Company token would not be)
    contact = await ghl.contact(first)
    assert (await ghl.client.add_inbound_message(first, contact, "hi", alt_id="wamid.2")).message_id
    # the agency listing pages through skip/limit
    paged = await ghl.client.installed_locations(company, page_size=1)
    assert sorted(loc.id for loc in paged) == sorted([first, second])


@pytest.mark.asyncio
@pytest.mark.parametrize("click", ["location:0", "agency"])
async def test_with_offloads_the_install_flow_writes_no_secret_and_no_row_on_the_loop(
        ghl: Harness, monkeypatch: pytest.MonkeyPatch, click: str) -> None:
    """The app's wiring (``offload`` = the storage executor): saving what an install produced (keyring
    writes are D-Bus round trips, the row writes fsyncs) never runs on the loop thread. Once these ran
    inline and the blocked-loop detector caught an 85 ms fsync in CI (docs/event-loop.md)."""
    loop_thread = threading.get_ident()
    on_loop: list[str] = []

    def watch(target: object, name: str) -> None:
        original = getattr(target, name)

        def watched(*args: object, **kwargs: object) -> object:
            if threading.get_ident() == loop_thread:
                on_loop.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(target, name, watched)

    for name in ("set", "delete"):
        watch(ghl.secrets, name)
    for name in ("get", "upsert", "set_state", "set_token_expiry"):
        watch(ghl.db.locations, name)
    tokens, client = ghl.build(offload=asyncio.to_thread)
    browser = Browser(click=click)
    connector = OAuthConnector(ghl.settings, tokens, client, ghl.db.locations, open_url=browser,
                               options=OAuthOptions.from_settings(ghl.settings, timeout_seconds=10.0),
                               offload=asyncio.to_thread)
    [location] = await connector.connect(choose=lambda found: [found[0]])
    await browser.finish()
    assert location.state is LocationState.CONNECTED
    assert ghl.secrets.get(location_key(location.id, "access_token"))
    assert on_loop == []


@pytest.mark.asyncio
async def test_installed_locations_pages_on_count_with_a_server_side_page_cap(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    """The server answers at most 20 rows whatever ``limit`` asks: every one of 45 agency locations is
    still listed (paging on ``skip < count`` with the rows returned, not on "short page = last")."""
    async with ghl_factory(locations=45, installed_locations_page_cap=20) as ghl:
        browser = Browser(click="agency")
        offered: list[str] = []

        def choose(installed):  # type: ignore[no-untyped-def]
            offered.extend(loc.id for loc in installed)
            return [installed[0]]

        await ghl.oauth(browser).connect(choose=choose)
        await browser.finish()
        assert sorted(offered) == sorted(ghl.sandbox.location_ids) and len(offered) == 45
        for page_size in (100, 20, 7):
            listed = await ghl.client.installed_locations(ghl.sandbox.company_id, page_size=page_size)
            assert sorted(loc.id for loc in listed) == sorted(ghl.sandbox.location_ids)
        # the cap can change while running (control API): still every location
        answer = await ghl.control("POST", "/_sandbox/config", {"installed_locations_page_cap": 3})
        assert answer["installed_locations_page_cap"] == 3
        listed = await ghl.client.installed_locations(ghl.sandbox.company_id)
        assert sorted(loc.id for loc in listed) == sorted(ghl.sandbox.location_ids)


@pytest.mark.asyncio
async def test_v2_consent_path_works_too(ghl: Harness) -> None:
    browser = Browser()
    connected = await ghl.oauth(browser, authorize_path="/v2/oauth/chooselocation").connect()
    await browser.finish()
    assert httpx.URL(browser.opened[0]).path == "/v2/oauth/chooselocation"
    assert [loc.id for loc in connected] == [ghl.sandbox.location_ids[0]]


@pytest.mark.asyncio
async def test_redirect_with_a_wrong_state_is_refused_and_nothing_is_connected(ghl: Harness) -> None:
    def forge(target: str) -> str:
        url = httpx.URL(target)
        return str(url.copy_set_param("state", "forged-" + url.params["state"]))

    browser = Browser(tamper=forge)
    connector = ghl.oauth(browser, timeout_seconds=0.5)
    with pytest.raises(OAuthError, match="wrong state"):
        await connector.connect()
    await browser.finish()
    assert browser.pages[0].status_code == 400
    assert "oauth_token_authorization_code" not in ghl.stats  # the code was never exchanged
    assert ghl.db.locations.list() == []
    assert ghl.secrets.values == {}
    assert _closed(httpx.URL(httpx.URL(browser.opened[0]).params["redirect_uri"]).port)


@pytest.mark.asyncio
async def test_nobody_answers_the_consent_page_times_out_and_closes_the_listener(ghl: Harness) -> None:
    opened: list[str] = []
    connector = ghl.oauth(opened.append, timeout_seconds=0.3)
    with pytest.raises(OAuthError, match=r"within 0\.3 s"):
        await connector.connect()
    assert connector.receiver is None
    assert _closed(httpx.URL(httpx.URL(opened[0]).params["redirect_uri"]).port)


@pytest.mark.asyncio
async def test_a_broken_opener_does_not_end_the_flow(ghl: Harness) -> None:
    """``webbrowser.open`` may raise or lie: the user can still open ``authorize_url`` by hand."""
    browser = Browser()

    def flaky(url: str) -> bool:
        browser(url)
        raise RuntimeError("no browser on this desktop")

    connected = await ghl.oauth(flaky).connect()
    await browser.finish()
    assert len(connected) == 1


@pytest.mark.asyncio
async def test_cancelling_the_flow_closes_the_listener(ghl: Harness) -> None:
    """The UI's Cancel button cancels the task: the port must be free again at once."""
    opened: list[str] = []
    shown = asyncio.Event()

    def open_url(url: str) -> None:
        opened.append(url)
        shown.set()

    connector = ghl.oauth(open_url)
    task = asyncio.get_running_loop().create_task(connector.connect())
    await asyncio.wait_for(shown.wait(), 10)
    assert connector.authorize_url == opened[0]
    port = httpx.URL(httpx.URL(opened[0]).params["redirect_uri"]).port
    assert not _closed(port)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _closed(port) and connector.receiver is None


@pytest.mark.asyncio
async def test_the_consent_request_carries_exactly_the_app_registration(ghl: Harness) -> None:
    """The redirect URI and scopes come from one place (``app_registration``): what the README and the
    first-run checklist show is what the consent request carries, and the strict sandbox accepts it."""
    registration = app_registration(ghl.settings)
    assert registration.redirect_uri == f"http://127.0.0.1:{ghl.settings.oauth_redirect_port}/oauth/callback"
    assert set(registration.scopes) == set(PROVIDER_SCOPES) | set(COMPANY_SCOPES)
    assert app_registration().redirect_uri == "http://127.0.0.1:53682/oauth/callback"  # Settings' default port
    browser = Browser()
    await ghl.oauth(browser).connect()
    await browser.finish()
    opened = httpx.URL(browser.opened[0]).params
    assert opened["redirect_uri"] == registration.redirect_uri
    assert opened["scope"] == registration.scope_text
    # the same app asking for a subset of its scopes is refused by the consent page
    async with httpx.AsyncClient() as http:
        subset = httpx.URL(browser.opened[0]).copy_merge_params({"scope": " ".join(registration.scopes[:-1])})
        assert (await http.get(subset)).status_code == 400


def test_the_readme_shows_the_app_registration() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    registration = app_registration()
    assert f"`{registration.redirect_uri}`" in readme
    shown = re.search(r"with exactly these scopes: `([^`]*)`", readme)
    assert shown is not None and shown.group(1).split() == list(registration.scopes)
