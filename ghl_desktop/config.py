"""Settings: environment variables over the persisted settings file over defaults.

Only non-secret settings are ever written to ``settings.json``. ``GHL_CLIENT_SECRET`` comes from the
environment or the SecretStore (key ``app:client_secret``); it is never persisted here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

from ghl_desktop.core.files import ensure_private_dir
from ghl_desktop.core.history import check_history_days

APP_NAME = "ghl-desktop"
DEFAULT_API_BASE = "https://services.leadconnectorhq.com"
DEFAULT_MARKETPLACE_BASE = "https://marketplace.gohighlevel.com"

#: settings that may never be written to disk in clear
SECRET_FIELDS = frozenset({"client_secret"})

ENV_MAP: dict[str, str] = {
    "client_id": "GHL_CLIENT_ID",
    "client_secret": "GHL_CLIENT_SECRET",
    "provider_id": "GHL_PROVIDER_ID",
    "api_base": "GHL_API_BASE",
    "marketplace_base": "GHL_MARKETPLACE_BASE",
    "home": "GHL_DESKTOP_HOME",
    "db_url": "GHL_DESKTOP_DB_URL",
    "oauth_redirect_port": "GHL_OAUTH_REDIRECT_PORT",
    "webhook_host": "GHL_WEBHOOK_HOST",
    "webhook_port": "GHL_WEBHOOK_PORT",
    "webhook_ed25519_public_key": "GHL_WEBHOOK_ED25519_PUBLIC_KEY",
    "webhook_rsa_public_key": "GHL_WEBHOOK_RSA_PUBLIC_KEY",
    "accept_unsigned_webhooks": "GHL_ACCEPT_UNSIGNED_WEBHOOKS",
    "relay_url": "GHL_RELAY_URL",
    "oauth_via_relay": "GHL_OAUTH_VIA_RELAY",
    "webhook_backlog_limit": "GHL_WEBHOOK_BACKLOG_LIMIT",
    "webhook_timestamp_window_seconds": "GHL_WEBHOOK_TIMESTAMP_WINDOW",
    "webhook_max_body_bytes": "GHL_WEBHOOK_MAX_BODY_BYTES",
    "log_level": "GHL_DESKTOP_LOG_LEVEL",
    "notify_grace_seconds": "GHL_DESKTOP_NOTIFY_GRACE_SECONDS",
    "start_at_login": "GHL_DESKTOP_START_AT_LOGIN",
    "api_versions": "GHL_API_VERSIONS",
    "max_wait_seconds": "GHL_DESKTOP_MAX_WAIT_SECONDS",
    "ignore_groups": "GHL_DESKTOP_IGNORE_GROUPS",
    "reject_calls": "GHL_DESKTOP_REJECT_CALLS",
    "reject_call_text": "GHL_DESKTOP_REJECT_CALL_TEXT",
    "history_days": "GHL_DESKTOP_HISTORY_DAYS",
}


@dataclass(frozen=True)
class Settings:
    client_id: str | None = None
    client_secret: str | None = None
    provider_id: str | None = None
    api_base: str = DEFAULT_API_BASE
    marketplace_base: str = DEFAULT_MARKETPLACE_BASE
    home: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)))
    db_url: str | None = None
    #: HighLevel needs the exact redirect URI registered, so the loopback port is fixed (configurable)
    oauth_redirect_port: int = 53682
    oauth_timeout_seconds: float = 300.0
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8787
    webhook_ed25519_public_key: str | None = None
    webhook_rsa_public_key: str | None = None
    accept_unsigned_webhooks: bool = False
    webhook_backlog_limit: int = 100_000
    #: HighLevel retries a 429 for about an hour (6 × ~10 min): the window covers it (webhooks/gate.py)
    webhook_timestamp_window_seconds: float = 7200.0
    webhook_max_body_bytes: int = 262_144
    relay_url: str | None = None
    #: sign in through the relay's /oauth/callback (register that URI) instead of the loopback listener
    oauth_via_relay: bool = False
    log_level: str = "INFO"
    #: a transient drop (a number reconnecting, the phone offline, the relay reconnecting) is notified
    #: only when it lasts longer than this; states that need a person are notified at once
    notify_grace_seconds: float = 60.0
    #: a message held up by a location to reconnect / a banned number is dead-lettered with that reason
    #: after waiting this long (0: waits forever); services/jobs.RunnerOptions.max_wait_seconds
    max_wait_seconds: float = 24 * 3600.0
    #: open ghl-desktop (in the tray) when the user logs in (XDG autostart / HKCU Run / LaunchAgent)
    start_at_login: bool = False
    #: ``Version`` header overrides per API path prefix, e.g. ``*=2023-02-21`` or
    #: ``/conversations=2023-02-21,/contacts=2023-02-21`` (adapters/ghl/transport.py VERSION_TABLE)
    api_versions: str = ""
    #: WhatsApp group chats are not bridged at all (no contact, no messages) when on
    ignore_groups: bool = False
    #: a WhatsApp call to a linked number is declined at once and the caller gets ``reject_call_text``
    #: (the call still shows in HighLevel as a rejected call)
    reject_calls: bool = False
    reject_call_text: str = "Sorry, we cannot take calls on WhatsApp. Please write us a message."
    #: history on link: the chats WhatsApp offers after a number is linked are imported into HighLevel
    #: as far back as this many days (0: off; at most 90); a number can have its own value in the window
    #: (services/bridge/history.py)
    history_days: int = 0

    def __post_init__(self) -> None:
        check_history_days(self.history_days)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'ghl-desktop.db'}"

    @property
    def settings_file(self) -> Path:
        return self.home / "settings.json"

    @property
    def log_dir(self) -> Path:
        if "GHL_DESKTOP_HOME" in os.environ:
            return self.home / "logs"
        return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))

    @property
    def sessions_dir(self) -> Path:
        return self.home / "sessions"

    @property
    def has_ghl_credentials(self) -> bool:
        return bool(self.client_id and self.client_secret)

    def persistable(self) -> dict[str, Any]:
        """What may be written to settings.json: everything but secrets and the home itself."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in SECRET_FIELDS or f.name == "home":
                continue
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def _coerce(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if name == "history_days":
        return check_history_days(raw, ENV_MAP[name])
    if "bool" in str(kind):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if "int" in str(kind) and "str" not in str(kind):
        return int(raw)
    if "float" in str(kind):
        return float(raw)
    if name == "home":
        return Path(raw).expanduser()
    return raw


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    if env.get("GHL_DESKTOP_HOME"):
        values["home"] = Path(env["GHL_DESKTOP_HOME"]).expanduser()
    base = Settings(**values)
    file_values: dict[str, Any] = {}
    if base.settings_file.exists():
        try:
            stored = json.loads(base.settings_file.read_text("utf-8"))
        except (OSError, ValueError):
            stored = {}
        known = {f.name for f in fields(Settings)} - SECRET_FIELDS - {"home"}
        file_values = {k: v for k, v in stored.items() if k in known}
    values.update(file_values)
    for name, var in ENV_MAP.items():
        if env.get(var):
            values[name] = _coerce(name, env[var])
    return Settings(**values)


def save_settings(settings: Settings) -> Path:
    """Persist the non-secret settings atomically (write + rename)."""
    ensure_private_dir(settings.home)
    target = settings.settings_file
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(settings.persistable(), indent=2, sort_keys=True), "utf-8")
    tmp.replace(target)
    return target


def update_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)


__all__ = ["Settings", "asdict", "load_settings", "save_settings", "update_settings"]
