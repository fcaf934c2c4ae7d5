"""The running sandbox: configuration, token minting, rate limits, and the behaviours shared by the API,
the control API and the inbox page (reply, merge, install...)."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ghl_desktop.adapters.ghl.oauth import app_registration
from ghl_desktop.core.convert import InvalidPhone
from ghl_desktop.core.convert import normalize_phone as core_normalize_phone
from ghl_desktop.core.tasks import BackgroundTasks
from ghl_desktop.sandbox.state import (
    Contact,
    Conversation,
    Faults,
    Location,
    Message,
    SandboxState,
    Token,
    iso,
    new_id,
)
from ghl_desktop.sandbox.validation import SpecValidator
from ghl_desktop.sandbox.webhooks import WebhookSender

log = logging.getLogger("ghl.sandbox")

MB = 1024 * 1024
#: The sandbox app's registration by default: the scopes and redirect URI the product asks for, taken
#: from the one place that defines them (``app_registration``), as a developer would register them.
_DEFAULT_REGISTRATION = app_registration()
APP_SCOPES: tuple[str, ...] = _DEFAULT_REGISTRATION.scopes
DEFAULT_REDIRECT_URI = _DEFAULT_REGISTRATION.redirect_uri
#: the Version values strict mode refuses by default: the ones the v2 specs declare, which HighLevel's
#: SDK has moved away from (to 2023-02-21)
RETIRED_VERSIONS: tuple[str, ...] = ("2021-04-15", "2021-07-28")
AUTH_CLASS_MESSAGE = ("This authClass type is not allowed to access this scope. Please verify your IAM "
                      "configuration if this is not the case.")


class ApiError(Exception):
    """An answer in HighLevel's error shape; raised by handlers, rendered by the middleware."""

    def __init__(self, status: int, body: dict[str, Any] | None = None, message: str | None = None) -> None:
        if body is None:
            body = {"statusCode": status, "message": message or "Bad Request"}
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body


def unauthorized(message: str = "Invalid JWT") -> ApiError:
    return ApiError(401, {"statusCode": 401, "message": message})


def invalid_grant(description: str) -> ApiError:
    # UNCONFIRMED exact body (docs/highlevel-api.md §1.2): {"error":"invalid_grant","error_description":...} with 400.
    return ApiError(400, {"error": "invalid_grant", "error_description": description})


#: Bodies HighLevel's token endpoint answers a refused refresh with, by name (POST
#: /_sandbox/oauth/refresh_failures picks one). HighLevel's wording is not one string: the SDKs see
#: "Location is not active", a bare UnauthorizedDTO, and invalid_grant; a client must not key on any.
REFRESH_FAILURE_BODIES: dict[str, tuple[int, dict[str, Any]]] = {
    "invalid_grant": (400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}),
    "location_inactive": (400, {"statusCode": 400, "message": "Location is not active", "error": "Bad Request"}),
    "unauthorized": (401, {"statusCode": 401, "message": "Invalid JWT", "error": "Unauthorized"}),
    "unprocessable": (422, {"statusCode": 422, "message": ["refresh_token must be a valid token"],
                            "error": "Unprocessable Entity"}),
}


@dataclass
class RefreshFailure:
    """One scripted refusal of ``grant_type=refresh_token`` (for ``remaining`` more refreshes; optionally
    only the ones of one location or of the agency)."""

    status: int
    body: dict[str, Any]
    remaining: int = 1
    location_id: str | None = None
    company: bool | None = None  # True: only agency refreshes; False: only location refreshes

    def matches(self, token: Token) -> bool:
        if self.company is not None and (token.auth_class == "Company") != self.company:
            return False
        return self.location_id is None or token.location_id == self.location_id


@dataclass
class SandboxConfig:
    """Everything a sandbox can be started with. Fault fields left None keep the stored/default value."""

    host: str = "127.0.0.1"
    port: int = 0
    locations: int = 2
    #: redirect URIs registered for the app besides the product's own (DEFAULT_REDIRECT_URI); the consent
    #: page accepts exactly these. A sandbox-only allowance: "*" as the port (``http://127.0.0.1:*/p``)
    #: accepts that scheme, host and path on any port (the in-process sandbox mode's free-port listener).
    redirect_uris: list[str] = field(default_factory=list)
    #: the scopes the app is registered with; a consent request must ask for exactly these (default: the
    #: product's, APP_SCOPES)
    app_scopes: list[str] | None = None
    webhook_url: str | None = None
    app_webhook_url: str | None = None
    state_dir: str | Path | None = None
    access_token_lifetime: int = 86399
    refresh_token_lifetime: int = 365 * 86400
    refresh_grace_seconds: float = 30.0
    code_lifetime: int = 600
    #: strict mode: refuse the ``Version`` values in ``retired_versions`` with 401 "version header is
    #: invalid", as HighLevel will once it retires them (its own SDK sends 2023-02-21 everywhere); a
    #: client must then be switchable with its per-path version overrides
    strict_versions: bool = False
    retired_versions: list[str] = field(default_factory=lambda: list(RETIRED_VERSIONS))
    #: the most rows one GET /oauth/installedLocations answers, whatever ``limit`` asks (a server-side
    #: cap; clients must page on ``skip < count`` with the rows actually returned)
    installed_locations_page_cap: int = 100
    upload_url_lifetime: int = 900  # signed upload URLs last 15 minutes (spec)
    upload_max_bytes: int = 5 * MB  # multipart upload; UNCONFIRMED (the spec gives no number)
    whatsapp_upload_max_bytes: int = 100 * MB
    other_upload_max_bytes: int = 5 * MB
    webhook_retry_seconds: float = 600.0  # HighLevel retries a 429 about every 10 minutes
    webhook_max_retries: int = 6
    webhook_timeout: float = 10.0
    seed: int | None = None  # seeds fault injection
    error_rate: float | None = None
    lost_response_rate: float | None = None
    latency_ms: int | None = None
    status_race_seconds: float | None = None
    rate_limit_per_10s: int | None = None
    rate_limit_daily: int | None = None
    rate_limit_window_seconds: float | None = None

    def registered_redirect_uris(self) -> list[str]:
        return [DEFAULT_REDIRECT_URI, *(uri for uri in self.redirect_uris if uri != DEFAULT_REDIRECT_URI)]

    def registered_scopes(self) -> tuple[str, ...]:
        return tuple(self.app_scopes) if self.app_scopes is not None else APP_SCOPES

    def fault_overrides(self) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(Faults)}
        return {k: v for k, v in dataclasses.asdict(self).items() if k in names and v is not None}


class RateLimiter:
    """HighLevel's per-app, per-resource limits: a burst per window (sliding) and a daily quota."""

    def __init__(self) -> None:
        self._windows: dict[str, collections.deque[float]] = {}
        self._daily: dict[tuple[str, int], int] = {}
        self._summary: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        self._windows.clear()
        self._daily.clear()
        self._summary.clear()

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per "<app or pit>:<resource>": requests allowed, requests limited (429), first/last allowed
        request in sandbox time; lets a test check a client paced itself (zero 429s over N windows)."""
        return {key: dict(value) for key, value in self._summary.items()}

    def hit(self, key: str, now: float, faults: Faults) -> tuple[bool, dict[str, str]]:
        window = self._windows.setdefault(key, collections.deque())
        span = faults.rate_limit_window_seconds
        while window and window[0] <= now - span:
            window.popleft()
        day = int(now // 86400)
        used_today = self._daily.get((key, day), 0)
        allowed = len(window) < faults.rate_limit_per_10s and used_today < faults.rate_limit_daily
        summary = self._summary.setdefault(key, {"requests": 0, "limited": 0, "first": None, "last": None})
        if allowed:
            window.append(now)
            used_today += 1
            self._daily[(key, day)] = used_today
            summary["requests"] += 1
            summary["first"] = now if summary["first"] is None else summary["first"]
            summary["last"] = now
        else:
            summary["limited"] += 1
        headers = {
            "X-RateLimit-Limit-Daily": str(faults.rate_limit_daily),
            "X-RateLimit-Daily-Remaining": str(max(0, faults.rate_limit_daily - used_today)),
            "X-RateLimit-Interval-Milliseconds": str(int(span * 1000)),
            "X-RateLimit-Max": str(faults.rate_limit_per_10s),
            "X-RateLimit-Remaining": str(max(0, faults.rate_limit_per_10s - len(window))),
        }
        return allowed, headers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def normalize_phone(raw: str, country: str) -> str | None:
    """E.164 with a leading + (how HighLevel stores and dedupes phones), or None when unparseable;
    bare digits are national numbers of the location's ``country``, as HighLevel reads them."""
    try:
        return core_normalize_phone(raw, country)
    except InvalidPhone:
        return None


class Sandbox:
    """State + behaviour of one running sandbox. Handlers call these methods; each change is saved."""

    @property
    def validator(self) -> SpecValidator:
        """The OpenAPI validator (built once per process; blocks while it is being built: call it off
        the loop, as the request middleware does)."""
        return SpecValidator.shared()

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        state_dir = Path(config.state_dir) if config.state_dir else None
        self.state = SandboxState.open(state_dir, config.locations)
        self._apply_config()
        SpecValidator.load_in_background()  # requests wait for it on their worker thread, the start does not
        self.limiter = RateLimiter()
        self.webhooks = WebhookSender(self)
        self.tasks = BackgroundTasks(log, "sandbox background task")
        #: set whenever state changes; ``await sandbox.wait_until(pred)`` waits on it (tests, demos)
        self._changed = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        import random

        self.random = random.Random(config.seed)
        self.files_dir = state_dir / "files" if state_dir else None
        self.memory_files: dict[str, bytes] = {}
        self._batch_depth = 0
        self._batch_dirty = False
        #: scripted refusals of refresh grants (control API), first match wins; not saved
        self.refresh_failures: list[RefreshFailure] = []
        #: set while the app that receives the webhooks is shutting down (sandbox mode): new deliveries
        #: wait, saved as pending, for the next run instead of hitting a closed port and being lost
        self.holding_webhooks = False
        self.state.save()

    def _apply_config(self) -> None:
        for key, value in self.config.fault_overrides().items():
            setattr(self.state.faults, key, value)
        if self.config.webhook_url is not None:
            self.state.webhook_url = self.config.webhook_url
        if self.config.app_webhook_url is not None:
            self.state.app_webhook_url = self.config.app_webhook_url

    # ----- plumbing -----------------------------------------------------------------------------
    def changed(self) -> None:
        if self._batch_depth:
            self._batch_dirty = True
            return
        self.state.save()
        self._changed.set()

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Changes made inside are saved once, at the end: a crash keeps all of them or none (an
        outbound message without its webhook delivery would never reach the bridge)."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._batch_dirty:
                self._batch_dirty = False
                self.changed()

    def resume_deliveries(self) -> int:
        """Try again, to the current URLs, the deliveries a previous run left unfinished (pending or
        retrying with no task behind them). The in-process sandbox (headless --sandbox) dies with the
        bridge; HighLevel's servers would not, so its deliveries must not die with it either."""
        resumed = 0
        for delivery in self.state.deliveries:
            if delivery.status not in ("pending", "retrying") or self.webhooks.active(delivery):
                continue
            url = self.state.webhook_url if delivery.kind == "ProviderOutboundMessage" else self.state.app_webhook_url
            if not url:
                continue
            delivery.url = url
            self.webhooks.mark_active(delivery)
            self.spawn(self.webhooks.attempt(delivery))
            resumed += 1
        if resumed:
            log.info("resuming %d unfinished webhook deliveries", resumed)
        return resumed

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checking after every state change."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run in the background, keeping a reference and logging failures."""
        return self.tasks.spawn(coro)

    async def close(self) -> None:
        await self.tasks.cancel_all()
        if self._session is not None:
            await self._session.close()
        self.state.save()

    def record_validation_failure(self, method: str, path: str, reasons: list[str], refused: bool) -> None:
        self.state.validation_failures.append({"method": method, "path": path, "reasons": reasons,
                                               "refused": refused, "at": iso(self.state.now())})
        log.warning("request breaks the HighLevel spec: %s %s: %s", method, path, "; ".join(reasons))
        self.changed()

    # ----- files --------------------------------------------------------------------------------
    def store_bytes(self, key: str, data: bytes) -> None:
        if self.files_dir is not None:
            self.files_dir.mkdir(parents=True, exist_ok=True)
            (self.files_dir / key).write_bytes(data)
        else:
            self.memory_files[key] = data

    def load_bytes(self, key: str) -> bytes | None:
        if self.files_dir is not None:
            path = self.files_dir / key
            return path.read_bytes() if path.exists() else None
        return self.memory_files.get(key)

    # ----- tokens -------------------------------------------------------------------------------
    def _jwt(self, claims: dict[str, Any]) -> str:
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self.state.jwt_secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64url(sig)}"

    def _mint(self, kind: str, auth_class: str, location_id: str | None, scopes: list[str],
              lifetime: float, source: str = "INTEGRATION") -> Token:
        now = self.state.now()
        auth_id = location_id if auth_class == "Location" and location_id else self.state.company_id
        claims = {
            "authClass": auth_class, "authClassId": auth_id, "primaryAuthClassId": auth_id,
            "source": source, "sourceId": self.state.app.client_id, "channel": "OAUTH",
            "oauthMeta": {"scopes": scopes, "client": self.state.app.app_id,
                          "versionId": self.state.app.version_id},
            "tokenType": kind, "jti": secrets.token_hex(8), "iat": int(now), "exp": int(now + lifetime),
        }
        token = Token(token=self._jwt(claims), kind=kind, auth_class=auth_class,
                      company_id=self.state.company_id, location_id=location_id, scopes=list(scopes),
                      expires_at=now + lifetime, issued_at=now, source=source,
                      client_id=self.state.app.client_id, user_id=self.state.user_id)
        self.state.tokens[token.token] = token
        return token

    def token_response(self, auth_class: str, location_id: str | None, scopes: list[str],
                       approved: list[str] | None = None, approve_all: bool = False) -> dict[str, Any]:
        """Mint an access/refresh pair and answer like POST /oauth/token (docs/highlevel-api.md §1.2)."""
        access = self._mint("access", auth_class, location_id, scopes, self.config.access_token_lifetime)
        refresh = self._mint("refresh", auth_class, location_id, scopes, self.config.refresh_token_lifetime)
        body: dict[str, Any] = {
            "access_token": access.token, "token_type": "Bearer", "expires_in": self.config.access_token_lifetime,
            "refresh_token": refresh.token, "scope": " ".join(scopes), "userType": auth_class,
            "companyId": self.state.company_id, "userId": self.state.user_id,
        }
        if auth_class == "Location":
            body["locationId"] = location_id
            body["isBulkInstallation"] = False
        else:
            body["approvedLocations"] = list(approved or [])
            body["isBulkInstallation"] = True
            body["installToFutureLocations"] = False
            body["approveAllLocations"] = approve_all
        self.changed()
        return body

    def authenticate(self, header: str | None) -> Token:
        if not header or not header.startswith("Bearer "):
            raise unauthorized()
        token = self.state.tokens.get(header[len("Bearer "):].strip())
        if token is None or token.kind != "access" or token.revoked or token.expires_at <= self.state.now():
            raise unauthorized()
        return token

    def expire_tokens(self, location_id: str | None = None, company: bool = False,
                      token: str | None = None) -> int:
        """Control: make matching access tokens expire now (refresh tokens stay usable)."""
        now = self.state.now()
        n = 0
        for t in self.state.tokens.values():
            if t.kind != "access" or t.expires_at <= now:
                continue
            match = (token is not None and t.token == token) or \
                    (location_id is not None and t.location_id == location_id and t.auth_class == "Location") or \
                    (company and t.auth_class == "Company")
            if match:
                t.expires_at = now
                n += 1
        self.changed()
        return n

    def refused_refresh(self, token: Token) -> ApiError | None:
        """The scripted refusal for a refresh with ``token``, if one matches (and uses it up)."""
        for failure in self.refresh_failures:
            if failure.remaining > 0 and failure.matches(token):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self.refresh_failures.remove(failure)
                self.state.count("oauth_refresh_refused")
                return ApiError(failure.status, dict(failure.body))
        return None

    def create_pit(self, location_id: str) -> str:
        """A Private Integration Token: all scopes, but not the provider-owning app (docs/highlevel-api.md §2.1)."""
        self.location(location_id)
        token = self._mint("access", "Location", location_id, list(APP_SCOPES), 10 * 365 * 86400,
                           source="PRIVATE_INTEGRATION")
        token.client_id = None
        self.changed()
        return token.token

    # ----- locations ----------------------------------------------------------------------------
    def location(self, location_id: str) -> Location:
        loc = self.state.locations.get(location_id)
        if loc is None:
            raise ApiError(404, {"statusCode": 404, "message": f"Location {location_id} not found"})
        return loc

    def install(self, location_ids: list[str], install_type: str) -> None:
        """Mark the app installed and send INSTALL webhooks (one per location; one agency-level for bulk)."""
        now = self.state.now()
        fresh = [loc_id for loc_id in location_ids if not self.state.locations[loc_id].installed]
        for loc_id in fresh:
            self.state.locations[loc_id].installed = True
            self.state.locations[loc_id].installed_at = now
        if not fresh:  # re-authorising an installed app sends no new INSTALL event
            self.changed()
            return
        app = self.state.app
        base = {"type": "INSTALL", "appId": app.app_id, "versionId": app.version_id,
                "companyId": self.state.company_id, "userId": self.state.user_id,
                "isWhitelabelCompany": False, "whitelabelDetails": {}, "companyName": self.state.company_name}
        payloads = []
        if install_type == "Company":
            payloads.append({**base, "installType": "Company"})
        for loc_id in fresh:
            payloads.append({**base, "installType": "Location", "locationId": loc_id})
        for payload in payloads:
            payload["timestamp"] = iso(now)
            payload["webhookId"] = new_id()
            delivery = self.webhooks.new_delivery("INSTALL", self.state.app_webhook_url, payload)
            self.spawn(self.webhooks.attempt(delivery))
        self.changed()

    def uninstall(self, location_id: str) -> None:
        loc = self.location(location_id)
        loc.installed = False
        loc.installed_at = None
        for t in self.state.tokens.values():
            if t.location_id == location_id and t.source == "INTEGRATION":
                t.revoked = True
        payload = {"type": "UNINSTALL", "appId": self.state.app.app_id, "locationId": location_id,
                   "companyId": self.state.company_id, "timestamp": iso(self.state.now()), "webhookId": new_id()}
        delivery = self.webhooks.new_delivery("UNINSTALL", self.state.app_webhook_url, payload)
        self.spawn(self.webhooks.attempt(delivery))
        self.changed()

    # ----- contacts & conversations -------------------------------------------------------------
    def find_contact(self, location_id: str, phone: str | None = None, email: str | None = None) -> Contact | None:
        for c in self.state.contacts.values():
            if c.location_id != location_id or c.merged_into is not None:
                continue
            if phone and (c.phone == phone or phone in c.additional_phones):
                return c
        if email:
            for c in self.state.contacts.values():
                if c.location_id == location_id and c.merged_into is None and c.email and \
                        c.email.lower() == email.lower():
                    return c
        return None

    def create_contact(self, location_id: str, phone: str | None, name: str | None = None,
                       **extra: Any) -> Contact:
        contact = Contact(id=new_id(), location_id=location_id, phone=phone, name=name,
                          date_added=self.state.now(), **extra)
        self.state.contacts[contact.id] = contact
        self.changed()
        return contact

    def conversation(self, contact: Contact) -> Conversation:
        conv = self.state.conversation_for(contact)
        if conv is None:
            now = self.state.now()
            conv = Conversation(id=new_id(), location_id=contact.location_id, contact_id=contact.id,
                                date_added=now, date_updated=now)
            self.state.conversations[conv.id] = conv
        return conv

    def merge_contacts(self, keep_id: str, merge_id: str) -> Contact:
        """HighLevel's dedupe/merge: the merged contact id and its conversation id die (docs/highlevel-api.md §2.3)."""
        keep = self.state.live_contact(keep_id)
        gone = self.state.live_contact(merge_id)
        if keep is None or gone is None or keep.location_id != gone.location_id or keep.id == gone.id:
            raise ApiError(400, {"statusCode": 400, "message": "both contacts must exist in one location"})
        old_conv = self.state.conversation_for(gone)
        gone.merged_into = keep.id
        if old_conv is not None:
            new_conv = self.conversation(keep)
            for m in self.state.messages.values():
                if m.conversation_id == old_conv.id:
                    m.conversation_id = new_conv.id
                    m.contact_id = keep.id
            old_conv.deleted = True
        if not keep.phone:
            keep.phone = gone.phone
        elif gone.phone and gone.phone != keep.phone and gone.phone not in keep.additional_phones:
            keep.additional_phones.append(gone.phone)
        keep.additional_phones.extend(p for p in gone.additional_phones if p not in keep.additional_phones)
        self.changed()
        return keep

    def add_message(self, conv: Conversation, direction: str, status: str, body: str, **extra: Any) -> Message:
        now = self.state.now()
        date_added = extra.pop("date_added", None) or now
        message = Message(id=new_id(), location_id=conv.location_id, contact_id=conv.contact_id,
                          conversation_id=conv.id, direction=direction, status=status, body=body,
                          date_added=date_added, status_history=[status], **extra)
        self.state.messages[message.id] = message
        conv.date_updated = now
        if direction == "inbound":
            conv.unread_count += 1
        self.changed()
        return message

    async def reply(self, location_id: str, contact_id: str, text: str,
                    attachments: list[str] | None = None) -> dict[str, Any]:
        """A HighLevel user answers in the inbox: a pending outbound message and a ProviderOutboundMessage
        webhook to the delivery URL (first attempt awaited, 429 retries in the background)."""
        self.location(location_id)
        contact = self.state.live_contact(contact_id, location_id)
        if contact is None:
            raise ApiError(400, {"statusCode": 400, "message": "CONVERSATIONS_CONTACT_NOT_FOUND"})
        with self.batched():  # the message and its delivery are saved together
            conv = self.conversation(contact)
            conv.unread_count = 0
            now = self.state.now()
            message = self.add_message(conv, "outbound", "pending", text, attachments=list(attachments or []),
                                       type="SMS", provider_id=self.state.app.provider_id, source="app",
                                       user_id=self.state.user_id,
                                       status_locked_until=now + self.state.faults.status_race_seconds)
            payload = {
                "contactId": contact.id, "locationId": location_id, "messageId": message.id, "type": "SMS",
                "phone": contact.phone, "message": text, "attachments": list(attachments or []),
                "userId": self.state.user_id, "conversationProviderId": self.state.app.provider_id,
            }
            delivery = self.webhooks.new_delivery("ProviderOutboundMessage", self.state.webhook_url, payload,
                                                  message_id=message.id)
        await self.webhooks.attempt(delivery)
        return {"messageId": message.id, "conversationId": conv.id,
                "delivery": {"id": delivery.id, "status": delivery.status,
                             "statusCode": delivery.last_status_code, "error": delivery.error}}

    def reset(self) -> None:
        """Forget contacts, conversations, messages, tokens, uploads, deliveries and counters; keep the app
        credentials, signing key, agency and locations (so configured clients keep working)."""
        st = self.state
        for coll in (st.contacts, st.conversations, st.messages, st.tokens, st.codes, st.uploads, st.files):
            coll.clear()
        st.deliveries.clear()
        st.validation_failures.clear()
        st.stats.clear()
        st.refreshes_by_location.clear()
        st.clock_offset = 0.0
        st.faults = Faults()
        for loc in st.locations.values():
            loc.installed = False
            loc.installed_at = None
        self._apply_config()
        self.limiter.reset()
        self.refresh_failures.clear()
        self.memory_files.clear()
        self.changed()
