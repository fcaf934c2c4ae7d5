"""Issue 10's attacks on the relay, each kept as a test: OAuth hand-off bound to the initiating desktop,
anonymous /oauth/callback floods, the stream poison pill, an overflowing ack, a revoked token's open
stream, and counts behind the token."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import insert

from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import JobState, utcnow
from ghl_desktop.relay.client import OAuthCodeReceived, RelayClient, RelayEventRejected, RelayLinkState
from ghl_desktop.relay.server import RelayConfig, RelayServer
from ghl_desktop.relay.store import RelayStore, relay_events
from ghl_desktop.webhooks.endpoint import PROVIDER_PATH
from ghl_desktop.webhooks.gate import KIND_OUTBOUND_MESSAGE, WebhookGate
from ghl_desktop.webhooks.intake import KIND_QUARANTINED, WebhookIntake
from ghl_desktop.webhooks.verify import SignatureVerifier
from tests.fakes.job_queue import MemoryJobQueue
from tests.relay.helpers import post_signed, wait_for
from tests.webhooks.signing import SigningKeys, dump, outbound_message


@dataclass
class Desktop:
    client: RelayClient
    queue: MemoryJobQueue
    bus: EventBus
    codes: list[OAuthCodeReceived] = field(default_factory=list)
    rejected: list[RelayEventRejected] = field(default_factory=list)


@dataclass
class Relay:
    server: RelayServer
    store: RelayStore
    http: aiohttp.ClientSession
    keys: SigningKeys
    desktops: list[Desktop] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def desktop(self, token: str) -> Desktop:
        queue, bus = MemoryJobQueue(), EventBus()
        client = RelayClient(self.url, token, WebhookIntake(queue.aio, bus=bus, backlog_recount_seconds=0), bus=bus,
                             backoff_initial=0.02, backoff_max=0.1, heartbeat=5.0)
        desktop = Desktop(client, queue, bus)
        bus.subscribe(OAuthCodeReceived, desktop.codes.append)
        bus.subscribe(RelayEventRejected, desktop.rejected.append)
        self.desktops.append(desktop)
        return desktop

    async def deliver(self, body: dict[str, object]) -> int:
        return await post_signed(self.http, self.url + PROVIDER_PATH, body, self.keys)


@pytest_asyncio.fixture
async def relay(tmp_path: Path, signing_keys: SigningKeys) -> AsyncIterator[Relay]:
    store = RelayStore.open(f"sqlite:///{tmp_path / 'relay.db'}")
    gate = WebhookGate(SignatureVerifier.from_values(signing_keys.ed25519_public_pem, signing_keys.rsa_public_pem),
                       max_body_bytes=1 << 20)
    config = RelayConfig(backlog_limit=200, stream_window=8, reauth_seconds=0.05)
    server = RelayServer(store, gate, config=config)
    await server.start()
    rig: Relay | None = None
    try:
        async with aiohttp.ClientSession() as http:
            rig = Relay(server, store, http, signing_keys)
            yield rig
    finally:
        for desktop in rig.desktops if rig else []:
            await desktop.client.stop()
        await server.stop()
        store.close()


@pytest.mark.asyncio
async def test_oauth_code_reaches_only_the_desktop_that_started_the_sign_in(relay: Relay) -> None:
    first = relay.desktop(relay.store.create_token("first"))
    second = relay.desktop(relay.store.create_token("second"))
    for desktop in (first, second):
        desktop.client.start()
    await wait_for(lambda: all(d.client.state is RelayLinkState.CONNECTED for d in (first, second)), "connected")
    state = secrets.token_urlsafe(24)
    await second.client.expect_authorization(state)
    async with relay.http.get(relay.url + "/oauth/callback", params={"code": "the-code", "state": state}) as resp:
        assert resp.status == 200
    assert await second.client.wait_authorization(state, 20) == "the-code"
    await wait_for(lambda: relay.store.pending_count() == 0, "acknowledged")
    assert [c.code for c in second.codes] == ["the-code"]
    # the other desktop on the same relay never saw it (before the fix both got it)
    assert first.codes == []
    # the registration is single use: a replay of the redirect stores nothing
    async with relay.http.get(relay.url + "/oauth/callback", params={"code": "the-code", "state": state}) as resp:
        assert resp.status == 400
    assert relay.store.pending_count() == 0
    assert second.client.oauth_redirect_uri == relay.url + "/oauth/callback"


@pytest.mark.asyncio
async def test_anonymous_callback_flood_stores_nothing_and_webhooks_still_get_200(relay: Relay) -> None:
    desktop = relay.desktop(relay.store.create_token("desktop"))
    del desktop  # registered, not connected: every stored row would stay pending
    for n in range(250):
        async with relay.http.get(relay.url + "/oauth/callback",
                                  params={"code": f"c{n}", "state": secrets.token_urlsafe(8)}) as resp:
            assert resp.status == 400
        if n % 50 == 0:
            async with relay.http.get(relay.url + "/oauth/callback", params={"code": f"c{n}"}) as resp:
                assert resp.status == 400
    assert relay.store.pending_count() == 0
    # the backlog of 200 is untouched: a genuine signed delivery is taken
    assert await relay.deliver(outbound_message()) == 200


@pytest.mark.asyncio
async def test_oauth_codes_never_count_toward_the_webhook_backlog(tmp_path: Path, signing_keys: SigningKeys) -> None:
    store = RelayStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    install = store.authenticate(store.create_token("d"))
    assert install is not None
    gate = WebhookGate(SignatureVerifier.from_values(signing_keys.ed25519_public_pem, signing_keys.rsa_public_pem))
    server = RelayServer(store, gate, config=RelayConfig(backlog_limit=3))
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            for n in range(5):
                state = f"registered-state-{n:04d}"
                store.expect_authorization(install.id, state)
                async with http.get(server.url + "/oauth/callback", params={"code": "x", "state": state}) as resp:
                    assert resp.status == 200
            assert store.pending_count() == 5  # five codes waiting (the desktop is offline)...
            assert await post_signed(http, server.url + PROVIDER_PATH, outbound_message(), signing_keys) == 200
    finally:
        await server.stop()
        store.close()


@pytest.mark.asyncio
async def test_stream_poison_pill_is_quarantined_and_later_events_flow(relay: Relay) -> None:
    """An event nested ~980 deep (stored by an older relay) used to stall the stream forever."""
    token = relay.store.create_token("desktop")
    install = relay.store.authenticate(token)
    assert install is not None
    poison = outbound_message()
    text = json.dumps(poison)[:-1] + ', "extra": ' + "[" * 980 + "]" * 980 + "}"
    with relay.store.engine.begin() as conn:  # as an older relay without the depth bound stored it
        conn.execute(insert(relay_events).values(install_id=install.id, kind=KIND_OUTBOUND_MESSAGE, event=text,
                                                 dedupe_key=f"ghl:msg:{poison['messageId']}", created_at=utcnow()))
    later = outbound_message()
    assert await relay.deliver(later) == 200
    # today's gate refuses such a body at the door
    raw = dump(outbound_message())[:-1] + b', "d": ' + b"[" * 980 + b"]" * 980 + b"}"
    async with relay.http.post(relay.url + PROVIDER_PATH, data=raw, headers=relay.keys.headers(raw)) as resp:
        assert resp.status == 400
    desktop = relay.desktop(token)
    desktop.client.start()
    await wait_for(lambda: relay.store.pending_count() == 0, "both events acknowledged")
    jobs = desktop.queue.list(limit=100)
    [stored] = [j for j in jobs if j.kind == KIND_OUTBOUND_MESSAGE]
    assert stored.payload["event"]["messageId"] == later["messageId"]
    [kept] = [j for j in jobs if j.kind == KIND_QUARANTINED]
    assert kept.state is JobState.DEAD and "nested deeper than 64" in (kept.last_error or "")
    assert kept.payload["kind"] in (KIND_OUTBOUND_MESSAGE, "?") and kept.payload["excerpt"]
    assert [r.reason for r in desktop.rejected] == ["nested deeper than 64 levels"]
    assert desktop.client.quarantined == 1


@pytest.mark.asyncio
async def test_an_overflowing_ack_does_not_kill_the_stream(relay: Relay) -> None:
    token = relay.store.create_token("desktop")
    assert await relay.deliver(outbound_message()) == 200
    headers = {"Authorization": f"Bearer {token}"}
    async with relay.http.ws_connect(relay.url + "/v1/stream", headers=headers) as ws:
        frame = json.loads((await ws.receive(timeout=20)).data)
        for bad in (99999999999999999999999, -1, 0, 2**63):
            await ws.send_str(json.dumps({"ack": bad}))
        await ws.send_str(json.dumps({"ack": frame["id"]}))
        await wait_for(lambda: relay.store.pending_count() == 0, "the good ack still applied")
        assert not ws.closed
        assert await relay.deliver(outbound_message()) == 200
        live = await ws.receive(timeout=20)
        assert live.type is aiohttp.WSMsgType.TEXT and json.loads(live.data)["id"] > frame["id"]


@pytest.mark.asyncio
async def test_revoking_a_token_closes_its_open_stream(relay: Relay) -> None:
    keep = relay.desktop(relay.store.create_token("keep"))
    gone = relay.desktop(relay.store.create_token("gone"))
    for desktop in (keep, gone):
        desktop.client.start()
    await wait_for(lambda: all(d.client.state is RelayLinkState.CONNECTED for d in (keep, gone)), "connected")
    assert relay.store.revoke_token("gone")
    await wait_for(lambda: gone.client.state is RelayLinkState.UNAUTHORIZED, "revoked stream closed")
    await asyncio.sleep(0.2)  # a few re-check rounds: the other desktop stays connected
    assert keep.client.state is RelayLinkState.CONNECTED


@pytest.mark.asyncio
async def test_healthz_is_liveness_only_and_counts_need_the_token(relay: Relay) -> None:
    token = relay.store.create_token("desktop")
    assert await relay.deliver(outbound_message()) == 200
    async with relay.http.get(relay.url + "/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"ok": True}
    async with relay.http.get(relay.url + "/v1/status", headers={"Authorization": "Bearer ghlr_wrong"}) as resp:
        assert resp.status == 401
    async with relay.http.get(relay.url + "/v1/status", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert await resp.json() == {"ok": True, "install": "desktop", "pending": 1, "connected": False,
                                     "streams": 0}
