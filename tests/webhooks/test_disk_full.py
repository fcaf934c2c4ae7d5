"""Issue 10.8 with a real full disk (tmpfs): deliveries get 429 saying "disk full", /healthz reports
it, the bus carries StorageProblem, nothing unstored is acknowledged, and once space returns the
retried delivery is stored (once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.config import Settings
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.storage_health import StorageProblem, StorageRecovered
from ghl_desktop.webhooks.endpoint import PROVIDER_PATH, WebhookServer
from ghl_desktop.webhooks.intake import WebhookIntake
from tests.fixtures.tiny_disk import TinyDisk, tiny_disk
from tests.webhooks.signing import SigningKeys, dump, outbound_message


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[TinyDisk]:
    with tiny_disk(tmp_path) as d:
        yield d


@pytest.fixture
def db(disk: TinyDisk) -> Iterator[Database]:
    database = open_database(f"sqlite:///{disk.path / 'ghl-desktop.db'}", migrate=True)
    yield database
    disk.free()
    database.close()


@pytest.mark.asyncio
async def test_full_disk_gives_429_disk_full_and_recovers_when_space_returns(
        disk: TinyDisk, db: Database, signing_keys: SigningKeys) -> None:
    bus = EventBus()
    seen: list[object] = []
    bus.subscribe(StorageProblem, seen.append)
    bus.subscribe(StorageRecovered, seen.append)
    intake = WebhookIntake(db.aio.jobs, bus=bus, backlog_recount_seconds=0)
    server = WebhookServer(Settings(webhook_ed25519_public_key=signing_keys.ed25519_public_pem, webhook_port=0),
                           intake)
    url = await server.start()
    raw = dump(outbound_message())
    try:
        async with aiohttp.ClientSession() as http:
            disk.fill()
            async with http.post(url + PROVIDER_PATH, data=raw, headers=signing_keys.headers(raw)) as resp:
                assert resp.status == 429
                assert "disk full" in (await resp.json())["error"]
            async with http.get(url + "/healthz") as resp:
                assert resp.status == 503
                assert "disk full" in (await resp.json())["storage"]
            assert isinstance(seen[-1], StorageProblem) and seen[-1].disk_full
            disk.free()
            async with http.post(url + PROVIDER_PATH, data=raw, headers=signing_keys.headers(raw)) as resp:
                assert resp.status == 200
            async with http.get(url + "/healthz") as resp:
                assert resp.status == 200
    finally:
        await server.stop()
    assert isinstance(seen[-1], StorageRecovered)
    assert db.jobs.count() == 1
