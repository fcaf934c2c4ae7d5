"""The HighLevel sandbox: an aiohttp app that answers like services.leadconnectorhq.com (plus the consent
page, an HTML inbox and a control API), for sandbox mode and for every test of the HighLevel client.

Every API request passes the same gate, in HighLevel's order: optional latency; the ``Version`` header
(missing/unknown -> 401); the bearer token (bad/expired -> 401 "Invalid JWT"); the rate limit for the
app and resource (429, ``X-RateLimit-*`` headers on every authenticated answer); injected 5xx faults;
the token class, owner and scope (401); validation against the official spec (422, counted); then the
handler's own behaviour.

Composition: ``create_sandbox_app(config)`` returns an open ``web.Application``; other modules may add
routes before it starts (the simulated WhatsApp network: ``setup_whatsapp_network(app, state_dir)``
from ``ghl_desktop/sandbox/whatsapp/`` belongs right after ``create_sandbox_app`` in
``running_sandbox`` and ``cli.run_sandbox``, or pass it as ``setup=`` to ``running_sandbox``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from aiohttp import web

from ghl_desktop.sandbox import api, oauth
from ghl_desktop.sandbox.common import BODY, SANDBOX, TOKEN, RouteMeta
from ghl_desktop.sandbox.control import add_control_routes
from ghl_desktop.sandbox.inbox import add_inbox_routes
from ghl_desktop.sandbox.phones_page import add_phones_routes
from ghl_desktop.sandbox.runtime import (
    AUTH_CLASS_MESSAGE,
    MB,
    ApiError,
    Sandbox,
    SandboxConfig,
    unauthorized,
)
from ghl_desktop.sandbox.state import SandboxState, Token
from ghl_desktop.sandbox.validation import PUBLISHED_VERSIONS, ValidationOutcome

log = logging.getLogger("ghl.sandbox")

API_PREFIXES = ("/oauth/", "/conversations", "/contacts", "/locations", "/users")
ROUTE_META: web.AppKey[dict[tuple[str, str], RouteMeta]] = web.AppKey("ghl_route_meta", dict)
NO_PROVIDER_ACCESS = "CONVERSATIONS_MSG_PROVIDER_NO_ACCESS"


def _is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) and not path.startswith("/oauth/chooselocation")


def _check_version(sandbox: Sandbox, request: web.Request) -> None:
    version = request.headers.get("Version")
    if version is None:
        sandbox.record_validation_failure(request.method, request.path, ["Version header is missing"], True)
        raise ApiError(401, {"statusCode": 401, "message": "version header was not found."})
    if version not in PUBLISHED_VERSIONS:
        sandbox.record_validation_failure(request.method, request.path, [f"Version {version!r} is unknown"], True)
        raise ApiError(401, {"statusCode": 401, "message": "version header is invalid"})
    # which values reach which API area ("version 2021-04-15 /conversations"): lets a test prove a client
    # switched every path it calls
    sandbox.state.count(f"version {version} /{request.path.lstrip('/').split('/', 1)[0]}")
    if sandbox.config.strict_versions and version in sandbox.config.retired_versions:
        # UNCONFIRMED wording for a retired value; the same 401 as an unknown one
        sandbox.state.count("retired_version_refused")
        raise ApiError(401, {"statusCode": 401, "message": "version header is invalid",
                             "error": f"Version {version} is retired"})


def _check_access(sandbox: Sandbox, token: Token, meta: RouteMeta) -> None:
    if meta.auth in ("location", "provider") and token.auth_class != "Location":
        raise unauthorized(AUTH_CLASS_MESSAGE)
    if meta.auth == "company" and token.auth_class != "Company":
        raise unauthorized(AUTH_CLASS_MESSAGE)
    if meta.scope and meta.scope not in token.scopes:
        raise unauthorized("The token is not authorized for this scope.")
    if meta.auth == "provider" and (token.source != "INTEGRATION" or token.client_id != sandbox.state.app.client_id):
        # Only the provider-owning app may post provider messages (docs/highlevel-api.md §2.1); which field carries the
        # code is UNCONFIRMED: message and canonicalCode both do.
        raise ApiError(401, {"statusCode": 401, "message": NO_PROVIDER_ACCESS, "canonicalCode": NO_PROVIDER_ACCESS,
                             "error": "Unauthorized"})


async def _gate(sandbox: Sandbox, request: web.Request, meta: RouteMeta,
                handler: Callable[[web.Request], Any], headers: dict[str, str]) -> web.StreamResponse:
    state = sandbox.state
    faults = state.faults
    if meta.version:
        _check_version(sandbox, request)
    if meta.auth is not None:
        token = sandbox.authenticate(request.headers.get("Authorization"))
        request[TOKEN] = token
        key = f"{token.client_id or 'pit:' + token.token[-12:]}:{token.location_id or token.company_id}"
        allowed, limit_headers = sandbox.limiter.hit(key, state.now(), faults)
        headers.update(limit_headers)
        if not allowed:
            state.count("rate_limited")
            raise ApiError(429, {"statusCode": 429, "message": "Too Many Requests"})
    if faults.error_rate > 0 and sandbox.random.random() < faults.error_rate:
        status = sandbox.random.choice((500, 502, 503, 504))
        state.count("injected_errors")
        raise ApiError(status, {"statusCode": status, "message": "Internal server error" if status == 500
                                else "Service Unavailable"})
    if meta.auth is not None:
        _check_access(sandbox, request[TOKEN], meta)
    # OpenAPI validation is CPU work (tens of ms for a big body): on a worker thread, so the loop it
    # shares with the app in sandbox mode and in the tests keeps answering (docs/event-loop.md)
    outcome = await asyncio.to_thread(_validate, sandbox, request.method, request.path, request.query,
                                      request.headers, request.headers.get("Content-Type", ""), request[BODY])
    if outcome.errors:
        sandbox.record_validation_failure(request.method, request.path, outcome.errors, True)
        raise ApiError(422, {"statusCode": 422, "message": outcome.errors, "error": "Unprocessable Entity"})
    deviations = outcome.deviations
    if sandbox.config.strict_versions:
        # the old values are declared retired: a newer published Version is what a client must send
        deviations = [d for d in deviations if not d.startswith("Version ")]
    if deviations:
        sandbox.record_validation_failure(request.method, request.path, deviations, False)
    result: web.StreamResponse = await handler(request)
    if faults.lost_response_rate > 0 and sandbox.random.random() < faults.lost_response_rate:
        # the work is done but the client never hears so: a retry must not duplicate it
        state.count("lost_responses")
        raise ApiError(504, {"statusCode": 504, "message": "Gateway Timeout"})
    return result


def _validate(sandbox: Sandbox, *args: Any) -> ValidationOutcome:
    """(worker thread) The request against the spec; waits for the validator if it is still being built."""
    return sandbox.validator.validate(*args)


def _path_known(sandbox: Sandbox, path: str) -> bool:
    return sandbox.validator.path_known(path)


@web.middleware
async def api_middleware(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    if not _is_api_path(request.path):
        result: web.StreamResponse = await handler(request)
        return result
    sandbox = request.app[SANDBOX]
    route = request.match_info.route
    resource = route.resource
    meta = request.app[ROUTE_META].get((request.method, resource.canonical)) if resource is not None else None
    sandbox.state.count("api_requests")
    if sandbox.state.faults.latency_ms > 0:
        await asyncio.sleep(sandbox.state.faults.latency_ms / 1000)
    if meta is None:
        if not await asyncio.to_thread(_path_known, sandbox, request.path):
            sandbox.record_validation_failure(request.method, request.path, ["no such path in the HighLevel spec"],
                                              True)
        return web.json_response({"statusCode": 404, "message": f"Cannot {request.method} {request.path}",
                                  "error": "Not Found"}, status=404)
    request[BODY] = await request.read()
    headers: dict[str, str] = {}
    try:
        response = await _gate(sandbox, request, meta, handler, headers)
    except ApiError as exc:
        response = web.json_response(exc.body, status=exc.status)
    response.headers.update(headers)
    return response


def create_sandbox_app(config: SandboxConfig | None = None, **options: Any) -> web.Application:
    """Build the sandbox aiohttp app (not yet listening). Other modules may add routes to it."""
    config = config or SandboxConfig(**options)
    sandbox = Sandbox(config)
    app = web.Application(middlewares=[api_middleware],
                          client_max_size=max(config.whatsapp_upload_max_bytes, config.upload_max_bytes) + MB)
    app[SANDBOX] = sandbox
    meta: dict[tuple[str, str], RouteMeta] = {}
    for method, path, handler, route_meta in oauth.API_ROUTES + api.API_ROUTES:
        app.router.add_route(method, path, handler)
        meta[(method, path)] = route_meta
    app[ROUTE_META] = meta
    oauth.add_consent_routes(app)
    app.router.add_put("/_sandbox/gcs/{uploadId}", api.put_upload)
    app.router.add_get("/files/{fileId}/{filename}", api.get_file)
    add_control_routes(app)
    add_inbox_routes(app)
    add_phones_routes(app)

    async def _close(_: web.Application) -> None:
        await sandbox.close()

    app.on_cleanup.append(_close)
    return app


@dataclass
class RunningSandbox:
    """A listening sandbox: what tests and the in-process sandbox mode need to talk to it."""

    url: str
    app: web.Application
    sandbox: Sandbox

    @property
    def state(self) -> SandboxState:
        return self.sandbox.state

    @property
    def client_id(self) -> str:
        return self.sandbox.state.app.client_id

    @property
    def client_secret(self) -> str:
        return self.sandbox.state.app.client_secret

    @property
    def provider_id(self) -> str:
        return self.sandbox.state.app.provider_id

    @property
    def app_id(self) -> str:
        return self.sandbox.state.app.app_id

    @property
    def company_id(self) -> str:
        return self.sandbox.state.company_id

    @property
    def location_ids(self) -> list[str]:
        return list(self.sandbox.state.locations)

    @property
    def public_key_pem(self) -> str:
        return self.sandbox.state.public_key_pem()

    def location_token(self, location_id: str) -> dict[str, Any]:
        """Skip the consent round trip: mint a Location token pair as /oauth/token would answer."""
        from ghl_desktop.sandbox.runtime import APP_SCOPES

        loc = self.sandbox.location(location_id)
        loc.installed = True
        loc.installed_at = loc.installed_at or self.sandbox.state.now()
        return self.sandbox.token_response("Location", location_id, list(APP_SCOPES))

    def set_faults(self, **values: Any) -> None:
        names = {f.name for f in fields(self.sandbox.state.faults)}
        for key, value in values.items():
            if key not in names:
                raise TypeError(f"unknown fault {key}")
            setattr(self.sandbox.state.faults, key, value)
        self.sandbox.changed()

    async def reply(self, location_id: str, contact_id: str, message: str,
                    attachments: list[str] | None = None) -> dict[str, Any]:
        return await self.sandbox.reply(location_id, contact_id, message, attachments)


@asynccontextmanager
async def running_sandbox(setup: Callable[[web.Application], None] | None = None,
                          **options: Any) -> AsyncIterator[RunningSandbox]:
    """Start a sandbox on 127.0.0.1 and a free port (by default); stop it on exit.

    ``options`` are SandboxConfig fields (e.g. ``locations=3, status_race_seconds=0,
    rate_limit_window_seconds=0.2, webhook_url=..., state_dir=...``); ``setup(app)`` may add routes.
    Without a ``setup`` the simulated WhatsApp network is mounted on the same app, keeping its state
    next to the sandbox's (``state_dir``).
    """
    config = SandboxConfig(**options)
    app = create_sandbox_app(config)
    if setup is not None:
        setup(app)
    else:
        from ghl_desktop.sandbox.whatsapp import setup_whatsapp_network

        setup_whatsapp_network(app, Path(config.state_dir) if config.state_dir else None)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    _host, port = runner.addresses[0][:2]
    shown = config.host if config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    url = f"http://{shown}:{port}"
    try:
        yield RunningSandbox(url=url, app=app, sandbox=app[SANDBOX])
    finally:
        await runner.cleanup()
