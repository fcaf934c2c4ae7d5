"""The control API under /_sandbox/ for demos and scripted tests (not part of HighLevel).

GET  /_sandbox/state                               everything (see SandboxState.snapshot)
POST /_sandbox/reset                               forget data, keep app credentials and locations
POST /_sandbox/faults        {error_rate, lost_response_rate, latency_ms, status_race_seconds,
                              rate_limit_per_10s, rate_limit_daily, rate_limit_window_seconds}  (partial)
POST /_sandbox/config        {webhook_url, app_webhook_url, hold_webhooks, strict_versions,
                              retired_versions, installed_locations_page_cap}   (partial update; a new URL
                             resumes deliveries a killed run left unfinished; hold_webhooks: true keeps
                             new ones pending while the receiver shuts down)
POST /_sandbox/oauth/refresh_failures {kind? | status+body?, count?, locationId?, company?}
                             the next `count` (1) matching refresh grants are refused with that answer;
                             kind: invalid_grant | location_inactive | unauthorized | unprocessable
                             (REFRESH_FAILURE_BODIES). DELETE clears them.
POST /_sandbox/clock         {advance_seconds}
POST /_sandbox/tokens/expire {locationId? | company? | token?}   -> {expired: n}
POST /_sandbox/contacts/merge {keepContactId, mergeContactId}
POST /_sandbox/locations/{locationId}/reply     {contactId, message, attachments?}
POST /_sandbox/locations/{locationId}/contacts  {phone, name?}                -> contact
POST /_sandbox/locations/{locationId}/token     {}  -> a Location token response (marks the app installed)
POST /_sandbox/locations/{locationId}/pit       {}  -> {token} (a Private Integration Token)
POST /_sandbox/locations/{locationId}/uninstall {}  -> UNINSTALL webhook, tokens revoked
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiohttp import web

from ghl_desktop.sandbox.common import sandbox_of
from ghl_desktop.sandbox.runtime import (
    APP_SCOPES,
    REFRESH_FAILURE_BODIES,
    ApiError,
    RefreshFailure,
    normalize_phone,
)
from ghl_desktop.sandbox.state import Faults

FAULT_TYPES: dict[str, type] = {f.name: (float if f.type in ("float", float) else int)
                                for f in dataclasses.fields(Faults)}


async def _json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise web.HTTPBadRequest(text="body must be JSON") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return data


def _error(exc: ApiError) -> web.Response:
    return web.json_response(exc.body, status=exc.status)


async def get_state(request: web.Request) -> web.Response:
    from ghl_desktop.sandbox.whatsapp import NETWORK_KEY, whatsapp_state

    sandbox = sandbox_of(request)
    whatsapp = whatsapp_state(request.app) if NETWORK_KEY in request.app else {}
    return web.json_response({**sandbox.state.snapshot(), "rate_limits": sandbox.limiter.summary(), **whatsapp})


async def reset(request: web.Request) -> web.Response:
    sandbox_of(request).reset()
    return web.json_response({"ok": True})


async def faults(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await _json(request)
    unknown = sorted(set(data) - set(FAULT_TYPES))
    if unknown:
        return web.json_response({"error": f"unknown fault fields: {', '.join(unknown)}"}, status=400)
    for key, value in data.items():
        try:
            setattr(sandbox.state.faults, key, FAULT_TYPES[key](value))
        except (TypeError, ValueError):
            return web.json_response({"error": f"{key} must be a number"}, status=400)
    sandbox.changed()
    return web.json_response(dataclasses.asdict(sandbox.state.faults))


async def config(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await _json(request)
    if "webhook_url" in data:
        sandbox.state.webhook_url = data["webhook_url"]
    if "app_webhook_url" in data:
        sandbox.state.app_webhook_url = data["app_webhook_url"]
    if "hold_webhooks" in data:
        sandbox.holding_webhooks = bool(data["hold_webhooks"])
    if "strict_versions" in data:
        sandbox.config.strict_versions = bool(data["strict_versions"])
    if "installed_locations_page_cap" in data:
        cap = data["installed_locations_page_cap"]
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            return web.json_response({"error": "installed_locations_page_cap must be a positive number"}, status=400)
        sandbox.config.installed_locations_page_cap = cap
    if "retired_versions" in data:
        retired = data["retired_versions"]
        if not isinstance(retired, list) or not all(isinstance(v, str) for v in retired):
            return web.json_response({"error": "retired_versions must be a list of strings"}, status=400)
        sandbox.config.retired_versions = list(retired)
    sandbox.changed()
    if not sandbox.holding_webhooks:
        sandbox.resume_deliveries()  # what a killed run left unfinished goes to the new URL
    return web.json_response({"webhook_url": sandbox.state.webhook_url,
                              "app_webhook_url": sandbox.state.app_webhook_url,
                              "hold_webhooks": sandbox.holding_webhooks,
                              "strict_versions": sandbox.config.strict_versions,
                              "installed_locations_page_cap": sandbox.config.installed_locations_page_cap,
                              "retired_versions": sandbox.config.retired_versions})


async def refresh_failures(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    if request.method == "DELETE":
        sandbox.refresh_failures.clear()
        return web.json_response({"refresh_failures": []})
    data = await _json(request)
    kind = data.get("kind", "invalid_grant" if "status" not in data else None)
    if kind is not None:
        if kind not in REFRESH_FAILURE_BODIES:
            return web.json_response({"error": f"kind must be one of {', '.join(REFRESH_FAILURE_BODIES)}"},
                                     status=400)
        status, body = REFRESH_FAILURE_BODIES[kind]
    else:
        raw_status, body = data.get("status"), data.get("body", {})
        if not isinstance(raw_status, int) or not 400 <= raw_status <= 599 or not isinstance(body, dict):
            return web.json_response({"error": "status must be a 4xx/5xx number and body an object"}, status=400)
        status = raw_status
    count = data.get("count", 1)
    company = data.get("company")
    if not isinstance(count, int) or count < 1 or (company is not None and not isinstance(company, bool)):
        return web.json_response({"error": "count must be a positive number, company a boolean"}, status=400)
    sandbox.refresh_failures.append(RefreshFailure(status=status, body=body, remaining=count,
                                                   location_id=data.get("locationId"), company=company))
    return web.json_response({"refresh_failures": [dataclasses.asdict(f) for f in sandbox.refresh_failures]})


async def clock(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await _json(request)
    sandbox.state.clock_offset += float(data.get("advance_seconds", 0))
    sandbox.changed()
    return web.json_response({"now": sandbox.state.now(), "offset": sandbox.state.clock_offset})


async def expire_tokens(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await _json(request)
    n = sandbox.expire_tokens(location_id=data.get("locationId"), company=bool(data.get("company")),
                              token=data.get("token"))
    return web.json_response({"expired": n})


async def merge_contacts(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await _json(request)
    try:
        keep = sandbox.merge_contacts(str(data.get("keepContactId")), str(data.get("mergeContactId")))
    except ApiError as exc:
        return _error(exc)
    return web.json_response({"contactId": keep.id})


async def reply(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await _json(request)
    if not data.get("contactId") or not isinstance(data.get("message", ""), str):
        return web.json_response({"error": "contactId and message are required"}, status=400)
    attachments = data.get("attachments") or []
    if not isinstance(attachments, list) or not all(isinstance(a, str) for a in attachments):
        return web.json_response({"error": "attachments must be a list of URLs"}, status=400)
    try:
        result = await sandbox.reply(request.match_info["locationId"], data["contactId"],
                                     data.get("message", ""), attachments)
    except ApiError as exc:
        return _error(exc)
    return web.json_response(result, status=201)


async def add_contact(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await _json(request)
    try:
        loc = sandbox.location(request.match_info["locationId"])
    except ApiError as exc:
        return _error(exc)
    phone = normalize_phone(str(data.get("phone", "")), loc.country)
    if phone is None:
        return web.json_response({"error": "phone must be a valid phone number"}, status=400)
    contact = sandbox.find_contact(loc.id, phone=phone) or sandbox.create_contact(loc.id, phone, data.get("name"))
    return web.json_response({"id": contact.id, "locationId": loc.id, "phone": contact.phone, "name": contact.name})


async def location_token(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    try:
        loc = sandbox.location(request.match_info["locationId"])
    except ApiError as exc:
        return _error(exc)
    if not loc.installed:
        loc.installed = True
        loc.installed_at = sandbox.state.now()
    return web.json_response(sandbox.token_response("Location", loc.id, list(APP_SCOPES)))


async def pit(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    try:
        token = sandbox.create_pit(request.match_info["locationId"])
    except ApiError as exc:
        return _error(exc)
    return web.json_response({"token": token})


async def uninstall(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    try:
        sandbox.uninstall(request.match_info["locationId"])
    except ApiError as exc:
        return _error(exc)
    return web.json_response({"ok": True})


def add_control_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/_sandbox/state", get_state)
    r.add_post("/_sandbox/reset", reset)
    r.add_post("/_sandbox/faults", faults)
    r.add_post("/_sandbox/config", config)
    r.add_post("/_sandbox/clock", clock)
    r.add_post("/_sandbox/oauth/refresh_failures", refresh_failures)
    r.add_delete("/_sandbox/oauth/refresh_failures", refresh_failures)
    r.add_post("/_sandbox/tokens/expire", expire_tokens)
    r.add_post("/_sandbox/contacts/merge", merge_contacts)
    r.add_post("/_sandbox/locations/{locationId}/reply", reply)
    r.add_post("/_sandbox/locations/{locationId}/contacts", add_contact)
    r.add_post("/_sandbox/locations/{locationId}/token", location_token)
    r.add_post("/_sandbox/locations/{locationId}/pit", pit)
    r.add_post("/_sandbox/locations/{locationId}/uninstall", uninstall)
