"""Access tokens per location: read from the SecretStore, refreshed before expiry and on an auth
401, one refresh in flight per location, the rotated pair persisted before anyone uses it.

Why so careful: HighLevel refresh tokens rotate (each use returns a new one and the old one dies
after a 30 s grace). Two refreshes racing with the same refresh token, or a new pair used before it
was saved, can lose the only valid refresh token — and then the user must reinstall the app. So:
an ``asyncio.Lock`` per location, the new pair written to the SecretStore (and the expiry to the
database) before the access token is handed out, and a refused refresh (any 400/401 from the token
endpoint, whatever its body) re-mints from the agency token when there is one, else ends in the
visible ``NEEDS_RECONNECT`` state instead of a retry loop.

Secret keys (agreed with the secrets room): ``location:<id>:access_token``,
``location:<id>:refresh_token``, ``company:<id>:access_token``, ``company:<id>:refresh_token``,
``app:client_secret``. The company token's expiry has no database column, so it is kept under
``company:<id>:expires_at`` (an ISO timestamp, not a secret, but it belongs with its token).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

import httpx

from ghl_desktop.config import Settings
from ghl_desktop.core.errors import (
    ConfigError,
    GhlAuthError,
    GhlError,
    GhlNeedsReconnect,
    GhlTransientError,
)
from ghl_desktop.core.models import LocationState, utcnow
from ghl_desktop.core.ports import LocationRepository, SecretStore

from .rate import RateLimitConfig, RetryPolicy
from .transport import body_of, map_error, request_was_sent, transport_error, version_for

log = logging.getLogger("ghl.api.tokens")

TOKEN_PATH = "/oauth/token"
LOCATION_TOKEN_PATH = "/oauth/locationToken"


def location_key(location_id: str, kind: str) -> str:
    return f"location:{location_id}:{kind}"


def company_key(company_id: str, kind: str) -> str:
    return f"company:{company_id}:{kind}"


CLIENT_SECRET_KEY = "app:client_secret"

T = TypeVar("T")


class ClusterRefresh(Protocol):
    """Single flight across the workers of a cluster (``adapters/storage/secrets_db.PgRefreshLock``):
    ``hold(key)`` is held by one worker at a time; ``run(fn)`` does blocking storage work off the loop."""

    def hold(self, key: str) -> AbstractAsyncContextManager[None]: ...

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T: ...


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """One answer of the token endpoints. Token strings never appear in ``repr``."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    user_type: str  # "Location" | "Company"
    company_id: str | None = None
    location_id: str | None = None
    user_id: str | None = None
    scope: str = ""
    is_bulk_installation: bool = False
    approved_locations: tuple[str, ...] = ()

    @property
    def is_company(self) -> bool:
        """An agency token: locations must be minted from it (docs/highlevel-api.md §1.2 pitfall)."""
        return self.user_type == "Company" or self.is_bulk_installation or not self.location_id

    @classmethod
    def from_response(cls, body: dict[str, Any], now: datetime) -> TokenGrant:
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise GhlAuthError("token endpoint answered without an access_token", status=200)
        try:
            expires_in = float(body.get("expires_in") or 86399)
        except (TypeError, ValueError):
            expires_in = 86399.0
        refresh = body.get("refresh_token")
        approved = body.get("approvedLocations") or []
        return cls(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) and refresh else None,
            expires_at=now + timedelta(seconds=expires_in),
            user_type=str(body.get("userType") or ("Location" if body.get("locationId") else "Company")),
            company_id=body.get("companyId") or None,
            location_id=body.get("locationId") or None,
            user_id=body.get("userId") or None,
            scope=str(body.get("scope") or ""),
            is_bulk_installation=bool(body.get("isBulkInstallation")),
            approved_locations=tuple(str(x) for x in approved if x),
        )


#: statuses of the token endpoint that mean "this grant is refused" (the spec lists 400/401/422 for it)
REFUSED_GRANT_STATUSES = (400, 401)


def _is_invalid_grant(response: httpx.Response) -> bool:
    if response.status_code not in (400, 401, 403, 422):
        return False
    body = body_of(response)
    blob = " ".join(str(body.get(k, "")) for k in ("error", "error_description", "message", "code")).lower()
    return "invalid_grant" in blob


def _is_refused_refresh(response: httpx.Response) -> bool:
    """Whether an answer to a ``grant_type=refresh_token`` call means the refresh failed for good.

    Any 400/401 counts, whatever the body says: HighLevel's wording is not one fixed string
    (``invalid_grant``, "Location is not active", "Invalid JWT"...). Retrying would not help, so the
    caller re-mints from the agency token or marks the location "needs reconnect"."""
    return response.status_code in REFUSED_GRANT_STATUSES or _is_invalid_grant(response)


def _refusal_reason(response: httpx.Response) -> str:
    body = body_of(response)
    for key in ("error_description", "message", "error"):
        value = body.get(key)
        if isinstance(value, list):
            value = "; ".join(str(item) for item in value)
        if value:
            return str(value)[:200]
    return f"HTTP {response.status_code}"


class TokenManager:
    """Hands out valid access tokens per location (and per agency/company).

    ``clock`` returns aware UTC datetimes (injectable for tests); ``refresh_skew`` is how long
    before the recorded expiry a token counts as expired already."""

    def __init__(
        self,
        secret_store: SecretStore,
        location_repo: LocationRepository,
        http: httpx.AsyncClient,
        settings: Settings,
        *,
        refresh_skew: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = utcnow,
        retry: RateLimitConfig | None = None,
        version_overrides: Mapping[str, str] | None = None,
        cluster: ClusterRefresh | None = None,
        offload: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self._secrets = secret_store
        #: runs a refresh's storage work (keyring + the location's row) off the loop when there is no
        #: cluster: the database's storage executor (``db.aio.run``); None: inline (tests, tools)
        self._offload = offload
        #: set when the workers of a cluster share ``secret_store`` (PostgreSQL): refreshes then run under
        #: the cluster's lock, after re-reading the stored token
        self._cluster = cluster
        #: ``Version`` overrides by path prefix for the calls made here (see ClientOptions.version_overrides)
        self.version_overrides: Mapping[str, str] = dict(version_overrides or {})
        self._locations = location_repo
        self._http = http
        self._settings = settings
        self.refresh_skew = refresh_skew
        self._clock = clock
        self._retry_config = retry or RateLimitConfig()
        self._retry = RetryPolicy(self._retry_config)
        self._locks: dict[str, asyncio.Lock] = {}
        self._expiry: dict[str, datetime | None] = {}
        self._needs_reconnect: set[str] = set()
        self._access: dict[str, str] = {}
        self._company_expiry_cache: dict[str, datetime | None] = {}
        #: token-endpoint calls made (refresh + mint), for diagnostics and tests
        self.refresh_requests = 0
        self.mint_requests = 0

    # --- credentials --------------------------------------------------------------------------

    def _client_credentials(self) -> tuple[str, str]:
        client_id = self._settings.client_id
        secret = self._settings.client_secret or self._secrets.get(CLIENT_SECRET_KEY)
        if not client_id or not secret:
            raise ConfigError(
                "HighLevel app credentials are missing: set GHL_CLIENT_ID and the client secret "
                "(GHL_CLIENT_SECRET or the secret store) before connecting a location"
            )
        return client_id, secret

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # --- persistence -------------------------------------------------------------------------

    def _cached_access(self, key: str) -> str | None:
        """Access tokens are read from the store once, then served from memory: every API call needs
        one, and a keyring lookup is a blocking D-Bus round trip. Writes go to the store first."""
        token = self._access.get(key)
        if token is None:
            token = self._secrets.get(key)
            if token:
                self._access[key] = token
        return token

    def _store_access(self, key: str, token: str) -> None:
        self._secrets.set(key, token)  # persisted before anyone can be handed the new token
        self._access[key] = token

    def save_location_grant(self, location_id: str, grant: TokenGrant) -> None:
        """Persist a location's pair (secrets first, then expiry in the DB). Clears NEEDS_RECONNECT
        bookkeeping in memory; the caller (OAuth) sets the row's state."""
        # the refresh token first: it is the one that cannot be recovered if lost (rotation), and a
        # failure here leaves the previous, consistent pair in place
        if grant.refresh_token:
            self._secrets.set(location_key(location_id, "refresh_token"), grant.refresh_token)
        self._store_access(location_key(location_id, "access_token"), grant.access_token)
        self._expiry[location_id] = grant.expires_at
        if self._locations.get(location_id) is not None:
            self._locations.set_token_expiry(location_id, grant.expires_at)
        self._needs_reconnect.discard(location_id)

    async def store_location_grant(self, location_id: str, grant: TokenGrant) -> None:
        """:meth:`save_location_grant` off the loop: the keyring and the location's row are disk (and
        D-Bus) work, which the event loop never waits on (docs/event-loop.md)."""
        await self._off_loop(self.save_location_grant, location_id, grant)

    async def store_company_grant(self, company_id: str, grant: TokenGrant) -> None:
        """:meth:`save_company_grant` off the loop (see :meth:`store_location_grant`)."""
        await self._off_loop(self.save_company_grant, company_id, grant)

    def save_company_grant(self, company_id: str, grant: TokenGrant) -> None:
        if grant.refresh_token:
            self._secrets.set(company_key(company_id, "refresh_token"), grant.refresh_token)
        self._store_access(company_key(company_id, "access_token"), grant.access_token)
        self._secrets.set(company_key(company_id, "expires_at"), grant.expires_at.isoformat())
        self._company_expiry_cache[company_id] = grant.expires_at
        self._needs_reconnect.discard(f"company:{company_id}")

    def forget_location(self, location_id: str) -> None:
        """Drop the stored tokens of a location (disconnect / uninstall)."""
        for kind in ("access_token", "refresh_token"):
            self._secrets.delete(location_key(location_id, kind))
        self._access.pop(location_key(location_id, "access_token"), None)
        self._expiry.pop(location_id, None)

    def token_expiry(self, location_id: str) -> datetime | None:
        if location_id not in self._expiry:
            location = self._locations.get(location_id)
            self._expiry[location_id] = location.token_expires_at if location else None
            if location is not None and location.state is LocationState.NEEDS_RECONNECT:
                self._needs_reconnect.add(location_id)
        return self._expiry[location_id]

    def _stored_company_expiry(self, company_id: str) -> datetime | None:
        raw = self._secrets.get(company_key(company_id, "expires_at"))
        parsed: datetime | None = None
        if raw:
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                parsed = None
        if parsed is not None and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed

    def _company_expiry(self, company_id: str) -> datetime | None:
        if company_id in self._company_expiry_cache:
            return self._company_expiry_cache[company_id]
        parsed = self._company_expiry_cache[company_id] = self._stored_company_expiry(company_id)
        return parsed

    def _expiring(self, expires_at: datetime | None) -> bool:
        # unknown expiry: trust the token until the server says otherwise (401 → refresh)
        return expires_at is not None and expires_at - self.refresh_skew <= self._clock()

    # --- location tokens -----------------------------------------------------------------------

    def _raise_if_needs_reconnect(self, location_id: str) -> None:
        self.token_expiry(location_id)  # loads the row's state once
        if location_id in self._needs_reconnect:
            raise GhlNeedsReconnect(f"location {location_id} must be reconnected in HighLevel", status=401)

    def _prime_location(self, location_id: str) -> None:
        self._cached_access(location_key(location_id, "access_token"))
        self.token_expiry(location_id)

    async def _load_location(self, location_id: str) -> None:
        """The first use of a location reads its token (keyring: a D-Bus round trip) and its row off the
        loop; later uses are answered from memory."""
        if location_key(location_id, "access_token") not in self._access or location_id not in self._expiry:
            await self._off_loop(self._prime_location, location_id)

    async def access_token(self, location_id: str) -> str:
        """A token valid for at least ``refresh_skew`` (as far as we know), refreshing if needed."""
        await self._load_location(location_id)
        self._raise_if_needs_reconnect(location_id)
        token = self._cached_access(location_key(location_id, "access_token"))
        if token and not self._expiring(self.token_expiry(location_id)):
            return token
        async with self._lock(location_id):
            self._raise_if_needs_reconnect(location_id)
            token = self._cached_access(location_key(location_id, "access_token"))
            if token and not self._expiring(self.token_expiry(location_id)):
                return token  # another caller refreshed while we waited
            if self._cluster is not None:
                return await self._refresh_location_cluster(location_id, rejected_token=None)
            return await self._refresh_location_locked(location_id)

    async def refresh(self, location_id: str, *, rejected_token: str | None = None) -> str:
        """Refresh after the server refused ``rejected_token`` (401 auth). If another caller has
        already replaced that token, the replacement is returned without a second refresh."""
        await self._load_location(location_id)
        async with self._lock(location_id):
            self._raise_if_needs_reconnect(location_id)
            current = self._cached_access(location_key(location_id, "access_token"))
            if current and rejected_token is not None and current != rejected_token:
                return current
            if self._cluster is not None:
                return await self._refresh_location_cluster(location_id, rejected_token=rejected_token)
            return await self._refresh_location_locked(location_id)

    async def _off_loop(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Storage work of a refresh: on the cluster database's executor, else on ``offload`` (the
        database's storage executor), inline only when built without either."""
        if self._cluster is not None:
            return await self._cluster.run(fn, *args)
        if self._offload is not None:
            return cast(T, await self._offload(fn, *args))
        return fn(*args)

    def _stored_location(self, location_id: str) -> tuple[str | None, Any]:
        return self._secrets.get(location_key(location_id, "access_token")), self._locations.get(location_id)

    async def _refresh_location_cluster(self, location_id: str, *, rejected_token: str | None) -> str:
        """The refresh of a cluster worker: under the cluster lock of the location, the stored token is
        read again (another worker may have refreshed while we waited) and refreshed only if it is still
        expired, or still the one the server refused."""
        assert self._cluster is not None
        async with self._cluster.hold(f"ghl-refresh:location:{location_id}"):
            token, location = await self._cluster.run(self._stored_location, location_id)
            if location is not None and location.state is LocationState.NEEDS_RECONNECT:
                self._needs_reconnect.add(location_id)
                raise GhlNeedsReconnect(f"location {location_id} must be reconnected in HighLevel", status=401)
            expiry = location.token_expires_at if location is not None else None
            if token and token != rejected_token and not self._expiring(expiry):
                self._access[location_key(location_id, "access_token")] = token
                self._expiry[location_id] = expiry
                return token  # another worker refreshed it
            return await self._refresh_location_locked(location_id)

    async def _refresh_location_locked(self, location_id: str) -> str:
        refresh_token = await self._off_loop(self._secrets.get, location_key(location_id, "refresh_token"))
        location = await self._off_loop(self._locations.get, location_id)
        company_id = location.company_id if location else None
        if refresh_token:
            try:
                grant = await self._token_call(
                    {"grant_type": "refresh_token", "refresh_token": refresh_token, "user_type": "Location"},
                    what=f"refresh location {location_id}",
                )
            except GhlNeedsReconnect:
                log.warning("refresh token of location %s was refused", location_id)
                if company_id and await self._has_company_token_off_loop(company_id):
                    return await self._remint_or_give_up(location_id, company_id)
                await self._off_loop(self._mark_needs_reconnect, location_id)
                raise
            await self.store_location_grant(location_id, grant)
            log.info("refreshed access token of location %s (valid until %s)", location_id,
                     grant.expires_at.isoformat(timespec="seconds"))
            return grant.access_token
        if company_id and await self._has_company_token_off_loop(company_id):
            return await self._remint_or_give_up(location_id, company_id)
        await self._off_loop(self._mark_needs_reconnect, location_id)
        raise GhlNeedsReconnect(f"no refresh token stored for location {location_id}", status=401)

    async def _remint_or_give_up(self, location_id: str, company_id: str) -> str:
        try:
            grant = await self.mint_location_token(company_id, location_id)
        except (GhlNeedsReconnect, GhlAuthError) as exc:
            await self._off_loop(self._mark_needs_reconnect, location_id)
            raise GhlNeedsReconnect(
                f"location {location_id} must be reconnected: company token could not re-mint ({exc.message})",
                status=exc.status,
            ) from exc
        except GhlTransientError:
            raise
        except GhlError as exc:  # forbidden / not installed any more
            await self._off_loop(self._mark_needs_reconnect, location_id)
            raise GhlNeedsReconnect(f"location {location_id} must be reconnected ({exc.message})",
                                    status=exc.status) from exc
        await self.store_location_grant(location_id, grant)
        log.info("re-minted access token of location %s from company %s", location_id, company_id)
        return grant.access_token

    def _mark_needs_reconnect(self, location_id: str) -> None:
        self._needs_reconnect.add(location_id)
        if self._locations.get(location_id) is not None:
            self._locations.set_state(location_id, LocationState.NEEDS_RECONNECT)

    def needs_reconnect(self, location_id: str) -> bool:
        self.token_expiry(location_id)
        return location_id in self._needs_reconnect

    # --- company tokens ------------------------------------------------------------------------

    async def _has_company_token_off_loop(self, company_id: str) -> bool:
        found: bool = await self._off_loop(self._has_company_token, company_id)
        return found

    def _has_company_token(self, company_id: str) -> bool:
        return bool(
            self._secrets.get(company_key(company_id, "access_token"))
            or self._secrets.get(company_key(company_id, "refresh_token"))
        )

    def _prime_company(self, company_id: str) -> None:
        self._cached_access(company_key(company_id, "access_token"))
        self._company_expiry(company_id)

    async def _load_company(self, company_id: str) -> None:
        if company_key(company_id, "access_token") not in self._access or company_id not in self._company_expiry_cache:
            await self._off_loop(self._prime_company, company_id)

    async def company_access_token(self, company_id: str) -> str:
        await self._load_company(company_id)
        key = f"company:{company_id}"
        token = self._cached_access(company_key(company_id, "access_token"))
        if token and not self._expiring(self._company_expiry(company_id)):
            return token
        async with self._lock(key):
            token = self._cached_access(company_key(company_id, "access_token"))
            if token and not self._expiring(self._company_expiry(company_id)):
                return token
            if self._cluster is not None:
                return await self._refresh_company_cluster(company_id, rejected_token=None)
            return await self._refresh_company_locked(company_id)

    async def refresh_company(self, company_id: str, *, rejected_token: str | None = None) -> str:
        await self._load_company(company_id)
        async with self._lock(f"company:{company_id}"):
            current = self._cached_access(company_key(company_id, "access_token"))
            if current and rejected_token is not None and current != rejected_token:
                return current
            if self._cluster is not None:
                return await self._refresh_company_cluster(company_id, rejected_token=rejected_token)
            return await self._refresh_company_locked(company_id)

    def _stored_company(self, company_id: str) -> tuple[str | None, datetime | None]:
        return self._secrets.get(company_key(company_id, "access_token")), self._stored_company_expiry(company_id)

    async def _refresh_company_cluster(self, company_id: str, *, rejected_token: str | None) -> str:
        """The agency token's refresh on a cluster worker, single-flight across the workers as a
        location's is: HighLevel rotates refresh tokens, so a second worker refreshing with the same one
        would be refused and the agency would look disconnected. Under the cluster lock the stored token
        is read again and refreshed only if it is still expiring, or still the one the server refused."""
        assert self._cluster is not None
        async with self._cluster.hold(f"ghl-refresh:company:{company_id}"):
            token, expiry = await self._cluster.run(self._stored_company, company_id)
            if token and token != rejected_token and not self._expiring(expiry):
                self._access[company_key(company_id, "access_token")] = token
                self._company_expiry_cache[company_id] = expiry
                return token  # another worker refreshed it
            return await self._refresh_company_locked(company_id)

    async def _refresh_company_locked(self, company_id: str) -> str:
        if f"company:{company_id}" in self._needs_reconnect:
            raise GhlNeedsReconnect(f"agency {company_id} must be reconnected", status=401)
        refresh_token = await self._off_loop(self._secrets.get, company_key(company_id, "refresh_token"))
        if not refresh_token:
            raise GhlNeedsReconnect(f"no refresh token stored for agency {company_id}", status=401)
        try:
            grant = await self._token_call(
                {"grant_type": "refresh_token", "refresh_token": refresh_token, "user_type": "Company"},
                what=f"refresh company {company_id}",
            )
        except GhlNeedsReconnect:
            self._needs_reconnect.add(f"company:{company_id}")
            raise
        await self.store_company_grant(company_id, grant)
        log.info("refreshed agency token of company %s", company_id)
        return grant.access_token

    async def mint_location_token(self, company_id: str, location_id: str) -> TokenGrant:
        """``POST /oauth/locationToken`` with the company token (refreshed once on an auth 401).

        The v2 spec omits ``refresh_token`` in the answer but the live API returns one (ghl-api.md
        §1.4); without one, the next expiry re-mints from the company token again."""
        token = await self.company_access_token(company_id)
        for attempt in range(2):
            self.mint_requests += 1
            try:
                response = await self._http.post(
                    LOCATION_TOKEN_PATH,
                    data={"companyId": company_id, "locationId": location_id},
                    headers={"Authorization": f"Bearer {token}",
                             "Version": version_for(LOCATION_TOKEN_PATH, self.version_overrides)},
                )
            except httpx.HTTPError as exc:
                raise transport_error(exc, "mint location token") from exc
            if response.status_code in (200, 201):
                grant = TokenGrant.from_response(body_of(response), self._clock())
                return TokenGrant(
                    access_token=grant.access_token,
                    refresh_token=grant.refresh_token,
                    expires_at=grant.expires_at,
                    user_type="Location",
                    company_id=grant.company_id or company_id,
                    location_id=grant.location_id or location_id,
                    user_id=grant.user_id,
                    scope=grant.scope,
                )
            error = map_error(response)
            if isinstance(error, GhlAuthError) and attempt == 0:
                token = await self.refresh_company(company_id, rejected_token=token)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    # --- token endpoint ------------------------------------------------------------------------

    async def exchange_code(self, code: str, redirect_uri: str, *, user_type: str = "Location") -> TokenGrant:
        """Trade an authorization code for tokens (not persisted: the OAuth flow decides where)."""
        return await self._token_call(
            {"grant_type": "authorization_code", "code": code, "user_type": user_type,
             "redirect_uri": redirect_uri},
            what="exchange authorization code",
            retry_after_send=False,  # a code is single-use: a blind retry would only burn it
        )

    async def _token_call(self, fields: dict[str, str], *, what: str, retry_after_send: bool = True) -> TokenGrant:
        """``POST /oauth/token`` (form-encoded, no Version header per the spec), retrying transient
        failures. ``invalid_grant`` becomes ``GhlNeedsReconnect``, and so does any 400/401 to a refresh."""
        client_id, client_secret = self._client_credentials()
        form = {"client_id": client_id, "client_secret": client_secret, **fields}
        attempt = 0
        while True:
            if fields.get("grant_type") == "refresh_token":
                self.refresh_requests += 1
            try:
                response = await self._http.post(TOKEN_PATH, data=form)
            except httpx.HTTPError as exc:
                error: GhlError = transport_error(exc, what)
                can_retry = retry_after_send or not request_was_sent(exc)
            else:
                if response.status_code in (200, 201):
                    return TokenGrant.from_response(body_of(response), self._clock())
                is_refresh = fields.get("grant_type") == "refresh_token"
                if _is_invalid_grant(response) or (is_refresh and _is_refused_refresh(response)):
                    raise GhlNeedsReconnect(f"{what}: refused ({_refusal_reason(response)})",
                                            status=response.status_code, code="invalid_grant")
                error = map_error(response)
                can_retry = retry_after_send or response.status_code == 429
            if not (error.transient and can_retry) or attempt >= self._retry_config.max_retries:
                raise error
            delay = self._retry.delay(attempt)
            log.info("%s failed (%s); retrying in %.2fs", what, error.message, delay)
            await asyncio.sleep(delay)
            attempt += 1


__all__ = [
    "CLIENT_SECRET_KEY",
    "TokenGrant",
    "TokenManager",
    "company_key",
    "location_key",
]
