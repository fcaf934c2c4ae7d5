"""Helpers for the sandbox tests: drive the sandbox the way a client would, over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx

from ghl_desktop.adapters.ghl.oauth import app_registration
from ghl_desktop.sandbox.server import RunningSandbox

#: the product's own redirect URI and scopes: what the sandbox's app is registered with by default
REDIRECT = app_registration().redirect_uri
SCOPES = app_registration().scope_text
CONV = "2021-04-15"
CONTACTS = "2021-07-28"


def auth(token: str, version: str = CONV) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Version": version}


def consent_query(sb: RunningSandbox, state: str = "st-1", redirect: str = REDIRECT, **extra: str) -> dict[str, str]:
    return {"response_type": "code", "client_id": sb.client_id, "redirect_uri": redirect, "state": state,
            "scope": SCOPES, **extra}


async def approve(client: httpx.AsyncClient, sb: RunningSandbox, **target: str) -> httpx.URL:
    """Follow the consent page's approve link (locationId=... or companyId=...) and return the redirect."""
    r = await client.get("/oauth/chooselocation/approve", params={**target, **consent_query(sb)})
    assert r.status_code == 302, r.text
    return httpx.URL(r.headers["location"])


async def exchange(client: httpx.AsyncClient, sb: RunningSandbox, code: str,
                   user_type: str = "Location") -> httpx.Response:
    return await client.post("/oauth/token", data={
        "client_id": sb.client_id, "client_secret": sb.client_secret, "grant_type": "authorization_code",
        "code": code, "user_type": user_type, "redirect_uri": REDIRECT})


async def refresh(client: httpx.AsyncClient, sb: RunningSandbox, refresh_token: str) -> httpx.Response:
    return await client.post("/oauth/token", data={
        "client_id": sb.client_id, "client_secret": sb.client_secret, "grant_type": "refresh_token",
        "refresh_token": refresh_token, "user_type": "Location"})


async def location_install(client: httpx.AsyncClient, sb: RunningSandbox, location_id: str) -> dict[str, Any]:
    """The full consent round trip for one location; returns the token response."""
    url = await approve(client, sb, locationId=location_id)
    r = await exchange(client, sb, url.params["code"])
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def upsert(client: httpx.AsyncClient, token: str, location_id: str, phone: str, **extra: Any) -> httpx.Response:
    return await client.post("/contacts/upsert", headers=auth(token, CONTACTS),
                             json={"locationId": location_id, "phone": phone, **extra})


async def inbound(client: httpx.AsyncClient, sb: RunningSandbox, token: str, contact_id: str, text: str = "hi",
                  **extra: Any) -> httpx.Response:
    body = {"type": "Custom", "contactId": contact_id, "conversationProviderId": sb.provider_id,
            "message": text, "direction": "inbound", **extra}
    return await client.post("/conversations/messages/inbound", headers=auth(token), json=body)


async def state(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/_sandbox/state")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body
