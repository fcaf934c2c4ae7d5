"""Issue 10.8 on the relay, with a real full disk (tmpfs): 429 saying "disk full", /healthz 503 with
the reason, and the retried delivery is taken once space returns."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from ghl_desktop.relay.server import RelayServer
from ghl_desktop.relay.store import RelayStore
from ghl_desktop.webhooks.endpoint import PROVIDER_PATH
from ghl_desktop.webhooks.gate import WebhookGate
from ghl_desktop.webhooks.verify import SignatureVerifier
from tests.fixtures.tiny_disk import tiny_disk
from tests.webhooks.signing import SigningKeys, dump, outbound_message


@pytest.mark.asyncio
async def test_relay_on_a_full_disk_answers_429_disk_full_and_recovers(tmp_path: Path,
                                                                       signing_keys: SigningKeys) -> None:
    with tiny_disk(tmp_path, "4m") as disk:
        store = RelayStore.open(f"sqlite:///{disk.path / 'relay.db'}")
        store.create_token("desktop")
        gate = WebhookGate(SignatureVerifier.from_values(signing_keys.ed25519_public_pem, None))
        relay = RelayServer(store, gate)
        await relay.start()
        raw = dump(outbound_message())
        try:
            async with aiohttp.ClientSession() as http:
                disk.fill()
                async with http.post(relay.url + PROVIDER_PATH, data=raw, headers=signing_keys.headers(raw)) as r:
                    assert r.status == 429 and "disk full" in (await r.json())["error"]
                async with http.get(relay.url + "/healthz") as r:
                    assert r.status == 503 and "disk full" in (await r.json())["storage"]
                disk.free()
                async with http.post(relay.url + PROVIDER_PATH, data=raw, headers=signing_keys.headers(raw)) as r:
                    assert r.status == 200
                async with http.get(relay.url + "/healthz") as r:
                    assert r.status == 200
        finally:
            disk.free()
            await relay.stop()
            store.close()
        assert store.pending_count() == 1
