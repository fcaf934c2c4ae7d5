"""Sandbox mode, shared by the window and ``ghl-desktop headless --sandbox``.

Why one place: both front-ends must start the in-process HighLevel sandbox (with the simulated
WhatsApp network mounted on it) in exactly the same way, so that a data dir set up by one works with
the other. The sandbox keeps its own state in ``<data dir>/sandbox/`` and reuses the port it got on
its first start (``<data dir>/sandbox/port``), so the OAuth redirect, the stored tokens and the
simulated phones all survive a restart — even after SIGKILL.

Part of the composition root: it picks the sandbox's URL, keys and app credentials for the
:class:`~ghl_desktop.config.Settings` the app then runs with.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from ghl_desktop.adapters.ghl.tls import ssl_context_async
from ghl_desktop.config import Settings
from ghl_desktop.webhooks.endpoint import APP_PATH, PROVIDER_PATH

#: sandbox locations seeded on the first start (a person picks one on the consent page)
SANDBOX_LOCATIONS = 2


@dataclass(frozen=True)
class SandboxMode:
    """The running in-process sandbox: the settings to run the app with, and its address."""

    settings: Settings
    url: str

    @property
    def inbox_url(self) -> str:
        """The sandbox's HTML inbox, where a person reads and answers as a HighLevel user."""
        return f"{self.url}/"

    @property
    def phones_url(self) -> str:
        """The sandbox's phone page (ghl_desktop/sandbox/phones_page.py): scan, pair, chat as a customer."""
        return f"{self.url}/phones"


#: the sandbox vault's key is not a secret: it only keeps sandbox tokens apart from the real store
SANDBOX_VAULT_KEY = "ghl-desktop sandbox (not a secret: sandbox tokens only)"


class SandboxSecretStore:
    """A SecretStore over ``<data dir>/sandbox/secrets.vault`` (the vault format, a fixed key)."""

    def __init__(self, path: Path) -> None:
        from ghl_desktop.adapters.secrets import ScryptParams, VaultSecretStore

        self.path = path
        self._vault = VaultSecretStore(path, SANDBOX_VAULT_KEY, params=ScryptParams(log2_n=10))

    @property
    def description(self) -> str:
        return "sandbox secrets in <data dir>/sandbox (apart from the real keyring)"

    def get(self, key: str) -> str | None:
        return self._vault.get(key)

    def set(self, key: str, value: str) -> None:
        self._vault.set(key, value)

    def delete(self, key: str) -> None:
        self._vault.delete(key)


def sandbox_secret_store(settings: Settings) -> SandboxSecretStore:
    """The sandbox's own secret store: no keyring, no passphrase, never the real secrets."""
    folder = settings.home / "sandbox"
    folder.mkdir(parents=True, exist_ok=True)
    return SandboxSecretStore(folder / "secrets.vault")


def sandbox_port_file(home: Path) -> Path:
    return home / "sandbox" / "port"


def sandbox_settings(settings: Settings, sb: Any) -> Settings:
    """``settings`` pointed at a running sandbox (API base, app credentials, webhook key)."""
    return replace(
        settings,
        api_base=sb.url,
        marketplace_base=sb.url,
        client_id=sb.client_id,
        client_secret=sb.client_secret,
        provider_id=sb.provider_id,
        webhook_ed25519_public_key=sb.public_key_pem,
    )


@contextlib.asynccontextmanager
async def running_sandbox_mode(
    settings: Settings, port: int = 0, *, announce: Callable[[str], None] | None = None
) -> AsyncIterator[SandboxMode]:
    """Run the sandbox in-process on 127.0.0.1 for the duration of the block.

    ``port`` 0 reuses the port of the previous start (or picks a free one the first time).
    ``announce`` gets the line ``sandbox: URL`` once it listens."""
    from ghl_desktop.adapters.ghl.oauth import app_registration
    from ghl_desktop.sandbox.oauth import any_port
    from ghl_desktop.sandbox.server import running_sandbox

    state_dir = settings.home / "sandbox"
    state_dir.mkdir(parents=True, exist_ok=True)
    port_file = sandbox_port_file(settings.home)
    if not port and port_file.exists():
        with contextlib.suppress(ValueError):
            port = int(port_file.read_text().strip())
    async with running_sandbox(
        host="127.0.0.1", port=port, state_dir=str(state_dir), locations=SANDBOX_LOCATIONS,
        # the app's registered redirect URI, on whatever free port this run's listener takes (the window,
        # headless and the self-test listen on port 0 in sandbox mode); path, host and scopes stay exact
        redirect_uris=[any_port(app_registration(settings).redirect_uri)],
    ) as sb:
        # atomic (write + rename): a kill mid-write must not move the sandbox to another port
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(sb.url.rsplit(":", 1)[1])
        tmp.replace(port_file)
        if announce is not None:
            announce(f"sandbox: {sb.url}")
        yield SandboxMode(sandbox_settings(settings, sb), sb.url)


async def external_sandbox_settings(settings: Settings, sandbox_url: str) -> Settings:
    """``settings`` pointed at an already running ``ghl-desktop sandbox`` (``--sandbox-url``): its API base,
    app credentials and webhook key, read from its ``GET /_sandbox/state``. A sandbox that cannot be read
    is a :class:`ConfigError` naming the address."""
    from ghl_desktop.core.errors import ConfigError

    url = sandbox_url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=10, verify=await ssl_context_async()) as http:
            answer = await http.get(f"{url}/_sandbox/state")
            answer.raise_for_status()
            state = answer.json()
        app = state["app"]
        keys = state.get("webhook_public_keys") or [None]
        return replace(settings, api_base=url, marketplace_base=url, client_id=app["client_id"],
                       client_secret=app["client_secret"], provider_id=app["provider_id"],
                       webhook_ed25519_public_key=keys[0] or settings.webhook_ed25519_public_key)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--sandbox-url {url}: not a running ghl-desktop sandbox ({exc})") from exc


async def point_sandbox_webhooks(sandbox_url: str, webhook_base: str) -> None:
    """The sandbox delivers agents' replies (and INSTALL/UNINSTALL) to this run's direct endpoint."""
    async with httpx.AsyncClient(timeout=10, verify=await ssl_context_async()) as http:
        answer = await http.post(f"{sandbox_url}/_sandbox/config", json={
            "webhook_url": webhook_base + PROVIDER_PATH, "app_webhook_url": webhook_base + APP_PATH})
        answer.raise_for_status()


__all__ = [
    "SANDBOX_LOCATIONS",
    "SANDBOX_VAULT_KEY",
    "SandboxMode",
    "SandboxSecretStore",
    "external_sandbox_settings",
    "point_sandbox_webhooks",
    "running_sandbox_mode",
    "sandbox_port_file",
    "sandbox_secret_store",
    "sandbox_settings",
]
