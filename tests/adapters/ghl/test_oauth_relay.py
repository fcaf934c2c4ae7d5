"""Sign-in through the relay (issue 10.1): the connector registers its state with the relay, the
sandbox's consent redirects the browser to the relay's /oauth/callback, the relay streams the code to
that desktop only, and the connector exchanges it. A second desktop on the same relay gets nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghl_desktop.adapters.ghl import OAuthConnector, OAuthOptions
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import LocationState
from ghl_desktop.relay.client import OAuthCodeReceived, RelayClient, RelayLinkState
from ghl_desktop.relay.server import RelayServer
from ghl_desktop.relay.store import RelayStore
from ghl_desktop.webhooks.gate import WebhookGate
from ghl_desktop.webhooks.intake import WebhookIntake
from ghl_desktop.webhooks.verify import SignatureVerifier
from tests.adapters.ghl.conftest import Browser, free_port
from tests.fakes.job_queue import MemoryJobQueue
from tests.relay.helpers import wait_for


def _client(url: str, token: str, codes: list[OAuthCodeReceived]) -> RelayClient:
    bus = EventBus()
    bus.subscribe(OAuthCodeReceived, codes.append)
    return RelayClient(url, token, WebhookIntake(MemoryJobQueue().aio, bus=bus), bus=bus,
                       backoff_initial=0.02, backoff_max=0.1)


@pytest.mark.asyncio
async def test_connector_signs_in_through_the_relay_and_only_the_initiator_gets_the_code(
        ghl_factory: Callable[..., Any], tmp_path: Path) -> None:
    port = free_port()
    store = RelayStore.open(f"sqlite:///{tmp_path / 'relay.db'}")
    relay = RelayServer(store, WebhookGate(SignatureVerifier.from_values(None, None, True)), port=port)
    await relay.start()
    mine: list[OAuthCodeReceived] = []
    theirs: list[OAuthCodeReceived] = []
    desktop = _client(relay.url, store.create_token("initiator"), mine)
    other = _client(relay.url, store.create_token("bystander"), theirs)
    try:
        async with ghl_factory(redirect_uris=[f"{relay.url}/oauth/callback"]) as ghl:
            for client in (desktop, other):
                client.start()
            await wait_for(lambda: all(c.state is RelayLinkState.CONNECTED for c in (desktop, other)), "connected")
            browser = Browser(click="location:0")
            connector = OAuthConnector(
                ghl.settings, ghl.tokens, ghl.client, ghl.db.locations,
                options=OAuthOptions.from_settings(ghl.settings, timeout_seconds=20.0),
                open_url=browser, relay=desktop)
            connected = await connector.connect()
            await browser.finish()
            target = ghl.sandbox.location_ids[0]
            assert [loc.id for loc in connected] == [target]
            row = ghl.db.locations.get(target)
            assert row is not None and row.state is LocationState.CONNECTED
            assert httpx.URL(browser.opened[0]).params["redirect_uri"] == f"{relay.url}/oauth/callback"
            assert "close this window" in browser.pages[0].text
            await wait_for(lambda: store.pending_count() == 0, "code acknowledged")
            assert len(mine) == 1 and theirs == []
    finally:
        await desktop.stop()
        await other.stop()
        await relay.stop()
        store.close()
