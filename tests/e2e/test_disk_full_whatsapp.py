"""Issue 10.8 end to end: WhatsApp messages that arrive while the disk is full stay unacknowledged and
are stored and bridged as soon as space returns — without a restart (they used to wait for one) —
while the bus carries StorageProblem and /healthz says "disk full"."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ghl_desktop.adapters.ghl.tls import ssl_context
from ghl_desktop.core.storage_health import StorageProblem, StorageRecovered
from tests.e2e.harness import bridge_env, eventually
from tests.fixtures.tiny_disk import tiny_disk

ALICE = "+4915112345678"


@pytest.mark.asyncio
async def test_messages_received_while_the_disk_is_full_arrive_when_space_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tiny_disk(tmp_path, "8m") as disk:
        monkeypatch.setenv("GHL_DESKTOP_DB_URL", f"sqlite:///{disk.path / 'ghl-desktop.db'}")
        async with bridge_env() as env:
            events: list[object] = []
            env.app.bus.subscribe(StorageProblem, events.append)
            env.app.bus.subscribe(StorageRecovered, events.append)
            await env.customer(ALICE, "Alice")
            await env.send(ALICE, text="before")

            async def bodies() -> list[str]:
                return [m.get("body") for m in await env.messages() if m.get("direction") == "inbound"]

            await eventually(lambda: _has(bodies(), ["before"]), 30)
            disk.fill()
            for text in ("during 1", "during 2", "during 3"):
                await env.send(ALICE, text=text)
            await eventually(lambda: any(isinstance(e, StorageProblem) and e.disk_full for e in events), 30)
            async with httpx.AsyncClient(verify=ssl_context()) as http:
                health = await http.get(env.runtime.webhooks.url + "/healthz")
            assert health.status_code == 503 and "disk full" in health.json()["storage"]
            disk.free()
            await eventually(lambda: _has(bodies(), ["before", "during 1", "during 2", "during 3"]), 60)
            assert isinstance(events[-1], StorageRecovered)
            assert sorted(await bodies()) == ["before", "during 1", "during 2", "during 3"]  # each once


async def _has(values: object, wanted: list[str]) -> bool:
    got = await values  # type: ignore[misc]
    return all(w in got for w in wanted)
