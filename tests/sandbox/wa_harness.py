"""Test helpers for the simulated WhatsApp network: run it on loopback, call its control API,
record a transport's events."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from ghl_desktop.sandbox.whatsapp import NetworkConfig, WhatsAppNetwork, setup_whatsapp_network, whatsapp_network

E = TypeVar("E")

FAST = NetworkConfig(qr_first_seconds=0.4, qr_next_seconds=0.2, qr_count=4)


@dataclass
class Network:
    url: str
    app: web.Application
    http: aiohttp.ClientSession

    @property
    def net(self) -> WhatsAppNetwork:
        return whatsapp_network(self.app)

    async def call(self, method: str, path: str, body: Any = None, expect: int | None = 200) -> Any:
        # a file-like body: aiohttp warns (ResourceWarning, an error in the tests) on a raw body over 1 MiB
        payload = None if body is None else io.BytesIO(json.dumps(body).encode())
        headers = None if body is None else {"Content-Type": "application/json"}
        async with self.http.request(method, self.url + path, data=payload, headers=headers) as resp:
            data = await resp.json(content_type=None) if resp.content_type == "application/json" else await resp.read()
            if expect is not None:
                assert resp.status == expect, (resp.status, data)
            return data

    async def post(self, path: str, body: Any = None, expect: int | None = 200) -> Any:
        return await self.call("POST", path, body, expect)

    async def get(self, path: str, expect: int | None = 200) -> Any:
        return await self.call("GET", path, None, expect)

    async def add_phone(self, phone: str, name: str, **extra: Any) -> Any:
        return await self.post("/_sandbox/phones", {"phone": phone, "name": name, **extra}, expect=201)

    async def phone_send(self, phone: str, body: dict[str, Any]) -> str:
        data = await self.post(f"/_sandbox/phones/{phone}/send", body, expect=201)
        return str(data["id"])

    async def state(self) -> dict[str, Any]:
        data: dict[str, Any] = await self.get("/_sandbox/whatsapp/state")
        return data

    async def linked_state(self, phone: str) -> str | None:
        for item in (await self.state())["linked_numbers"]:
            if item["phone"] == phone:
                return str(item["state"])
        return None


@asynccontextmanager
async def running_network(state_dir: Path | None = None, config: NetworkConfig | None = FAST) -> AsyncIterator[Network]:
    app = web.Application()
    setup_whatsapp_network(app, state_dir, config=config)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    http = aiohttp.ClientSession()
    try:
        yield Network(f"http://127.0.0.1:{port}", app, http)
    finally:
        await http.close()
        await runner.cleanup()


async def wait_until(predicate: Callable[[], Any], within: float = 5.0, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy (a liveness bound, not a speed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Recorder:
    """A transport event handler that records every event."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.seen: list[Any] = []  # everything handed to the handler, even if it then blocks or fails
        self.fail_on: Callable[[Any], bool] | None = None
        self.block: asyncio.Event | None = None

    async def __call__(self, event: Any) -> None:
        self.seen.append(event)
        if self.block is not None:
            await self.block.wait()
        if self.fail_on is not None and self.fail_on(event):
            raise RuntimeError("handler refused the event")
        self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def next(self, kind: type[E], count: int = 1, within: float = 5.0) -> E:
        await wait_until(lambda: len(self.of(kind)) >= count, within, f"{count} × {kind.__name__}")
        return self.of(kind)[count - 1]
