"""OAuth in the sandbox: consent redirect, code exchange, expiry, refresh rotation, Company vs Location."""

from __future__ import annotations

import httpx
import pytest

from ghl_desktop.sandbox.oauth import any_port
from ghl_desktop.sandbox.server import RunningSandbox
from tests.sandbox.api_helpers import (
    CONTACTS,
    REDIRECT,
    SCOPES,
    approve,
    auth,
    consent_query,
    exchange,
    inbound,
    location_install,
    refresh,
    upsert,
)


@pytest.mark.asyncio
async def test_consent_page_lists_locations_and_redirect_carries_code_and_state(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        for path in ("/oauth/chooselocation", "/v2/oauth/chooselocation"):
            page = await client.get(path, params=consent_query(sandbox))
            assert page.status_code == 200
            for loc in sandbox.state.locations.values():
                assert loc.name in page.text
                assert f"/oauth/chooselocation/approve?locationId={loc.id}&amp;" in page.text
        loc_id = sandbox.location_ids[0]
        url = await approve(client, sandbox, locationId=loc_id)
        assert str(url).startswith(REDIRECT + "?")
        assert url.params["state"] == "st-1"
        assert len(url.params["code"]) == 40
        r = await exchange(client, sandbox, url.params["code"])
        assert r.status_code == 200
        body = r.json()
        assert body["userType"] == "Location" and body["locationId"] == loc_id
        assert body["token_type"] == "Bearer" and body["expires_in"] == 86399 and body["refresh_token"]
        # a code is good once
        again = await exchange(client, sandbox, url.params["code"])
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
        assert sandbox.state.locations[loc_id].installed


@pytest.mark.asyncio
async def test_consent_refuses_unknown_client_and_foreign_redirect(sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    async with sandbox_factory(redirect_uris=["https://app.example.com/cb"]) as sb, \
            httpx.AsyncClient(base_url=sb.url) as client:
        bad_client = await client.get("/oauth/chooselocation", params=consent_query(sb, client_id="nope-123"))
        assert bad_client.status_code == 400 and "client_id" in bad_client.text
        foreign = await client.get("/oauth/chooselocation", params=consent_query(sb, redirect="https://evil.example/cb"))
        assert foreign.status_code == 400
        approve_foreign = await client.get("/oauth/chooselocation/approve", params={
            "locationId": sb.location_ids[0], **consent_query(sb, redirect="https://evil.example/cb")})
        assert approve_foreign.status_code == 400 and "location" not in approve_foreign.headers
        # exactly the registered URIs: the product's own and the one added with --redirect-uri
        for ok_redirect in (REDIRECT, "https://app.example.com/cb"):
            page = await client.get("/oauth/chooselocation", params=consent_query(sb, redirect=ok_redirect))
            assert page.status_code == 200, ok_redirect
        own = httpx.URL(REDIRECT)
        near_misses = [
            str(own.copy_with(port=own.port + 1)),  # another port
            str(own.copy_with(path="/oauth/callback/")),  # another path
            str(own.copy_with(path="/x")),
            str(own.copy_with(host="localhost")),  # another loopback spelling
            str(own.copy_with(scheme="https")),
            str(own.copy_with(query=b"next=1")),
            "https://app.example.com/cb/extra",
            "http://localhost:5000/x",
        ]
        for bad in near_misses:
            page = await client.get("/oauth/chooselocation", params=consent_query(sb, redirect=bad))
            assert page.status_code == 400 and "redirect" in page.text.lower(), bad


@pytest.mark.asyncio
async def test_consent_requires_exactly_the_apps_scopes(sandbox: RunningSandbox) -> None:
    scopes = SCOPES.split()
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        reordered = await client.get("/oauth/chooselocation",
                                     params=consent_query(sandbox, scope=" ".join(reversed(scopes))))
        assert reordered.status_code == 200  # order does not matter
        for bad in (" ".join(scopes[1:]), "contacts.readonly", "", SCOPES + " users.readonly"):
            page = await client.get("/oauth/chooselocation", params=consent_query(sandbox, scope=bad))
            assert page.status_code == 400 and "scope" in page.text.lower(), bad
            approved = await client.get("/oauth/chooselocation/approve", params={
                "locationId": sandbox.location_ids[0], **consent_query(sandbox, scope=bad)})
            assert approved.status_code == 400 and "location" not in approved.headers, bad


@pytest.mark.asyncio
async def test_any_port_registration_accepts_that_uri_on_any_port_only(sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    own = httpx.URL(REDIRECT)
    async with sandbox_factory(redirect_uris=[any_port(REDIRECT)]) as sb, httpx.AsyncClient(base_url=sb.url) as client:
        for port in (1, 40123, own.port):
            page = await client.get("/oauth/chooselocation",
                                    params=consent_query(sb, redirect=str(own.copy_with(port=port))))
            assert page.status_code == 200, port
        for bad in (str(own.copy_with(port=40123, path="/other")), str(own.copy_with(host="localhost", port=40123)),
                    f"http://{own.host}/oauth/callback"):
            page = await client.get("/oauth/chooselocation", params=consent_query(sb, redirect=bad))
            assert page.status_code == 400, bad


@pytest.mark.asyncio
async def test_wrong_client_secret_is_refused(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        url = await approve(client, sandbox, locationId=sandbox.location_ids[0])
        r = await client.post("/oauth/token", data={"client_id": sandbox.client_id, "client_secret": "wrong",
                                                    "grant_type": "authorization_code", "code": url.params["code"]})
        assert r.status_code == 401


@pytest.mark.asyncio
async def test_expired_access_token_gives_invalid_jwt(sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    async with sandbox_factory(access_token_lifetime=60) as sb, httpx.AsyncClient(base_url=sb.url) as client:
        loc = sb.location_ids[0]
        tokens = await location_install(client, sb, loc)
        assert tokens["expires_in"] == 60
        assert (await upsert(client, tokens["access_token"], loc, "+14155550100")).status_code == 200
        await client.post("/_sandbox/clock", json={"advance_seconds": 61})
        r = await upsert(client, tokens["access_token"], loc, "+14155550100")
        assert r.status_code == 401
        assert r.json() == {"statusCode": 401, "message": "Invalid JWT"}
        garbage = await upsert(client, "not-a-token", loc, "+14155550100")
        assert garbage.status_code == 401 and garbage.json()["message"] == "Invalid JWT"


@pytest.mark.asyncio
async def test_expire_control_then_refresh_rotates_with_grace_then_invalid_grant(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        first = await location_install(client, sandbox, loc)
        r = await client.post("/_sandbox/tokens/expire", json={"locationId": loc})
        assert r.json()["expired"] == 1
        assert (await upsert(client, first["access_token"], loc, "+14155550101")).status_code == 401

        second = await refresh(client, sandbox, first["refresh_token"])
        assert second.status_code == 200
        pair = second.json()
        assert pair["refresh_token"] != first["refresh_token"]
        assert (await upsert(client, pair["access_token"], loc, "+14155550101")).status_code == 200
        # a concurrent refresh with the same token inside the grace gets the same new pair
        within = await refresh(client, sandbox, first["refresh_token"])
        assert within.status_code == 200 and within.json()["refresh_token"] == pair["refresh_token"]
        # after the grace the old refresh token is dead
        await client.post("/_sandbox/clock", json={"advance_seconds": 31})
        late = await refresh(client, sandbox, first["refresh_token"])
        assert late.status_code == 400
        assert late.json()["error"] == "invalid_grant" and late.json()["error_description"]
        # the rotated one still works, once
        third = await refresh(client, sandbox, pair["refresh_token"])
        assert third.status_code == 200
        assert sandbox.state.stats["oauth_refreshes"] == 2
        by_location = (await client.get("/_sandbox/state")).json()["stats"]["oauth_refreshes_by_location"]
        assert by_location == {loc: 2}


@pytest.mark.asyncio
async def test_agency_install_gives_company_token_that_mints_location_tokens(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        page = await client.get("/oauth/chooselocation", params=consent_query(sandbox))
        assert f"companyId={sandbox.company_id}" in page.text
        url = await approve(client, sandbox, companyId=sandbox.company_id)
        # asked for a Location token, the agency install still yields a Company token (docs/highlevel-api.md §1.2)
        r = await exchange(client, sandbox, url.params["code"], user_type="Location")
        company = r.json()
        assert company["userType"] == "Company" and "locationId" not in company
        assert company["isBulkInstallation"] is True
        assert sorted(company["approvedLocations"]) == sorted(sandbox.location_ids)
        ctoken = company["access_token"]
        loc = sandbox.location_ids[1]

        # a Company token on a Location-only endpoint is refused with the authClass 401
        denied = await upsert(client, ctoken, loc, "+14155550102")
        assert denied.status_code == 401 and "authClass" in denied.json()["message"]

        listing = await client.get("/oauth/installedLocations", headers=auth(ctoken, CONTACTS),
                                   params={"companyId": sandbox.company_id, "appId": sandbox.app_id})
        assert listing.status_code == 200
        assert {row["_id"] for row in listing.json()["locations"]} == set(sandbox.location_ids)
        assert all(row["isInstalled"] for row in listing.json()["locations"])

        minted = await client.post("/oauth/locationToken", headers=auth(ctoken, CONTACTS),
                                   data={"companyId": sandbox.company_id, "locationId": loc})
        assert minted.status_code == 200, minted.text
        body = minted.json()
        assert body["userType"] == "Location" and body["locationId"] == loc and body["refresh_token"]
        contact = await upsert(client, body["access_token"], loc, "+14155550102")
        assert contact.status_code == 200
        sent = await inbound(client, sandbox, body["access_token"], contact.json()["contact"]["id"])
        assert sent.status_code == 200
        # a Location token cannot mint location tokens
        again = await client.post("/oauth/locationToken", headers=auth(body["access_token"], CONTACTS),
                                  data={"companyId": sandbox.company_id, "locationId": loc})
        assert again.status_code == 401


@pytest.mark.asyncio
async def test_token_scopes_are_enforced(sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    # an app registered with fewer scopes than the product needs gets tokens that lack them
    async with sandbox_factory(app_scopes=["contacts.readonly"]) as sandbox, \
            httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        query = {**consent_query(sandbox, scope="contacts.readonly"), "locationId": loc}
        r = await client.get("/oauth/chooselocation/approve", params=query)
        code = httpx.URL(r.headers["location"]).params["code"]
        token = (await exchange(client, sandbox, code)).json()["access_token"]
        write = await upsert(client, token, loc, "+14155550103")
        assert write.status_code == 401
        assert write.json()["message"] == "The token is not authorized for this scope."
