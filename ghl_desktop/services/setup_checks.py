"""First-run setup: the checks behind the wizard, the checklist and ``ghl-desktop doctor``.

Qt-free, so the window (``ui/first_run.py``) and the doctor run exactly the same checks:

- **credentials** — a token-endpoint probe: ``POST /oauth/token`` with the client ID and secret and a
  deliberately invalid authorization code. HighLevel refuses bad credentials (401, or
  ``invalid_client``) before it looks at the code, and answers ``invalid_grant`` for a bad code with
  good credentials. So ``invalid_grant`` means "ID and secret accepted"; no code is ever spent and
  no token is issued. The probe has a short timeout: an unreachable host is a readable network error
  within seconds, not the OAuth flow's 300 s.
- **provider ID** — present and shaped like a HighLevel id (it cannot be checked without a location
  token: the first inbound message shows whether HighLevel accepts it).
- **redirect URI** — from the one place that defines it (``adapters/ghl/oauth.py``); the user
  confirms it is registered (HighLevel offers no way to ask).
- **delivery** — relay mode: ``GET /v1/status`` with the relay token (the desktop's side) and an
  unsigned ``POST`` to the relay's Delivery URL, which must be refused with 401 (HighLevel's side
  reaches a live endpoint that checks signatures). Direct mode: ``GET /healthz`` and the same
  unsigned ``POST`` through the public (tunnel) URL the user registered. A *signed* test delivery is
  impossible outside HighLevel: only HighLevel holds the signing key.

Secrets go only to the secret store (``app:client_secret``, ``relay:token``); the non-secret answers
go to ``settings.json``, and the checklist's own progress (what was verified, for which value) to
``setup.json`` in the data dir — never a secret in either file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ghl_desktop.config import Settings, load_settings, save_settings
from ghl_desktop.core.ports import SecretStore

log = logging.getLogger("ghl.setup")

CLIENT_SECRET_KEY = "app:client_secret"
RELAY_TOKEN_KEY = "relay:token"
SETUP_FILE = "setup.json"
TOKEN_PATH = "/oauth/token"
PROVIDER_WEBHOOK_PATH = "/ghl/provider/webhook"
APP_WEBHOOK_PATH = "/ghl/app/webhook"
HEALTH_PATH = "/healthz"
RELAY_STATUS_PATH = "/v1/status"
#: the code sent by the credentials probe: never a real one, so nothing can be exchanged
PROBE_CODE = "ghl-desktop-credentials-probe"
#: seconds for each probe request (connect and answer); HighLevel answers a token call in well under 1 s
PROBE_TIMEOUT = 8.0
_PROVIDER_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"  # the value is wrong (bad secret, refused token): the user must change it
    UNREACHABLE = "unreachable"  # network trouble: nothing was learnt about the value


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One check's answer: ``message`` is one readable sentence; ``hint`` says what to do."""

    outcome: Outcome
    message: str
    hint: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


def _ok(message: str) -> CheckOutcome:
    return CheckOutcome(Outcome.OK, message)


def _failed(message: str, hint: str) -> CheckOutcome:
    return CheckOutcome(Outcome.FAILED, message, hint)


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _root_os_error(exc: BaseException) -> OSError | None:
    """The OSError under httpx's wrapping (refused, DNS failure, unreachable network...)."""
    seen: set[int] = set()
    found: OSError | None = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:  # the deepest one is the most specific
        seen.add(id(current))
        if isinstance(current, OSError):
            found = current
        current = current.__cause__ or current.__context__
    return found


def network_error(exc: httpx.HTTPError, url: str, timeout: float) -> CheckOutcome:
    """A transport failure as a sentence a person understands (no traceback, no secret)."""
    host = _host(url)
    if isinstance(exc, httpx.TimeoutException):
        what = f"{host} did not answer within {timeout:g} s"
    elif isinstance(exc, httpx.ConnectError):
        cause = _root_os_error(exc)
        if isinstance(cause, socket.gaierror):
            what = f"the name {urlsplit(url).hostname} cannot be resolved (no DNS answer)"
        elif isinstance(cause, ConnectionRefusedError):
            what = f"{host} refused the connection (nothing listens there)"
        else:
            what = f"cannot connect to {host}: {cause or exc}"
    else:
        what = f"the request to {host} failed: {type(exc).__name__}: {exc}"
    return CheckOutcome(
        Outcome.UNREACHABLE,
        f"Network error: {what}.",
        "check the internet connection, a proxy or firewall, and the address; then try again",
    )


def _error_code(response: httpx.Response) -> tuple[str, str]:
    """``(error, message)`` from a HighLevel error body (JSON or not)."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200]
    if not isinstance(body, dict):
        return "", str(body)[:200]
    error = str(body.get("error") or "")
    message = body.get("error_description") or body.get("message") or ""
    if isinstance(message, list):
        message = "; ".join(str(m) for m in message)
    return error, str(message)[:200]


async def probe_credentials(
    api_base: str,
    client_id: str,
    client_secret: str,
    *,
    redirect_uri: str = "",
    wait_seconds: float = PROBE_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CheckOutcome:
    """Are this client ID and secret accepted by HighLevel's token endpoint? (see the module doc)"""
    if not client_id.strip() or not client_secret.strip():
        return _failed("The client ID and the client secret are both needed.",
                       "copy them from your marketplace app's Advanced Settings → Auth")
    url = api_base.rstrip("/") + TOKEN_PATH
    form = {"client_id": client_id.strip(), "client_secret": client_secret.strip(),
            "grant_type": "authorization_code", "code": PROBE_CODE, "user_type": "Location"}
    if redirect_uri:
        form["redirect_uri"] = redirect_uri
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(wait_seconds), transport=transport) as http:
            response = await http.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        return network_error(exc, url, wait_seconds)
    error, message = _error_code(response)
    status = response.status_code
    if error == "invalid_grant":
        return _ok("HighLevel accepted the client ID and secret (it refused only the test code, as it must).")
    if status == 401 or error in ("invalid_client", "unauthorized_client"):
        return _failed(f"HighLevel refused the client ID or secret ({status}{': ' + message if message else ''}).",
                       "copy both again from the marketplace app (Advanced Settings → Auth); a regenerated "
                       "secret replaces the old one")
    if status in (200, 201):  # cannot happen with an invented code; never keep what it returned
        return _ok("HighLevel accepted the client ID and secret.")
    if status >= 500 or status == 429:
        return CheckOutcome(Outcome.UNREACHABLE, f"HighLevel is not answering normally ({status}).",
                            "try again in a few minutes")
    return _failed(f"Unexpected answer from {_host(url)}: {status} {error or message}".rstrip() + ".",
                   "check the API address (GHL_API_BASE) and the client ID")


def check_provider_id(value: str | None) -> CheckOutcome:
    """Present and shaped like a HighLevel id (24 hex characters in practice)."""
    text = (value or "").strip()
    if not text:
        return _failed("No conversation provider ID is set.",
                       "copy it from the marketplace app: Modules → Conversation Providers (the provider's ID)")
    if not _PROVIDER_ID.match(text):
        return _failed(f"{text!r} does not look like a provider ID (letters and digits, no spaces).",
                       "copy the ID itself, not the provider's name")
    return _ok(f"Conversation provider ID {text}.")


def _looks_like_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


async def _unsigned_delivery(http: httpx.AsyncClient, url: str) -> httpx.Response:
    """An unsigned test delivery: a real endpoint refuses it with 401 and stores nothing."""
    body = {"type": "SMS", "messageId": "ghl-desktop-delivery-test", "message": "delivery test"}
    return await http.post(url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def _refused_as_unsigned(response: httpx.Response) -> bool:
    return response.status_code == 401 and response.headers.get("content-type", "").startswith("application/json")


async def send_test_delivery(
    *,
    relay_url: str | None = None,
    relay_token: str | None = None,
    public_url: str | None = None,
    wait_seconds: float = PROBE_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CheckOutcome:
    """Send a test delivery through the configured path (relay or direct + tunnel) and say what came back."""
    if relay_url:
        base = relay_url.rstrip("/")
        if not _looks_like_url(base):
            return _failed(f"{relay_url!r} is not an http(s) address.",
                           "enter the relay's address, e.g. https://relay.example.com")
        if not relay_token:
            return _failed("No relay token is stored.",
                           "create one with `ghl-relay token create --name this-pc` and paste it")
    elif public_url:
        base = public_url.rstrip("/")
        if base.endswith(PROVIDER_WEBHOOK_PATH):
            base = base[: -len(PROVIDER_WEBHOOK_PATH)]
        if not _looks_like_url(base):
            return _failed(f"{public_url!r} is not an http(s) address.", "enter your tunnel's public address")
    else:
        return _failed("No delivery URL is set up.",
                       "choose relay mode (a ghl-relay you deploy) or direct mode behind your own tunnel")
    delivery = base + PROVIDER_WEBHOOK_PATH
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(wait_seconds), transport=transport) as http:
            if relay_url:
                status = await http.get(base + RELAY_STATUS_PATH, headers={"Authorization": f"Bearer {relay_token}"})
                if status.status_code == 401:
                    return _failed("The relay refused the relay token (401).",
                                   "create a new token with `ghl-relay token create` and paste it")
                if status.status_code != 200:
                    return _failed(f"The relay answered {status.status_code} to its status call.",
                                   "check that the address is a ghl-relay")
                figures = status.json()
                side = (f"the relay knows this desktop as {figures.get('install')!r}"
                        f" ({figures.get('pending', 0)} waiting)")
            else:
                health = await http.get(base + HEALTH_PATH)
                if health.status_code != 200:
                    return _failed(f"{_host(base)}{HEALTH_PATH} answered {health.status_code}, not the app.",
                                   "point the tunnel at this computer's webhook port and start ghl-desktop")
                side = "the tunnel reaches this app"
            answer = await _unsigned_delivery(http, delivery)
    except httpx.HTTPError as exc:
        return network_error(exc, base, wait_seconds)
    if not _refused_as_unsigned(answer):
        return _failed(f"A test delivery to {delivery} got {answer.status_code} instead of a signature refusal.",
                       "the Delivery URL must end in /ghl/provider/webhook and reach the app or relay")
    return _ok(f"Test delivery through {delivery}: {side}, and the endpoint checks HighLevel's signature "
               "(an unsigned test was refused, nothing stored).")


# --- progress, persistence -------------------------------------------------------------------------


class Step(StrEnum):
    CREDENTIALS = "credentials"
    PROVIDER_ID = "provider_id"
    REDIRECT_URI = "redirect_uri"
    DELIVERY = "delivery"


STEP_TITLES = {
    Step.CREDENTIALS: "Client ID and secret checked with HighLevel",
    Step.PROVIDER_ID: "Conversation provider ID",
    Step.REDIRECT_URI: "Redirect URI registered in the marketplace app",
    Step.DELIVERY: "Delivery URL set and a test delivery passed",
}


@dataclass
class SetupProgress:
    """What was verified, for which value (a changed value must be verified again). ``setup.json``."""

    credentials_verified_for: str | None = None  # the client ID the probe accepted
    redirect_registered: str | None = None  # the redirect URI the user said is registered
    delivery_url: str | None = None  # direct mode: the public (tunnel) base URL registered in HighLevel
    delivery_tested_for: str | None = None  # the relay URL or public URL a test delivery passed through
    dismissed: bool = False

    @classmethod
    def load(cls, path: Path) -> SetupProgress:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return cls()
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known}) if isinstance(data, dict) else cls()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True), "utf-8")
        os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class StepStatus:
    step: Step
    title: str
    done: bool
    detail: str


@dataclass(frozen=True, slots=True)
class SetupStatus:
    steps: tuple[StepStatus, ...] = field(default_factory=tuple)

    @property
    def complete(self) -> bool:
        return all(s.done for s in self.steps)

    @property
    def done_count(self) -> int:
        return sum(1 for s in self.steps if s.done)

    def step(self, step: Step) -> StepStatus:
        return next(s for s in self.steps if s.step is step)


def registered_redirect_uri(settings: Settings) -> str:
    """The redirect URI to register, from the one place the OAuth flow takes it from."""
    from ghl_desktop.adapters.ghl.oauth import app_registration

    return app_registration(settings).redirect_uri


def registered_scopes(settings: Settings) -> str:
    """The scopes the consent request asks for (the marketplace app must have exactly these)."""
    from ghl_desktop.adapters.ghl.oauth import app_registration

    return app_registration(settings).scope_text


class SetupService:
    """The first-run steps for one data dir: status, checks and saving the answers.

    ``settings`` are the running settings (environment included); saving writes only the values the
    user entered into ``settings.json`` (file over defaults, like the Settings dialog) and the secrets
    into ``secrets``."""

    def __init__(self, settings: Settings, secrets: SecretStore, *, timeout: float = PROBE_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.secrets = secrets
        self.timeout = timeout
        self._transport = transport
        #: the secrets read so far (:meth:`load`), kept up to date by the saves below
        self._known: dict[str, str | None] = {}

    # -- reads --

    @property
    def progress_path(self) -> Path:
        return self.settings.home / SETUP_FILE

    def progress(self) -> SetupProgress:
        return SetupProgress.load(self.progress_path)

    @property
    def redirect_uri(self) -> str:
        return registered_redirect_uri(self.settings)

    @property
    def scopes(self) -> str:
        return registered_scopes(self.settings)

    def client_secret(self) -> str | None:
        return self.settings.client_secret or self._secret(CLIENT_SECRET_KEY)

    def relay_token(self) -> str | None:
        return self._secret(RELAY_TOKEN_KEY)

    def load(self) -> SetupService:
        """Read the stored secrets the steps look at (the client secret, the relay token) once. The app
        runs this off the loop (:meth:`loaded`): a keyring read is a D-Bus round trip, and the window's
        checklist and wizard ask for them from the loop thread (docs/event-loop.md)."""
        for key in (CLIENT_SECRET_KEY, RELAY_TOKEN_KEY):
            self._known[key] = self._read_secret(key)
        return self

    async def loaded(self) -> SetupService:
        """:meth:`load` on a worker thread."""
        return await asyncio.to_thread(self.load)

    def _secret(self, key: str) -> str | None:
        if key not in self._known:  # not loaded (tools, tests): read now
            self._known[key] = self._read_secret(key)
        return self._known[key]

    def _read_secret(self, key: str) -> str | None:
        try:
            return self.secrets.get(key)
        except Exception:
            log.warning("could not read %s from the secret store", key, exc_info=True)
            return None

    def delivery_target(self) -> str | None:
        """The relay URL (relay mode) or the public URL (direct mode) deliveries go through."""
        return self.settings.relay_url or self.progress().delivery_url

    def delivery_url(self) -> str | None:
        """The Delivery URL to enter in HighLevel's conversation provider."""
        target = self.delivery_target()
        if not target:
            return None
        base = target.rstrip("/")
        return base if base.endswith(PROVIDER_WEBHOOK_PATH) else base + PROVIDER_WEBHOOK_PATH

    def status(self) -> SetupStatus:
        progress = self.progress()
        s = self.settings
        creds_done = bool(s.client_id and self.client_secret() and progress.credentials_verified_for == s.client_id)
        provider = check_provider_id(s.provider_id)
        target = self.delivery_target()
        delivery_done = bool(target and progress.delivery_tested_for == target)
        steps = (
            StepStatus(Step.CREDENTIALS, STEP_TITLES[Step.CREDENTIALS], creds_done,
                       f"client ID {s.client_id}" if s.client_id else "not entered yet"),
            StepStatus(Step.PROVIDER_ID, STEP_TITLES[Step.PROVIDER_ID], provider.ok,
                       s.provider_id or "not entered yet"),
            StepStatus(Step.REDIRECT_URI, STEP_TITLES[Step.REDIRECT_URI],
                       progress.redirect_registered == self.redirect_uri, self.redirect_uri),
            StepStatus(Step.DELIVERY, STEP_TITLES[Step.DELIVERY], delivery_done,
                       self.delivery_url() or "relay or direct + tunnel: not chosen yet"),
        )
        return SetupStatus(steps)

    # -- checks --

    async def check_credentials(self, client_id: str, client_secret: str) -> CheckOutcome:
        return await probe_credentials(self.settings.api_base, client_id, client_secret,
                                       redirect_uri=self.redirect_uri, wait_seconds=self.timeout,
                                       transport=self._transport)

    async def check_delivery(self) -> CheckOutcome:
        if self.settings.relay_url:
            token = self._known[RELAY_TOKEN_KEY] if RELAY_TOKEN_KEY in self._known else await asyncio.to_thread(
                self._secret, RELAY_TOKEN_KEY)
            result = await send_test_delivery(relay_url=self.settings.relay_url, relay_token=token,
                                         wait_seconds=self.timeout, transport=self._transport)
        else:
            result = await send_test_delivery(public_url=self.progress().delivery_url, wait_seconds=self.timeout,
                                         transport=self._transport)
        if result.ok:
            self._update(delivery_tested_for=self.delivery_target())
        return result

    # -- saving --

    def _save_settings(self, **changes: Any) -> None:
        stored = load_settings({"GHL_DESKTOP_HOME": str(self.settings.home)})  # the file, not the environment
        save_settings(replace(stored, **changes))
        self.settings = replace(self.settings, **changes)

    def _update(self, **changes: Any) -> None:
        progress = self.progress()
        for key, value in changes.items():
            setattr(progress, key, value)
        progress.save(self.progress_path)

    async def verify_and_save_credentials(self, client_id: str, client_secret: str) -> CheckOutcome:
        """Probe; on success keep the ID in settings.json and the secret in the secret store only."""
        result = await self.check_credentials(client_id, client_secret)
        if result.ok:
            client_id = client_id.strip()
            await asyncio.to_thread(self.secrets.set, CLIENT_SECRET_KEY, client_secret.strip())  # keyring: D-Bus
            self._known[CLIENT_SECRET_KEY] = client_secret.strip()
            self._save_settings(client_id=client_id)
            self.settings = replace(self.settings, client_secret=client_secret.strip())
            self._update(credentials_verified_for=client_id)
        return result

    def save_provider_id(self, value: str) -> CheckOutcome:
        result = check_provider_id(value)
        if result.ok:
            self._save_settings(provider_id=value.strip())
        return result

    def confirm_redirect_registered(self, registered: bool = True) -> None:
        self._update(redirect_registered=self.redirect_uri if registered else None)

    async def save_relay(self, relay_url: str, relay_token: str | None) -> None:
        """Relay mode: the URL to settings.json, the token (when given) to the secret store."""
        if relay_token:
            await self.store_relay_token(relay_token)
        self.save_relay_url(relay_url)

    def save_relay_url(self, relay_url: str) -> None:
        self._save_settings(relay_url=relay_url.strip().rstrip("/") or None)

    async def store_relay_token(self, relay_token: str) -> None:
        """The relay token to the secret store, off the loop (keyring: D-Bus)."""
        token = relay_token.strip()
        await asyncio.to_thread(self.secrets.set, RELAY_TOKEN_KEY, token)
        self._known[RELAY_TOKEN_KEY] = token

    def save_direct(self, public_url: str) -> None:
        """Direct mode: no relay; the tunnel's public base URL is remembered for the checks."""
        base = public_url.strip().rstrip("/")
        if base.endswith(PROVIDER_WEBHOOK_PATH):
            base = base[: -len(PROVIDER_WEBHOOK_PATH)]
        if self.settings.relay_url:
            self._save_settings(relay_url=None)
        self._update(delivery_url=base or None)

    def dismiss(self) -> None:
        self._update(dismissed=True)


# --- ports -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortCheck:
    what: str
    host: str
    port: int
    free: bool
    detail: str


def port_free(host: str, port: int) -> tuple[bool, str]:
    """Can this process listen on ``host:port``? (bind and close at once, with SO_REUSEADDR like the
    app's own listeners: connections still in TIME_WAIT do not make a port busy, a listener does)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name != "nt":  # on Windows SO_REUSEADDR would let two listeners share the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        return False, exc.strerror or str(exc)
    finally:
        sock.close()
    return True, "free"


def check_ports(settings: Settings) -> Sequence[PortCheck]:
    """The OAuth redirect listener's port and (direct mode) the webhook endpoint's port."""
    checks = [("OAuth redirect", "127.0.0.1", settings.oauth_redirect_port)]
    if not settings.relay_url:
        checks.append(("webhook endpoint", settings.webhook_host, settings.webhook_port))
    out = []
    for what, host, port in checks:
        free, detail = port_free(host, port)
        out.append(PortCheck(what, host, port, free, detail))
    return out


__all__ = [
    "CLIENT_SECRET_KEY",
    "RELAY_TOKEN_KEY",
    "CheckOutcome",
    "Outcome",
    "PortCheck",
    "SetupProgress",
    "SetupService",
    "SetupStatus",
    "Step",
    "StepStatus",
    "check_ports",
    "check_provider_id",
    "port_free",
    "probe_credentials",
    "registered_redirect_uri",
    "registered_scopes",
    "send_test_delivery",
]
