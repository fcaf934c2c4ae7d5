"""The sandbox's in-memory model of one HighLevel agency, its locations and the sandbox marketplace app.

Everything HighLevel would keep server-side lives here as plain dataclasses so it can be shown by
``GET /_sandbox/state`` and, when a ``state_dir`` is given, written to ``state.json`` after every change
(atomic replace) and read back on start, so a restarted sandbox continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import string
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_ALNUM = string.ascii_letters + string.digits
STATE_FILE = "state.json"
STATE_FORMAT = 1


def new_id() -> str:
    """A HighLevel-style 20-character alphanumeric id (contacts, messages, locations...)."""
    return "".join(secrets.choice(_ALNUM) for _ in range(20))


def new_hex24() -> str:
    """A 24-hex id (app, version and provider ids are Mongo ObjectIds)."""
    return secrets.token_hex(12)


def iso(ts: float) -> str:
    """HighLevel's date format: ISO 8601 UTC with milliseconds and a Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


@dataclass
class App:
    """The one sandbox marketplace app (a custom conversation provider)."""

    app_id: str
    client_id: str  # "<24hex appId>-<8 chars>"
    client_secret: str
    provider_id: str  # conversationProviderId, 24 hex
    version_id: str
    name: str = "Sandbox WhatsApp Bridge"


@dataclass
class Location:
    id: str
    company_id: str
    name: str
    country: str = "US"
    timezone: str = "America/New_York"
    installed: bool = False
    installed_at: float | None = None


@dataclass
class Contact:
    id: str
    location_id: str
    phone: str | None
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    tags: list[str] = field(default_factory=list)
    source: str | None = None
    date_added: float = 0.0
    merged_into: str | None = None  # set when merged away: the id is dead from then on
    additional_phones: list[str] = field(default_factory=list)  # phones of contacts merged into this one


@dataclass
class Conversation:
    id: str
    location_id: str
    contact_id: str
    date_added: float
    date_updated: float
    unread_count: int = 0
    deleted: bool = False


@dataclass
class Message:
    id: str
    location_id: str
    contact_id: str
    conversation_id: str
    direction: str  # inbound | outbound
    status: str
    body: str
    date_added: float
    alt_id: str | None = None
    attachments: list[str] = field(default_factory=list)
    type: str = "Custom"  # the request's type (SMS, Custom...)
    provider_id: str | None = None
    source: str = "api"  # api (provider) | app (typed in the inbox)
    user_id: str | None = None
    status_locked_until: float = 0.0  # status updates answer 403 until then (delivery race)
    error: dict[str, Any] | None = None
    status_history: list[str] = field(default_factory=list)


@dataclass
class Token:
    """An access or refresh token. Refresh tokens rotate: one use mints a successor pair."""

    token: str
    kind: str  # access | refresh
    auth_class: str  # Location | Company
    company_id: str
    location_id: str | None
    scopes: list[str]
    expires_at: float
    issued_at: float
    source: str = "INTEGRATION"  # INTEGRATION (the sandbox app) | PRIVATE_INTEGRATION (a PIT)
    client_id: str | None = None
    user_id: str | None = None
    revoked: bool = False
    used_at: float | None = None  # refresh tokens: first use
    successor: dict[str, Any] | None = None  # refresh tokens: the response given on first use


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    install_type: str  # Location | Company
    company_id: str
    location_ids: list[str]
    scopes: list[str]
    expires_at: float
    user_id: str
    used: bool = False


@dataclass
class Upload:
    """A pending large-file upload (initiate -> PUT -> complete)."""

    upload_id: str
    location_id: str
    conversation_id: str
    filename: str
    content_type: str
    channel: str
    max_size: int
    file_path: str
    expires_at: float
    size: int | None = None  # set once the bytes were PUT
    file_id: str | None = None


@dataclass
class StoredFile:
    id: str
    location_id: str
    filename: str
    content_type: str
    size: int


@dataclass
class WebhookDelivery:
    """One webhook and what became of it (HighLevel retries only on a 429 answer)."""

    id: str
    kind: str  # ProviderOutboundMessage | INSTALL | UNINSTALL
    url: str | None
    payload: dict[str, Any]
    message_id: str | None = None
    attempts: int = 0
    status: str = "pending"  # pending | delivered | retrying | lost
    last_status_code: int | None = None
    error: str | None = None
    created_at: float = 0.0


@dataclass
class Faults:
    """Behaviour knobs that tests and demos change at runtime (POST /_sandbox/faults)."""

    error_rate: float = 0.0  # share of API requests answered with a random 5xx (nothing done)
    lost_response_rate: float = 0.0  # share of API requests done, but answered 504 (the answer got lost)
    latency_ms: int = 0  # added before each API answer
    status_race_seconds: float = 5.0  # status updates refused with 403 this long after an outbound message
    rate_limit_per_10s: int = 100  # burst limit per app and resource, per window
    rate_limit_daily: int = 200_000
    rate_limit_window_seconds: float = 10.0  # the "10 s" window; tests shorten it


T = TypeVar("T")


class SandboxStateError(ValueError):
    """The saved state cannot be read; the file is left untouched so nothing is lost."""


def _make(cls: type[T], item: dict[str, Any]) -> T:
    """Rebuild one record from saved JSON (keys unknown to this version are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in item.items() if k in names})


def _load_list(cls: type[T], items: list[dict[str, Any]], key: str = "id") -> dict[str, T]:
    return {item[key]: _make(cls, item) for item in items}


@dataclass
class SandboxState:
    """All server-side data. Mutations go through the Sandbox, which calls ``save()`` afterwards."""

    app: App
    company_id: str
    company_name: str
    signing_key_pem: str  # Ed25519 private key (PKCS8 PEM) that signs webhooks
    jwt_secret: str
    user_id: str
    locations: dict[str, Location] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)
    files: dict[str, StoredFile] = field(default_factory=dict)
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    webhook_url: str | None = None
    app_webhook_url: str | None = None
    clock_offset: float = 0.0
    validation_failures: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    refreshes_by_location: dict[str, int] = field(default_factory=dict)  # stats.oauth_refreshes_by_location
    state_dir: Path | None = None

    # ----- time ---------------------------------------------------------------------------------
    def now(self) -> float:
        """Sandbox time: wall clock plus an offset that tests can advance (POST /_sandbox/clock)."""
        return time.time() + self.clock_offset

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    # ----- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, locations: int = 2, state_dir: Path | None = None) -> SandboxState:
        app_id = new_hex24()
        suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        app = App(app_id=app_id, client_id=f"{app_id}-{suffix}", client_secret=secrets.token_urlsafe(24),
                  provider_id=new_hex24(), version_id=new_hex24())
        key = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        state = cls(app=app, company_id=new_id(), company_name="Sandbox Agency", signing_key_pem=key,
                    jwt_secret=secrets.token_hex(32), user_id=new_id(), state_dir=state_dir)
        state.seed_locations(locations)
        return state

    def seed_locations(self, n: int) -> None:
        for i in range(len(self.locations), n):
            loc = Location(id=new_id(), company_id=self.company_id, name=f"Sandbox Location {i + 1}")
            self.locations[loc.id] = loc

    # ----- persistence --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        asdict = dataclasses.asdict
        return {
            "format": STATE_FORMAT,
            "app": asdict(self.app),
            "company_id": self.company_id,
            "company_name": self.company_name,
            "signing_key_pem": self.signing_key_pem,
            "jwt_secret": self.jwt_secret,
            "user_id": self.user_id,
            "locations": [asdict(x) for x in self.locations.values()],
            "contacts": [asdict(x) for x in self.contacts.values()],
            "conversations": [asdict(x) for x in self.conversations.values()],
            "messages": [asdict(x) for x in self.messages.values()],
            "tokens": [asdict(x) for x in self.tokens.values()],
            "codes": [asdict(x) for x in self.codes.values()],
            "uploads": [asdict(x) for x in self.uploads.values()],
            "files": [asdict(x) for x in self.files.values()],
            "deliveries": [asdict(x) for x in self.deliveries],
            "faults": asdict(self.faults),
            "webhook_url": self.webhook_url,
            "app_webhook_url": self.app_webhook_url,
            "clock_offset": self.clock_offset,
            "validation_failures": self.validation_failures,
            "stats": self.stats,
            "refreshes_by_location": self.refreshes_by_location,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], state_dir: Path | None = None) -> SandboxState:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown sandbox state format {data.get('format')!r}")
        state = cls(app=_make(App, data["app"]), company_id=data["company_id"], company_name=data["company_name"],
                    signing_key_pem=data["signing_key_pem"], jwt_secret=data["jwt_secret"],
                    user_id=data["user_id"], state_dir=state_dir)
        state.locations = _load_list(Location, data["locations"])
        state.contacts = _load_list(Contact, data["contacts"])
        state.conversations = _load_list(Conversation, data["conversations"])
        state.messages = _load_list(Message, data["messages"])
        state.tokens = _load_list(Token, data["tokens"], "token")
        state.codes = _load_list(AuthCode, data["codes"], "code")
        state.uploads = _load_list(Upload, data["uploads"], "upload_id")
        state.files = _load_list(StoredFile, data["files"])
        state.deliveries = [_make(WebhookDelivery, d) for d in data["deliveries"]]
        state.faults = _make(Faults, data["faults"])
        state.webhook_url = data.get("webhook_url")
        state.app_webhook_url = data.get("app_webhook_url")
        state.clock_offset = float(data.get("clock_offset", 0.0))
        state.validation_failures = list(data.get("validation_failures", []))
        state.stats = dict(data.get("stats", {}))
        state.refreshes_by_location = dict(data.get("refreshes_by_location", {}))
        return state

    @classmethod
    def open(cls, state_dir: Path | None, locations: int = 2) -> SandboxState:
        """Load ``state_dir/state.json`` when it exists, else create (and save) a fresh sandbox."""
        if state_dir is not None:
            path = state_dir / STATE_FILE
            if path.exists():
                try:
                    state = cls.from_json(json.loads(path.read_text(encoding="utf-8")), state_dir)
                except (ValueError, KeyError, TypeError) as exc:
                    raise SandboxStateError(f"cannot read sandbox state {path}: {exc}") from exc
                state.seed_locations(locations)
                return state
        state = cls.create(locations, state_dir)
        state.save()
        return state

    def save(self) -> None:
        """Write the whole state atomically (temp file + rename); a no-op without a state_dir."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.to_json(), indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=self.state_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state_dir / STATE_FILE)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # ----- queries ------------------------------------------------------------------------------
    def live_contact(self, contact_id: str, location_id: str | None = None) -> Contact | None:
        contact = self.contacts.get(contact_id)
        if contact is None or contact.merged_into is not None:
            return None
        if location_id is not None and contact.location_id != location_id:
            return None
        return contact

    def conversation_for(self, contact: Contact) -> Conversation | None:
        for conv in self.conversations.values():
            if conv.contact_id == contact.id and not conv.deleted:
                return conv
        return None

    def public_key_pem(self) -> str:
        key = serialization.load_pem_private_key(self.signing_key_pem.encode(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def snapshot(self) -> dict[str, Any]:
        """The public view served by GET /_sandbox/state (no secrets beyond the sandbox app's own)."""
        return {
            "app": {"clientId": self.app.client_id, "client_id": self.app.client_id,
                    "clientSecret": self.app.client_secret, "client_secret": self.app.client_secret,
                    "appId": self.app.app_id, "versionId": self.app.version_id,
                    "conversationProviderId": self.app.provider_id, "provider_id": self.app.provider_id,
                    "name": self.app.name},
            "company": {"id": self.company_id, "name": self.company_name},
            "locations": [{"id": loc.id, "name": loc.name, "companyId": loc.company_id,
                           "installed": loc.installed} for loc in self.locations.values()],
            "contacts": [{"id": c.id, "locationId": c.location_id, "phone": c.phone, "name": c.name,
                          "email": c.email, "mergedInto": c.merged_into} for c in self.contacts.values()],
            "conversations": [{"id": c.id, "locationId": c.location_id, "contactId": c.contact_id,
                               "deleted": c.deleted} for c in self.conversations.values()],
            # seq: the order the messages reached this HighLevel (dateAdded may be a message's own older date)
            "messages": [{"id": m.id, "locationId": m.location_id, "contactId": m.contact_id,
                          "conversationId": m.conversation_id, "direction": m.direction, "status": m.status,
                          "body": m.body, "altId": m.alt_id, "attachments": list(m.attachments),
                          "dateAdded": iso(m.date_added), "type": m.type, "source": m.source,
                          "error": m.error, "statusHistory": list(m.status_history), "seq": seq}
                         for seq, m in sorted(enumerate(self.messages.values()), key=lambda p: p[1].date_added)],
            "webhook_deliveries": [{"id": d.id, "kind": d.kind, "url": d.url, "messageId": d.message_id,
                                    "attempts": d.attempts, "status": d.status,
                                    "lastStatusCode": d.last_status_code, "error": d.error}
                                   for d in self.deliveries],
            "webhook_url": self.webhook_url,
            "app_webhook_url": self.app_webhook_url,
            "webhook_public_keys": [self.public_key_pem()],
            "faults": dataclasses.asdict(self.faults),
            "validation_failures": len(self.validation_failures),
            "validation_failure_details": list(self.validation_failures),
            "stats": {**self.stats, "oauth_refreshes_by_location": dict(self.refreshes_by_location)},
            "now": self.now(),
        }
