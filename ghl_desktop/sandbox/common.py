"""Small pieces shared by the sandbox's route modules: the app key, route metadata and reply helpers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ghl_desktop.sandbox.runtime import ApiError, Sandbox
from ghl_desktop.sandbox.state import Token

SANDBOX: web.AppKey[Sandbox] = web.AppKey("ghl_sandbox", Sandbox)
TOKEN: web.RequestKey[Token] = web.RequestKey("ghl_token", Token)
BODY: web.RequestKey[bytes] = web.RequestKey("ghl_body", bytes)


@dataclass(frozen=True)
class RouteMeta:
    """How the API middleware treats one HighLevel route.

    auth: None (no bearer: /oauth/token), "location" (Location token), "provider" (Location token of the
    provider-owning app), "company" (Company token), "any" (either).
    """

    auth: str | None
    scope: str | None = None
    version: bool = True


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RouteTable(list[tuple[str, str, Handler, RouteMeta]]):
    """HighLevel API routes of one module, with the metadata the API middleware needs."""

    def route(self, method: str, path: str, meta: RouteMeta) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.append((method, path, fn, meta))
            return fn

        return deco


def sandbox_of(request: web.Request) -> Sandbox:
    return request.app[SANDBOX]


def token_of(request: web.Request) -> Token:
    return request[TOKEN]


def body_of(request: web.Request) -> bytes:
    return request[BODY]


def json_body(request: web.Request) -> dict[str, Any]:
    """The already-validated JSON body (validation guarantees an object where the spec wants one)."""
    try:
        data = json.loads(body_of(request) or b"{}")
    except ValueError as exc:
        raise ApiError(400, {"statusCode": 400, "message": "Invalid JSON body"}) from exc
    if not isinstance(data, dict):
        raise ApiError(422, {"statusCode": 422, "message": ["body must be an object"],
                             "error": "Unprocessable Entity"})
    return data


def trace_id() -> str:
    return str(uuid.uuid4())


def ok(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({**data, "traceId": trace_id()}, status=status)


def require_location(request: web.Request, location_id: str | None) -> str:
    """The token must belong to this location (or its agency for read-only location details)."""
    token = token_of(request)
    if not location_id or token.location_id != location_id:
        raise ApiError(403, {"statusCode": 403, "message": "The token does not have access to this location."})
    return location_id


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"
