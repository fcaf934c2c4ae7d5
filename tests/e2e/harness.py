"""An in-process bridge against the sandbox and the simulated WhatsApp network, over real loopback
HTTP and WebSocket: the same BridgeRuntime the app and `headless` run, with short timings."""

from __future__ import annotations

import asyncio
import base64
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx

from ghl_desktop.adapters.ghl.oauth import app_registration
from ghl_desktop.adapters.ghl.tls import ssl_context
from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.headless import SANDBOX_LINKED_PHONE, ensure_linked
from ghl_desktop.runtime import BridgeRuntime, RuntimeOptions
from ghl_desktop.sandbox.consent import ConsentClicker
from ghl_desktop.sandbox.oauth import any_port
from ghl_desktop.sandbox.server import RunningSandbox, running_sandbox
from ghl_desktop.sandbox_mode import point_sandbox_webhooks
from ghl_desktop.services.jobs import RunnerOptions
from ghl_desktop.services.sessions import SessionOptions
from tests.fakes.secrets import MemorySecretStore

T = TypeVar("T")

FAST_RUNTIME = RuntimeOptions(
    runner=RunnerOptions(concurrency=8, lease_seconds=30, poll_interval=0.05, max_attempts=6,
                         backoff_base=0.05, backoff_cap=0.5),
    sessions=SessionOptions(send_min_gap=0.0, send_jitter=0.0, backoff_initial=0.05, backoff_max=0.5),
    webhook_port=0,
    oauth={"port": 0},
)

# a tiny valid PNG (1x1)
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


@dataclass
class Env:
    sandbox: RunningSandbox
    app: App
    runtime: BridgeRuntime
    http: httpx.AsyncClient
    linked: str = SANDBOX_LINKED_PHONE
    #: the connected location (read once, off the loop, when the environment is ready)
    first_location: str = ""

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def location_id(self) -> str:
        return self.first_location or self.app.db.locations.list()[0].id

    async def state(self) -> dict[str, Any]:
        answer = await self.http.get(f"{self.url}/_sandbox/state")
        answer.raise_for_status()
        return dict(answer.json())

    async def messages(self) -> list[dict[str, Any]]:
        return list((await self.state())["messages"])

    async def customer(self, phone: str, name: str = "Customer", **extra: Any) -> dict[str, Any]:
        answer = await self.http.post(f"{self.url}/_sandbox/phones", json={"phone": phone, "name": name, **extra})
        answer.raise_for_status()
        return dict(answer.json())

    async def send(self, phone: str, **body: Any) -> str:
        answer = await self.http.post(f"{self.url}/_sandbox/phones/{phone}/send", json={"to": self.linked, **body})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def send_from_phone(self, to: str, **body: Any) -> str:
        answer = await self.http.post(f"{self.url}/_sandbox/whatsapp/{self.linked}/send-from-phone",
                                      json={"to": to, **body})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def reply(self, contact_id: str, message: str, attachments: list[str] | None = None) -> str:
        body: dict[str, Any] = {"contactId": contact_id, "message": message}
        if attachments:
            body["attachments"] = attachments
        answer = await self.http.post(f"{self.url}/_sandbox/locations/{self.location_id}/reply", json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["messageId"])

    async def contact_for(self, phone: str | None = None, name: str | None = None) -> dict[str, Any]:
        for contact in (await self.state())["contacts"]:
            if (phone and contact["phone"] == phone) or (name and contact["name"] == name):
                return dict(contact)
        raise AssertionError(f"no sandbox contact for {phone or name}")

    async def add_contact(self, phone: str, name: str) -> str:
        answer = await self.http.post(f"{self.url}/_sandbox/locations/{self.location_id}/contacts",
                                      json={"phone": phone, "name": name})
        answer.raise_for_status()
        return str(answer.json()["id"] if "id" in answer.json() else answer.json()["contact"]["id"])

    async def inbox(self, phone: str) -> list[dict[str, Any]]:
        answer = await self.http.get(f"{self.url}/_sandbox/phones/{phone}/inbox")
        answer.raise_for_status()
        return list(answer.json())

    async def read(self, phone: str, ids: list[str]) -> None:
        answer = await self.http.post(f"{self.url}/_sandbox/phones/{phone}/read", json={"ids": ids})
        answer.raise_for_status()

    async def upload_file(self, name: str, data: bytes, content_type: str, contact_id: str) -> str:
        """A file hosted by the sandbox (as HighLevel hosts agents' attachments) in the contact's conversation."""
        token = self.sandbox.location_token(self.location_id)["access_token"]
        conversation = next(c["id"] for c in (await self.state())["conversations"] if c["contactId"] == contact_id)
        answer = await self.http.post(
            f"{self.url}/conversations/messages/upload",
            headers={"Authorization": f"Bearer {token}", "Version": "2021-04-15"},
            data={"contactId": contact_id, "locationId": self.location_id, "conversationId": conversation},
            files={"fileAttachment": (name, data, content_type)},
        )
        answer.raise_for_status()
        return str(next(iter(answer.json()["uploadedFiles"].values())))


async def off_loop(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """A test's own blocking call (a database read or write, a file) on a worker thread, awaited."""
    return await asyncio.to_thread(fn, *args, **kwargs)


async def eventually(check: Callable[[], Any], limit: float = 20.0, interval: float = 0.05) -> Any:
    """Poll an async or sync check until it returns a truthy value (a liveness bound, not a speed goal).
    A sync check (typically the test reading the database) runs on a worker thread: the e2e tests run
    under the blocked-loop detector, and a test's own reads must not hold the loop either."""
    deadline = asyncio.get_running_loop().time() + limit
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = check() if inspect.iscoroutinefunction(check) else await asyncio.to_thread(check)
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {limit} s (last value {last!r})")


async def eventually_on_loop(check: Callable[[], Any], limit: float = 20.0, interval: float = 0.05) -> Any:
    """:func:`eventually` for checks that read Qt widgets or models: a sync check runs on the loop's own
    thread (Qt objects belong to it: read from a worker thread they can show a state half-applied)."""
    if inspect.iscoroutinefunction(check):
        return await eventually(check, limit, interval)

    async def here() -> Any:
        return check()

    return await eventually(here, limit, interval)


@asynccontextmanager
async def bridge_env(runtime_options: RuntimeOptions | None = None, *,
                     transport_factory: Callable[[str], Any] | None = None,
                     **sandbox_options: Any) -> AsyncIterator[Env]:
    """Sandbox + network + a linked bridge; ``runtime_options`` default to FAST_RUNTIME.
    ``transport_factory(sandbox_url)`` replaces ``simulated_transport_factory`` (e.g. a subclass)."""
    options = {"status_race_seconds": 0.2, "webhook_retry_seconds": 0.05, "locations": 1,
               # the app's registered redirect URI on the free port FAST_RUNTIME's listener takes
               "redirect_uris": [any_port(app_registration().redirect_uri)], **sandbox_options}
    async with running_sandbox(**options) as sb:
        settings = replace(
            load_settings(), api_base=sb.url, marketplace_base=sb.url, client_id=sb.client_id,
            client_secret=sb.client_secret, provider_id=sb.provider_id,
            webhook_ed25519_public_key=sb.public_key_pem,
        )
        app = await App.open(settings, secrets=MemorySecretStore(), console_log=False, sandbox=True)
        make_transports = (transport_factory or simulated_transport_factory)(sb.url)
        runtime = BridgeRuntime(app, make_transports, runtime_options or FAST_RUNTIME,
                               open_url=ConsentClicker())
        http = httpx.AsyncClient(timeout=30, verify=ssl_context())
        try:
            await runtime.start()
            await point_sandbox_webhooks(sb.url, runtime.webhooks.url)
            await ensure_linked(runtime, sb.url, asyncio.Event())
            env = Env(sb, app, runtime, http, first_location=(await app.db.aio.locations.list())[0].id)
            yield env
            # everything the bridge sent HighLevel during the test passed the official OpenAPI specs
            assert (await env.state())["validation_failures"] == 0, (await env.state())["validation_failure_details"]
        finally:
            await http.aclose()
            await runtime.stop()
            await app.aclose()
