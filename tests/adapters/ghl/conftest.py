"""A wired HighLevel adapter (client, tokens, OAuth) against a running sandbox, over real loopback HTTP.

Every harness checks at teardown that the sandbox recorded no spec-validation failure for anything
the client sent (tests that provoke one on purpose declare how many they expect)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from ghl_desktop.adapters.ghl import (
    ClientOptions,
    GhlClient,
    OAuthConnector,
    OAuthOptions,
    RateLimitConfig,
    TokenGrant,
    TokenManager,
    app_registration,
    create_http_client,
)
from ghl_desktop.adapters.storage import Database
from ghl_desktop.config import Settings
from ghl_desktop.core.models import Location, utcnow
from ghl_desktop.sandbox.consent import approve_links
from ghl_desktop.sandbox.server import RunningSandbox, running_sandbox
from tests.fakes.secrets import MemorySecretStore

#: quick retries so failure paths do not slow the suite; the window/limit stay HighLevel's unless a test says
FAST_RETRY = RateLimitConfig(backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
FAST_SANDBOX: dict[str, Any] = {"status_race_seconds": 0.0, "webhook_retry_seconds": 0.05}


@dataclass
class Harness:
    sandbox: RunningSandbox
    settings: Settings
    secrets: MemorySecretStore
    db: Database
    http: httpx.AsyncClient
    tokens: TokenManager
    client: GhlClient
    expected_validation_failures: int = 0
    _extra: list[Any] = field(default_factory=list)

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.sandbox.state.stats)

    async def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The sandbox's control API over HTTP (what a demo script would do)."""
        async with httpx.AsyncClient(base_url=self.sandbox.url) as http:
            response = await http.request(method, path, json=body)
            response.raise_for_status()
            return response.json()

    async def snapshot(self) -> dict[str, Any]:
        state: dict[str, Any] = await self.control("GET", "/_sandbox/state")
        return state

    def build(self, *, rate: RateLimitConfig | None = None, options: ClientOptions | None = None,
              **token_kw: Any) -> tuple[TokenManager, GhlClient]:
        """A fresh TokenManager + client on the same stores (an app restart)."""
        tokens = TokenManager(self.secrets, self.db.locations, self.http, self.settings,
                              retry=rate or FAST_RETRY, **token_kw)
        return tokens, GhlClient(self.settings, tokens, self.http, rate=rate or FAST_RETRY, options=options)

    def oauth(self, open_url: Callable[[str], object], **options: Any) -> OAuthConnector:
        # the listener takes the settings' port: the exact redirect URI registered with the sandbox
        opts = OAuthOptions.from_settings(self.settings, **{"timeout_seconds": 10.0, **options})
        return OAuthConnector(self.settings, self.tokens, self.client, self.db.locations,
                              options=opts, open_url=open_url)

    async def connect(self, location_id: str | None = None) -> Location:
        """Install the app on a location the quick way (control API token), then save it as OAuth does."""
        location_id = location_id or self.sandbox.location_ids[0]
        body = await self.control("POST", f"/_sandbox/locations/{location_id}/token", {})
        grant = TokenGrant.from_response(body, utcnow())
        self.db.locations.upsert(Location(id=location_id, name="test", company_id=self.sandbox.company_id,
                                          token_expires_at=grant.expires_at))
        self.tokens.save_location_grant(location_id, grant)
        stored = self.db.locations.get(location_id)
        assert stored is not None
        return stored

    async def contact(self, location_id: str, phone: str = "+14155552671", name: str = "Ada") -> str:
        result = await self.client.upsert_contact(location_id, phone, name=name)
        return result.contact.id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def make_harness(db: Database, tmp_path: Path, *, rate: RateLimitConfig | None = None,
                       options: ClientOptions | None = None, **sandbox_options: Any) -> AsyncIterator[Harness]:
    # a free port for the OAuth listener, and exactly its redirect URI registered for the sandbox's app
    redirect_port = free_port()
    redirect_uri = app_registration(Settings(oauth_redirect_port=redirect_port)).redirect_uri
    sandbox_options = {**sandbox_options,
                       "redirect_uris": [redirect_uri, *sandbox_options.get("redirect_uris", [])]}
    async with running_sandbox(**{**FAST_SANDBOX, **sandbox_options}) as sb:
        settings = Settings(client_id=sb.client_id, client_secret=sb.client_secret, provider_id=sb.provider_id,
                            api_base=sb.url, marketplace_base=sb.url, home=tmp_path / "home",
                            oauth_redirect_port=redirect_port, oauth_timeout_seconds=10.0)
        secrets = MemorySecretStore()
        http = create_http_client(settings)
        try:
            tokens = TokenManager(secrets, db.locations, http, settings, retry=rate or FAST_RETRY)
            client = GhlClient(settings, tokens, http, rate=rate or FAST_RETRY, options=options)
            harness = Harness(sb, settings, secrets, db, http, tokens, client)
            yield harness
            failures = sb.state.validation_failures
            assert len(failures) == harness.expected_validation_failures, (
                f"the client sent requests that break the HighLevel spec: {failures}")
        finally:
            await http.aclose()


@pytest_asyncio.fixture
async def ghl(db: Database, tmp_path: Path) -> AsyncIterator[Harness]:
    async with make_harness(db, tmp_path) as harness:
        yield harness


@pytest_asyncio.fixture
async def ghl_factory(db: Database, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    def factory(**kw: Any) -> Any:
        return make_harness(db, tmp_path, **kw)

    yield factory


class Browser:
    """Stands in for the system browser: opening the authorize URL starts a task that loads the consent
    page and clicks a choice (optionally tampering with the redirect first)."""

    def __init__(self, click: str = "location:0", tamper: Callable[[str], str] | None = None) -> None:
        self.click = click
        self.tamper = tamper
        self.opened: list[str] = []
        self.pages: list[httpx.Response] = []
        self.tasks: list[asyncio.Task[None]] = []

    def __call__(self, url: str) -> bool:
        self.opened.append(url)
        self.tasks.append(asyncio.get_running_loop().create_task(self._visit(url)))
        return True

    async def _visit(self, url: str) -> None:
        async with httpx.AsyncClient(follow_redirects=False, timeout=10) as http:
            consent = await http.get(url)
            consent.raise_for_status()
            links = approve_links(consent.text)
            kind, _, index = self.click.partition(":")
            if kind == "agency":
                link = next(link for link in links if "companyId=" in link)
            else:
                link = [link for link in links if "locationId=" in link][int(index or 0)]
            approve = await http.get(httpx.URL(url).join(link))
            assert approve.status_code == 302, approve.text
            target = approve.headers["location"]
            if self.tamper is not None:
                target = self.tamper(target)
            self.pages.append(await http.get(target))

    async def finish(self) -> None:
        await asyncio.gather(*self.tasks)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The app's own HTTP client (``create_http_client``: what runtime.py hands GhlClient, TokenManager,
    OAuth and MediaDownloader), pointed nowhere: each test gives absolute URLs of its own servers."""
    async with create_http_client(Settings(api_base="http://127.0.0.1:9")) as client:
        yield client
