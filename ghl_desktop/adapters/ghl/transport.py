"""The shared httpx client and the mapping from HighLevel answers to ``core.errors`` types.

Callers above the adapter never look at HTTP statuses: every failure leaves this package as a
``GhlError`` subclass whose type says what to do (retry, refresh, reconnect, give up).
"""

from __future__ import annotations

import logging
import ssl
import urllib.request
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# The app's client runs on aiohttp (aio_transport.py), but httpx's default transport still serves the
# proxy fallback below and the setup checks' short-lived clients: httpx imports httpcore only when it
# builds its first such transport (~150 ms on a busy machine), and httpcore imports sniffio on every
# pool lock and connection close (a failed import each time when it is missing: a sys.path scan on the
# event loop); imported here, both are paid once, at start-up
import httpcore  # noqa: F401
import httpx
import sniffio  # noqa: F401  (a dependency of ours for this reason: pyproject.toml)

from ghl_desktop.config import Settings
from ghl_desktop.core.errors import (
    ConfigError,
    GhlAuthError,
    GhlBadRequest,
    GhlContactNotFound,
    GhlError,
    GhlForbidden,
    GhlNotFound,
    GhlPayloadTooLarge,
    GhlRateLimited,
    GhlTransientError,
    GhlVersionHeaderError,
)

from .aio_transport import AiohttpTransport
from .rate import RateHeaders
from .tls import ssl_context

log = logging.getLogger("ghl.api")

#: ``Version`` header values per API area (docs/highlevel-api.md §0; the specs declare these)
VERSION_CONVERSATIONS = "2021-04-15"
VERSION_DEFAULT = "2021-07-28"  # oauth (except /oauth/token), contacts, locations, users

CONTACT_NOT_FOUND_CODE = "CONVERSATIONS_CONTACT_NOT_FOUND"

#: 401 messages that no token refresh can fix (scope / auth class / provider ownership), docs/highlevel-api.md §7
_PERMISSION_401_MARKERS = (
    "not authorized for this scope",
    "authclass type is not allowed",
    "msg_provider_no_access",
)


#: The per-path table: ``Version`` by path prefix, as the v2 specs declare (longest prefix wins).
#: HighLevel's own SDK sends 2023-02-21 everywhere; the day HighLevel retires these values, each
#: prefix can be switched with ``version_overrides`` (ClientOptions / TokenManager) without a release.
VERSION_TABLE: Mapping[str, str] = MappingProxyType({
    "/conversations": VERSION_CONVERSATIONS,
    "/contacts": VERSION_DEFAULT,
    "/locations": VERSION_DEFAULT,
    "/oauth": VERSION_DEFAULT,  # /oauth/locationToken, /oauth/installedLocations (/oauth/token sends none)
})


def _longest_prefix(table: Mapping[str, str], path: str) -> str | None:
    matches = [prefix for prefix in table if path.startswith(prefix)]
    return table[max(matches, key=len)] if matches else None


def parse_version_overrides(text: str) -> dict[str, str]:
    """``"*=2023-02-21"`` (every path) or ``"/conversations=2023-02-21, /contacts=2023-02-21"`` →
    the ``version_overrides`` mapping (Settings.api_versions, GHL_API_VERSIONS); ConfigError if malformed."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in text.replace(";", ",").split(",")):
        if not item:
            continue
        prefix, sep, version = (x.strip() for x in item.partition("="))
        if not sep or not version or not (prefix == "*" or prefix.startswith("/")):
            raise ConfigError(f"GHL_API_VERSIONS: {item!r} is not PREFIX=VERSION (e.g. *=2023-02-21 or "
                              "/contacts=2023-02-21)")
        out["/" if prefix == "*" else prefix] = version
    return out


def version_for(path: str, overrides: Mapping[str, str] | None = None) -> str:
    """The ``Version`` header for ``path``: an override (longest matching prefix) or the table's."""
    if overrides:
        chosen = _longest_prefix(overrides, path)
        if chosen is not None:
            return chosen
    return _longest_prefix(VERSION_TABLE, path) or VERSION_DEFAULT


def _proxy_from_environment() -> bool:
    """True when HTTP(S)_PROXY / ALL_PROXY (or the OS's proxy settings) name a proxy: httpx's default
    transport honours them (with NO_PROXY); the aiohttp transport is not given them."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def create_http_client(
    settings: Settings,
    *,
    timeout: httpx.Timeout | None = None,
    limits: httpx.Limits | None = None,
    verify: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The ONE httpx client of the app: pooled connections, bounded, with timeouts on every phase.

    ``base_url`` is the API base (``GHL_API_BASE``); the OAuth token endpoint lives there too. Uploads to
    signed storage URLs use absolute URLs through the same client. TLS uses the process's one context
    (``tls.ssl_context``; ``verify`` replaces it, for tests): building one per client loads the CA
    bundle on the event loop.

    The client runs on :class:`~.aio_transport.AiohttpTransport` (about half the loop CPU per request of
    httpx's default transport; docs/event-loop.md "The HTTP client"): same exceptions, timeouts per
    phase (``write`` is enforced by the transport's own deadline on bodies over 64 KiB — aiohttp has
    none), ``sni_hostname``, streaming. When the environment names a proxy, httpx's default transport
    is used instead, as before (it applies HTTP(S)_PROXY / NO_PROXY; the aiohttp one is not given them)."""
    context = verify or ssl_context()
    timeout = timeout or httpx.Timeout(connect=10.0, read=60.0, write=120.0, pool=30.0)
    limits = limits or httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=30.0)
    common: dict[str, Any] = {
        "base_url": settings.api_base.rstrip("/"),
        "timeout": timeout,
        "headers": {"Accept": "application/json", "User-Agent": "ghl-desktop"},
        "follow_redirects": False,
    }
    if _proxy_from_environment():
        return httpx.AsyncClient(verify=context, limits=limits, **common)
    return httpx.AsyncClient(transport=AiohttpTransport(verify=context, limits=limits), **common)


def body_of(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a response, or {} for an empty / non-object / non-JSON body."""
    if not response.content:
        return {}
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {"data": data}


def _message_of(body: dict[str, Any], response: httpx.Response) -> str:
    raw = body.get("message") or body.get("error_description") or body.get("error") or body.get("msg")
    if isinstance(raw, list):  # 422 answers carry a list of messages
        raw = "; ".join(str(item) for item in raw)
    text = str(raw) if raw else (response.reason_phrase or f"HTTP {response.status_code}")
    return text[:500]


def _code_of(body: dict[str, Any]) -> str | None:
    for key in ("canonicalCode", "code", "errorCode", "error"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def is_version_header_error(message: str) -> bool:
    lowered = message.lower()
    return "version header" in lowered


def map_error(response: httpx.Response, *, rate: RateHeaders | None = None, default_wait: float = 10.0) -> GhlError:
    """Turn a non-2xx HighLevel answer into the matching ``core.errors`` type."""
    status = response.status_code
    body = body_of(response)
    message = _message_of(body, response)
    code = _code_of(body)
    blob = f"{message} {code or ''}".lower()
    where = f"{response.request.method} {response.request.url.path}" if response.request else ""
    detail = f"{where} -> {status}"
    if status in (400, 422):
        if CONTACT_NOT_FOUND_CODE.lower() in blob:
            return GhlContactNotFound(message, status=status, code=CONTACT_NOT_FOUND_CODE, detail=detail)
        return GhlBadRequest(message, status=status, code=code, detail=detail)
    if status == 401:
        if is_version_header_error(message):
            return GhlVersionHeaderError(message, status=status, code=code, detail=detail)
        if any(marker in blob for marker in _PERMISSION_401_MARKERS):
            return GhlForbidden(message, status=status, code=code, detail=detail)
        return GhlAuthError(message, status=status, code=code, detail=detail)
    if status == 403:
        return GhlForbidden(message, status=status, code=code, detail=detail)
    if status == 404:
        return GhlNotFound(message, status=status, code=code, detail=detail)
    if status in (413, 415):
        return GhlPayloadTooLarge(message, status=status, code=code, detail=detail)
    if status == 429:
        headers = rate or RateHeaders.parse(response.headers)
        return GhlRateLimited(
            message,
            retry_after=headers.interval_seconds or default_wait,
            daily_exhausted=headers.daily_remaining == 0,
        )
    if status >= 500 or status == 408:
        return GhlTransientError(message, status=status, code=code, detail=detail)
    return GhlError(message, status=status, code=code, detail=detail)


def transport_error(exc: httpx.HTTPError, what: str) -> GhlTransientError:
    """A timeout or connection failure, as a retryable error (never includes request bodies)."""
    kind = type(exc).__name__
    return GhlTransientError(f"{what}: {kind}", status=0, detail=str(exc)[:200] or kind)


def request_was_sent(exc: httpx.HTTPError) -> bool:
    """False when the request certainly never reached the server (safe to repeat a POST)."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


__all__ = [
    "CONTACT_NOT_FOUND_CODE",
    "VERSION_CONVERSATIONS",
    "VERSION_DEFAULT",
    "VERSION_TABLE",
    "body_of",
    "create_http_client",
    "is_version_header_error",
    "map_error",
    "parse_version_overrides",
    "request_was_sent",
    "transport_error",
    "version_for",
]
