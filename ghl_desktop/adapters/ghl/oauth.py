"""Connecting HighLevel locations: the browser consent flow with a loopback redirect.

Flow: build the authorize URL → open it in the system browser (one injectable opener) → HighLevel
redirects the browser to ``http://127.0.0.1:<port>/oauth/callback?code=..&state=..`` → our listener
checks ``state``, takes exactly one code, shows "you can close this tab" → the code is exchanged
(``user_type=Location``) → a Company (agency) token leads to the installed-locations list and one
location token per chosen location (``/oauth/locationToken``), the company token kept for re-minting
→ each location is saved (name from ``GET /locations/{id}``), tokens in the SecretStore, expiry in
the database.

UNCONFIRMED facts, each a setting of ``OAuthOptions`` (docs/highlevel-api.md §1.1, §8.11):
  * loopback redirect URIs are accepted by HighLevel: seen in public integrations, never documented.
    HighLevel needs the exact URI registered, so the port is fixed (``oauth_redirect_port``) and the
    host name written into the URI is configurable (``redirect_host``: 127.0.0.1 or localhost);
    the listener itself always binds 127.0.0.1.
  * ``state`` round-trips: reportedly sometimes dropped. ``require_state=True`` refuses a callback
    without it; set False to accept a callback lacking ``state`` (a WRONG state is always refused).
  * the consent path: ``/oauth/chooselocation`` (SDK, most integrations) vs ``/v2/oauth/chooselocation``
    (docs since 2026-05-27): ``authorize_path``.

Wrong ``state`` decision: that request is answered with an error page (HTTP 400) and ignored; the
listener keeps waiting for the genuine redirect until the timeout. A stray or forged request thus
cannot abort the user's install; when the wait ends without a good code, the ``OAuthError`` says a
request with a wrong state was refused. A callback carrying ``error=...`` (the user denied access)
ends the wait at once.

The listener sets ``SO_REUSEADDR``: after a completed flow the browser's connection sits in
TIME_WAIT on our port for about a minute, and without it a second sign-in could not bind (on Linux
and macOS the option never lets two programs listen on one port, so a port really taken by another
program is still refused — and then the message says so).

Sign-in through the relay (for users who cannot register a loopback redirect URI): give the
connector a :class:`RelayHandoff` (the desktop's ``RelayClient``). The redirect URI is then the
relay's ``/oauth/callback``; the connector registers the ``state`` with the relay before opening the
browser, and the relay streams the code to this desktop only, where the connector takes it.
"""

from __future__ import annotations

import asyncio
import errno
import html
import logging
import secrets
import webbrowser
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from ghl_desktop.config import Settings
from ghl_desktop.core.errors import ConfigError, GhlError, OAuthError
from ghl_desktop.core.models import Location, LocationState, utcnow
from ghl_desktop.core.ports import LocationRepository

from .client import GhlClient, InstalledLocation
from .tokens import TokenGrant, TokenManager

log = logging.getLogger("ghl.oauth")

#: what a conversation provider needs (docs/highlevel-api.md §1.1), plus the optional read scopes we use
PROVIDER_SCOPES: tuple[str, ...] = (
    "conversations/message.write",
    "conversations/message.readonly",
    "conversations.readonly",
    "conversations.write",
    "contacts.readonly",
    "contacts.write",
    "locations.readonly",
)
#: agency installs additionally need these to list locations and mint location tokens (§1.4, §1.5)
COMPANY_SCOPES: tuple[str, ...] = ("oauth.readonly", "oauth.write")
#: every scope the app asks for on the consent page; the marketplace app must be registered with
#: exactly these (HighLevel refuses a consent request whose scopes differ from the app's)
APP_SCOPES: tuple[str, ...] = PROVIDER_SCOPES + COMPANY_SCOPES

#: the redirect URI's parts (the one place they are defined; ``app_registration`` shows the result)
DEFAULT_REDIRECT_PORT = 53682  # Settings.oauth_redirect_port's default
DEFAULT_REDIRECT_HOST = "127.0.0.1"  # UNCONFIRMED which loopback spelling the app registers
CALLBACK_PATH = "/oauth/callback"

OpenUrl = Callable[[str], object]


class RelayHandoff(Protocol):
    """Receives the OAuth redirect on the relay and hands it to this desktop (``relay.client.RelayClient``)."""

    @property
    def oauth_redirect_uri(self) -> str: ...

    async def expect_authorization(self, state: str) -> None: ...

    async def wait_authorization(self, state: str, limit_seconds: float) -> str: ...
Chooser = Callable[[Sequence[InstalledLocation]], Sequence[InstalledLocation] | Awaitable[Sequence[InstalledLocation]]]


@dataclass(frozen=True, slots=True)
class OAuthOptions:
    """How the consent flow runs. Built from Settings by ``OAuthOptions.from_settings``."""

    marketplace_base: str
    port: int = DEFAULT_REDIRECT_PORT  # 0 picks a free port (tests only: HighLevel needs the exact URI registered)
    timeout_seconds: float = 300.0
    callback_path: str = CALLBACK_PATH
    redirect_host: str = DEFAULT_REDIRECT_HOST
    authorize_path: str = "/oauth/chooselocation"  # UNCONFIRMED: or "/v2/oauth/chooselocation"
    require_state: bool = True  # UNCONFIRMED that state always round-trips
    scopes: tuple[str, ...] = APP_SCOPES
    login_window_open_mode: str | None = None  # e.g. "self"
    version_id: str | None = None  # needed for draft / in-review app versions (UNCONFIRMED)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> OAuthOptions:
        base = cls(
            marketplace_base=settings.marketplace_base,
            port=settings.oauth_redirect_port,
            timeout_seconds=settings.oauth_timeout_seconds,
        )
        return replace(base, **overrides)

    def redirect_uri(self, port: int | None = None) -> str:
        """The redirect URI for the listener's ``port`` (default: the configured one)."""
        return f"http://{self.redirect_host}:{self.port if port is None else port}{self.callback_path}"


@dataclass(frozen=True, slots=True)
class AppRegistration:
    """What the HighLevel marketplace app must be registered with for this build and these settings:
    the exact redirect URI and the scopes the consent request asks for."""

    redirect_uri: str
    scopes: tuple[str, ...]

    @property
    def scope_text(self) -> str:
        """The scopes as the authorize URL carries them (space separated)."""
        return " ".join(self.scopes)


def app_registration(settings: Settings | None = None, **overrides: Any) -> AppRegistration:
    """The redirect URI and scopes the app uses, from the one place that defines them (the README,
    the first-run checklist and the sandbox's default app registration show/use this).

    ``settings`` supplies the redirect port (``oauth_redirect_port``); ``overrides`` are OAuthOptions
    fields (e.g. ``redirect_host``)."""
    if settings is None:
        options = replace(OAuthOptions(marketplace_base=""), **overrides)
    else:
        options = OAuthOptions.from_settings(settings, **overrides)
    return AppRegistration(redirect_uri=options.redirect_uri(), scopes=tuple(options.scopes))


def build_authorize_url(
    options: OAuthOptions, client_id: str, redirect_uri: str, state: str
) -> str:
    query: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(options.scopes),
        "state": state,
    }
    if options.login_window_open_mode:
        query["loginWindowOpenMode"] = options.login_window_open_mode
    if options.version_id:
        query["version_id"] = options.version_id
    return f"{options.marketplace_base.rstrip('/')}{options.authorize_path}?{urlencode(query)}"


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;color:#222}}</style></head>
<body><h1>{title}</h1><p>{text}</p></body></html>"""


def _page(title: str, text: str, status: int = 200) -> web.Response:
    return web.Response(text=_PAGE.format(title=html.escape(title), text=html.escape(text)),
                        status=status, content_type="text/html")


class LoopbackReceiver:
    """A one-shot HTTP listener on 127.0.0.1 that waits for the OAuth redirect.

    ``start()`` binds (raising ``OAuthError`` if the port is taken), ``wait()`` returns the code or
    raises ``OAuthError`` (timeout, denied), ``close()`` always shuts the listener down."""

    def __init__(self, options: OAuthOptions, state: str) -> None:
        self.options = options
        self.state = state
        self.port: int | None = None
        self.refused: list[str] = []  # reasons of refused requests (wrong state, no code...)
        self._runner: web.AppRunner | None = None
        self._result: asyncio.Future[str] | None = None

    @property
    def redirect_uri(self) -> str:
        if self.port is None:
            raise RuntimeError("listener not started")
        return self.options.redirect_uri(self.port)

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> str:
        self._result = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get(self.options.callback_path, self._callback)
        runner = web.AppRunner(app, access_log=None)  # the query holds the code: never log it
        await runner.setup()
        # SO_REUSEADDR: a finished sign-in leaves connections in TIME_WAIT on this port (see above)
        site = web.TCPSite(runner, "127.0.0.1", self.options.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                why = (f"port {self.options.port} is in use by another program; close it or change the "
                       "redirect port (and the redirect URI registered for the app)")
            else:
                why = f"{exc.strerror or exc}"
            raise OAuthError(
                f"cannot listen on 127.0.0.1:{self.options.port} for the HighLevel redirect: {why}") from exc
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.options.port
        log.info("waiting for the HighLevel redirect on %s", self.redirect_uri)
        return self.redirect_uri

    async def _callback(self, request: web.Request) -> web.Response:
        assert self._result is not None
        if self._result.done():
            return _page("Already connected", "This sign-in was already completed. You can close this tab.", 409)
        query = request.query
        got_state = query.get("state")
        if got_state is not None and not secrets.compare_digest(got_state, self.state):
            self.refused.append("wrong state")
            log.warning("refused an OAuth redirect with a wrong state (still waiting for the right one)")
            return _page("Sign-in refused",
                         "This link does not belong to the sign-in the app started. Start again from the app.",
                         400)
        if got_state is None and self.options.require_state:
            self.refused.append("missing state")
            log.warning("refused an OAuth redirect without state (still waiting)")
            return _page("Sign-in refused", "The redirect carried no state. Start again from the app.", 400)
        if query.get("error"):
            reason = query.get("error_description") or query["error"]
            self._result.set_exception(OAuthError(f"HighLevel did not grant access: {reason}"))
            return _page("Access not granted", f"HighLevel reported: {reason}. You can close this tab.", 400)
        code = query.get("code")
        if not code:
            self.refused.append("no code")
            return _page("Sign-in incomplete", "The redirect carried no authorization code.", 400)
        self._result.set_result(code)
        return _page("Connected", "ghl-desktop received the authorization. You can close this tab.")

    async def wait(self) -> str:
        """The code, or ``OAuthError`` after ``options.timeout_seconds`` / on a denial."""
        if self._result is None:
            raise RuntimeError("listener not started")
        limit = self.options.timeout_seconds
        try:
            return await asyncio.wait_for(asyncio.shield(self._result), timeout=limit)
        except TimeoutError:
            extra = f" (refused: {', '.join(self.refused)})" if self.refused else ""
            raise OAuthError(
                f"no authorization arrived from HighLevel within {limit:g} s{extra}"
            ) from None

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._result is not None and not self._result.done():
            self._result.cancel()


class OAuthConnector:
    """Runs the install flow and saves what it produced. One instance per app."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenManager,
        client: GhlClient,
        locations: LocationRepository,
        *,
        options: OAuthOptions | None = None,
        open_url: OpenUrl = webbrowser.open,
        relay: RelayHandoff | None = None,
        offload: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._client = client
        self._locations = locations
        #: runs the location's row writes off the loop (the app's storage executor: ``db.aio.run``);
        #: without it they run inline (tools, tests over a bare repository)
        self._offload = offload
        self.options = options or OAuthOptions.from_settings(settings)
        self._open_url = open_url
        #: when set, sign-ins come back through the relay instead of the loopback listener
        self.relay = relay
        #: the listener of the flow in progress (for the UI: show the URL, cancel)
        self.receiver: LoopbackReceiver | None = None
        self.authorize_url: str | None = None

    async def connect(self, *, choose: Chooser | None = None) -> list[Location]:
        """Run the whole flow; returns the locations now connected (saved, tokens stored).

        ``choose`` picks among an agency's installed locations (default: all of them)."""
        client_id = self._settings.client_id
        if not client_id:
            raise ConfigError("GHL_CLIENT_ID is not set: the app cannot start a HighLevel sign-in")
        state = secrets.token_urlsafe(24)
        if self.relay is not None:
            return await self._connect_via_relay(self.relay, client_id, state, choose)
        receiver = LoopbackReceiver(self.options, state)
        self.receiver = receiver
        try:
            redirect_uri = await receiver.start()
            self.authorize_url = build_authorize_url(self.options, client_id, redirect_uri, state)
            try:
                # the opener's return value is not trusted (webbrowser.open lies on some desktops);
                # the UI shows ``authorize_url`` for copying in any case
                self._open_url(self.authorize_url)
            except Exception as exc:  # a missing browser must not end the flow: the URL is shown
                log.warning("could not open the browser (%s); the user can open the link by hand", exc)
            code = await receiver.wait()
        finally:
            await receiver.close()
            self.receiver = None
        return await self.complete(code, redirect_uri, choose=choose)

    async def _connect_via_relay(self, relay: RelayHandoff, client_id: str, state: str,
                                 choose: Chooser | None) -> list[Location]:
        redirect_uri = relay.oauth_redirect_uri
        await relay.expect_authorization(state)  # before the browser: the relay must know whose code it is
        self.authorize_url = build_authorize_url(self.options, client_id, redirect_uri, state)
        try:
            self._open_url(self.authorize_url)
        except Exception as exc:
            log.warning("could not open the browser (%s); the user can open the link by hand", exc)
        code = await relay.wait_authorization(state, self.options.timeout_seconds)
        return await self.complete(code, redirect_uri, choose=choose)

    async def complete(self, code: str, redirect_uri: str, *, choose: Chooser | None = None) -> list[Location]:
        """Exchange a code and connect what it grants (also usable with a code pasted by hand)."""
        try:
            grant = await self._tokens.exchange_code(code, redirect_uri, user_type="Location")
        except GhlError as exc:
            raise OAuthError(f"HighLevel refused the authorization code: {exc.message}") from exc
        if not grant.is_company:
            assert grant.location_id is not None
            return [await self._connect_location(grant.location_id, grant)]
        return await self._connect_company(grant, choose)

    async def _connect_company(self, grant: TokenGrant, choose: Chooser | None) -> list[Location]:
        company_id = grant.company_id
        if not company_id:
            raise OAuthError("HighLevel returned an agency token without a companyId")
        await self._tokens.store_company_grant(company_id, grant)
        installed = await self._client.installed_locations(company_id)
        if grant.approved_locations:
            approved = set(grant.approved_locations)
            known = {loc.id for loc in installed}
            installed = [loc for loc in installed if loc.id in approved] + [
                InstalledLocation(id=loc_id, name=loc_id) for loc_id in grant.approved_locations
                if loc_id not in known
            ]
        chosen: Sequence[InstalledLocation] = installed
        if choose is not None:
            picked = choose(installed)
            chosen = await picked if isinstance(picked, Awaitable) else picked
        if not chosen:
            raise OAuthError("no location was chosen (or the app is installed in none)")
        connected = []
        for entry in chosen:
            location_grant = await self._tokens.mint_location_token(company_id, entry.id)
            connected.append(await self._connect_location(entry.id, location_grant, company_id=company_id,
                                                          fallback_name=entry.name))
        return connected

    async def _connect_location(
        self, location_id: str, grant: TokenGrant, *, company_id: str | None = None, fallback_name: str | None = None
    ) -> Location:
        # tokens first: get_location below already uses them
        await self._tokens.store_location_grant(location_id, grant)
        try:
            details = await self._client.get_location(location_id)
            name, company = details.name, details.company_id
        except GhlError as exc:
            log.warning("could not read the name of location %s (%s)", location_id, exc.message)
            name, company = fallback_name or location_id, None
        def store() -> Location:
            """(storage thread when offloaded) The location's row, connected, in one hop."""
            existing = self._locations.get(location_id)
            location = Location(
                id=location_id,
                name=name,
                company_id=company or grant.company_id or company_id,
                provider_id=self._settings.provider_id,
                state=LocationState.CONNECTED,
                token_expires_at=grant.expires_at,
                installed_at=existing.installed_at if existing else utcnow(),
            )
            saved = self._locations.upsert(location)
            self._locations.set_state(location_id, LocationState.CONNECTED)
            self._locations.set_token_expiry(location_id, grant.expires_at)
            return saved

        saved: Location = await self._offload(store) if self._offload is not None else store()
        await self._tokens.store_location_grant(location_id, grant)  # clears any needs-reconnect mark
        log.info("connected HighLevel location %s (%s)", location_id, name)
        return saved


__all__ = [
    "APP_SCOPES",
    "CALLBACK_PATH",
    "COMPANY_SCOPES",
    "DEFAULT_REDIRECT_HOST",
    "DEFAULT_REDIRECT_PORT",
    "PROVIDER_SCOPES",
    "AppRegistration",
    "LoopbackReceiver",
    "OAuthConnector",
    "OAuthOptions",
    "app_registration",
    "build_authorize_url",
]
