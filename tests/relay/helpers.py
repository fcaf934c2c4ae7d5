"""Shared bits for relay tests: bounded waiting (never a timed assertion) and posting webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

from tests.webhooks.signing import SigningKeys, dump


async def wait_for(predicate: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Poll until ``predicate`` holds; ``limit`` only guards against a hang, it asserts no speed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.01)


async def post_signed(http: aiohttp.ClientSession, url: str, body: dict[str, object], keys: SigningKeys,
                      scheme: str = "ed25519") -> int:
    raw = dump(body)
    async with http.post(url, data=raw, headers=keys.headers(raw, scheme)) as resp:
        await resp.read()
        return resp.status
