"""OAuth: the consent page, the code/refresh exchange with rotating refresh tokens, Company -> Location
tokens and the installed-locations list (docs/highlevel-api.md §1)."""

from __future__ import annotations

import html
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web

from ghl_desktop.sandbox.common import RouteMeta, RouteTable, body_of, ok, sandbox_of, token_of
from ghl_desktop.sandbox.runtime import ApiError, Sandbox, invalid_grant
from ghl_desktop.sandbox.state import AuthCode, iso

API_ROUTES = RouteTable()
_route = API_ROUTES.route


def _form(request: web.Request) -> dict[str, str]:
    return dict(parse_qsl(body_of(request).decode("utf-8", "replace"), keep_blank_values=True))


# ----- token endpoints ------------------------------------------------------------------------------

@_route("POST", "/oauth/token", RouteMeta(auth=None, version=False))
async def token(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    form = _form(request)
    app = sandbox.state.app
    if form.get("client_id") != app.client_id or form.get("client_secret") != app.client_secret:
        # UNCONFIRMED wording; the spec's 401 for this path is UnauthorizedDTO.
        raise ApiError(401, {"statusCode": 401, "message": "Invalid client credentials", "error": "Unauthorized"})
    grant = form.get("grant_type")
    sandbox.state.count(f"oauth_token_{grant}")
    if grant == "authorization_code":
        return web.json_response(_exchange_code(sandbox, form))
    if grant == "refresh_token":
        return web.json_response(_refresh(sandbox, form))
    raise ApiError(400, {"error": "unsupported_grant_type",
                         "error_description": f"grant_type {grant} is not available to this app"})


def _exchange_code(sandbox: Sandbox, form: dict[str, str]) -> dict[str, Any]:
    code = sandbox.state.codes.get(form.get("code", ""))
    now = sandbox.state.now()
    if code is None or code.used or code.expires_at <= now or code.client_id != form["client_id"]:
        raise invalid_grant("Invalid authorization code")
    if form.get("redirect_uri") and form["redirect_uri"] != code.redirect_uri:
        raise invalid_grant("redirect_uri does not match the authorization request")
    code.used = True
    # HighLevel answers with the install's type whatever user_type asks (a bulk/agency install gives a
    # Company token even with user_type=Location; docs/highlevel-api.md §1.2 pitfall).
    if code.install_type == "Company":
        return sandbox.token_response("Company", None, code.scopes, approved=code.location_ids,
                                      approve_all=len(code.location_ids) == len(sandbox.state.locations))
    return sandbox.token_response("Location", code.location_ids[0], code.scopes)


def _refresh(sandbox: Sandbox, form: dict[str, str]) -> dict[str, Any]:
    """Rotation with a grace window: reuse within the grace returns the same new pair, later reuse
    is invalid_grant (docs/highlevel-api.md §1.3, CHANGELOG "Smarter Refresh Token Handling")."""
    state = sandbox.state
    now = state.now()
    old = state.tokens.get(form.get("refresh_token", ""))
    if old is None or old.kind != "refresh" or old.revoked or old.expires_at <= now or \
            old.client_id != form["client_id"]:
        raise invalid_grant("Invalid refresh token")
    refused = sandbox.refused_refresh(old)
    if refused is not None:
        raise refused
    if old.used_at is not None:
        if now - old.used_at <= sandbox.config.refresh_grace_seconds and old.successor is not None:
            state.count("oauth_refresh_grace_reuse")
            return dict(old.successor)
        raise invalid_grant("Refresh token has already been used")
    state.count("oauth_refreshes")
    where = old.location_id or "company"  # a company (agency) token has no location
    state.refreshes_by_location[where] = state.refreshes_by_location.get(where, 0) + 1
    response = sandbox.token_response(old.auth_class, old.location_id, old.scopes,
                                      approved=[loc for loc in state.locations if state.locations[loc].installed],
                                      approve_all=False)
    old.used_at = now
    old.successor = response
    sandbox.changed()
    return response


@_route("POST", "/oauth/locationToken", RouteMeta(auth="company", scope="oauth.write"))
async def location_token(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    form = _form(request)
    tok = token_of(request)
    if form.get("companyId") != tok.company_id:
        raise ApiError(403, {"statusCode": 403, "message": "The token does not have access to this company."})
    loc = sandbox.state.locations.get(form.get("locationId", ""))
    if loc is None or not loc.installed:
        # UNCONFIRMED wording: the app must be installed on the location.
        raise ApiError(400, {"statusCode": 400, "message": "App is not installed on this location"})
    scopes = [s for s in tok.scopes if not s.startswith("oauth.")]
    body = sandbox.token_response("Location", loc.id, scopes)
    body.update({"appId": sandbox.state.app.app_id, "versionId": sandbox.state.app.version_id})
    sandbox.state.count("oauth_location_tokens")
    return web.json_response(body)


@_route("GET", "/oauth/installedLocations", RouteMeta(auth="company", scope="oauth.readonly"))
async def installed_locations(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    tok = token_of(request)
    q = request.query
    if q.get("companyId") != tok.company_id:
        raise ApiError(403, {"statusCode": 403, "message": "The token does not have access to this company."})
    if q.get("appId") != sandbox.state.app.app_id:
        raise ApiError(400, {"statusCode": 400, "message": "Invalid appId"})
    locations = list(sandbox.state.locations.values())
    if "isInstalled" in q:
        wanted = q["isInstalled"].lower() == "true"
        locations = [loc for loc in locations if loc.installed == wanted]
    if q.get("query"):
        locations = [loc for loc in locations if q["query"].lower() in loc.name.lower()]
    if q.get("locationId"):
        locations = [loc for loc in locations if loc.id == q["locationId"]]
    skip, limit = int(q.get("skip", "0") or 0), int(q.get("limit", "20") or 20)
    limit = max(0, min(limit, sandbox.config.installed_locations_page_cap))
    page = locations[skip:skip + limit]
    return ok({"locations": [{"_id": loc.id, "name": loc.name, "address": "1 Sandbox Street",
                              "isInstalled": loc.installed, "versionId": sandbox.state.app.version_id,
                              **({"installedAt": iso(loc.installed_at)} if loc.installed_at else {})}
                             for loc in page],
               "count": len(locations), "installToFutureLocations": False})


# ----- consent page ---------------------------------------------------------------------------------

def any_port(uri: str) -> str:
    """``uri`` with its port replaced by ``*``: registered so, it matches that URI on any port."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return parts._replace(netloc=f"{host}:*").geturl()


def _matches_registered(registered: str, uri: str) -> bool:
    if uri == registered:
        return True
    want = urlsplit(registered)
    if not want.netloc.endswith(":*"):
        return False
    got = urlsplit(uri)
    try:
        port = got.port
    except ValueError:
        return False
    host = want.netloc[:-2]
    return (port is not None and got.scheme == want.scheme and got.netloc == f"{host}:{port}"
            and got.path == want.path and got.query == want.query and not got.fragment)


def redirect_allowed(sandbox: Sandbox, uri: str) -> bool:
    """Exactly the registered redirect URIs, as HighLevel checks them: the app's own (from
    ``app_registration``) and the ones given with --redirect-uri; any other port, path, host or
    scheme is refused. A registered ``*`` port is a sandbox-only allowance (see SandboxConfig)."""
    return any(_matches_registered(registered, uri) for registered in sandbox.config.registered_redirect_uris())


def _consent_error(message: str, status: int = 400) -> web.Response:
    page = f"<!doctype html><title>Error</title><h1>{html.escape(message)}</h1>"
    return web.Response(status=status, text=page, content_type="text/html")


def _check_authorize(sandbox: Sandbox, q: Any) -> tuple[str | None, list[str]]:
    """The error text (None when the request is acceptable) and the granted scopes."""
    if q.get("client_id") != sandbox.state.app.client_id:
        return "No integration found with the given client_id", []
    if q.get("response_type", "code") != "code":
        return "Unsupported response_type", []
    redirect = q.get("redirect_uri", "")
    if not redirect or not redirect_allowed(sandbox, redirect):
        return "Invalid redirect URI", []
    requested = [s for s in q.get("scope", "").split() if s]
    registered = sandbox.config.registered_scopes()
    unknown = [s for s in requested if s not in registered]
    if unknown:
        return f"Invalid scope: {' '.join(unknown)}", []
    missing = [s for s in registered if s not in requested]
    if missing:  # the app's scopes, all of them: a subset is a misconfigured app, not a smaller grant
        return f"The scope parameter must list the app's scopes; missing: {' '.join(missing)}", []
    return None, list(registered)


async def choose_location(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    error, scopes = _check_authorize(sandbox, request.query)
    if error:
        return _consent_error(error)
    query = urlencode(list(request.query.items()))
    rows = "".join(
        f'<li><a href="/oauth/chooselocation/approve?locationId={loc.id}&amp;{html.escape(query)}">'
        f"{html.escape(loc.name)}</a> <small>{loc.id}{' (installed)' if loc.installed else ''}</small></li>"
        for loc in sandbox.state.locations.values())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Choose account</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}} li{{margin:.6em 0}}</style></head>
<body><h1>{html.escape(sandbox.state.app.name)}</h1>
<p>wants access to: <code>{html.escape(' '.join(scopes))}</code></p>
<h2>Choose a sub-account</h2><ul>{rows}</ul>
<p><a href="/oauth/chooselocation/approve?companyId={sandbox.state.company_id}&amp;{html.escape(query)}">
Install on the whole agency ({html.escape(sandbox.state.company_name)})</a></p></body></html>"""
    return web.Response(text=page, content_type="text/html")


async def approve(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    q = request.query
    error, scopes = _check_authorize(sandbox, q)
    if error:
        return _consent_error(error)
    state = sandbox.state
    if q.get("companyId"):
        if q["companyId"] != state.company_id:
            return _consent_error("Unknown agency", 404)
        install_type, location_ids = "Company", list(state.locations)
    else:
        loc = state.locations.get(q.get("locationId", ""))
        if loc is None:
            return _consent_error("Unknown location", 404)
        install_type, location_ids = "Location", [loc.id]
    code = AuthCode(code=secrets.token_hex(20), client_id=q["client_id"], redirect_uri=q["redirect_uri"],
                    install_type=install_type, company_id=state.company_id, location_ids=location_ids,
                    scopes=scopes, expires_at=state.now() + sandbox.config.code_lifetime, user_id=state.user_id)
    state.codes[code.code] = code
    sandbox.install(location_ids, install_type)
    params = {"code": code.code}
    if "state" in q:
        params["state"] = q["state"]
    target = q["redirect_uri"]
    target += ("&" if urlsplit(target).query else "?") + urlencode(params)
    raise web.HTTPFound(target)


def add_consent_routes(app: web.Application) -> None:
    for prefix in ("/oauth", "/v2/oauth"):
        app.router.add_get(f"{prefix}/chooselocation", choose_location)
        app.router.add_get(f"{prefix}/chooselocation/approve", approve)
