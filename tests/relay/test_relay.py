"""The relay and the desktop's relay client over real loopback sockets (HTTP + WebSocket)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from ghl_desktop.core.errors import OAuthError
from ghl_desktop.core.events import EventBus
from ghl_desktop.relay.client import (
    OAuthCodeReceived,
    RelayClient,
    RelayLinkState,
    RelayStateChanged,
)
from ghl_desktop.relay.logs import JsonFormatter, redact
from ghl_desktop.relay.server import WORKER_HEADER, RelayConfig, RelayServer
from ghl_desktop.relay.store import RelayStore
from ghl_desktop.webhooks.endpoint import APP_PATH, PROVIDER_PATH
from ghl_desktop.webhooks.gate import KIND_APP_EVENT, KIND_OUTBOUND_MESSAGE, WebhookGate
from ghl_desktop.webhooks.intake import WebhookIntake
from ghl_desktop.webhooks.verify import SignatureVerifier
from tests.fakes.job_queue import MemoryJobQueue
from tests.relay.helpers import post_signed, wait_for
from tests.webhooks.signing import SigningKeys, install_event, outbound_message


@dataclass
class Rig:
    relay: RelayServer
    store: RelayStore
    token: str
    http: aiohttp.ClientSession
    keys: SigningKeys
    queue: MemoryJobQueue = field(default_factory=MemoryJobQueue)
    bus: EventBus = field(default_factory=EventBus)
    states: list[RelayLinkState] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.relay.url

    async def deliver(self, body: dict[str, object], path: str = PROVIDER_PATH) -> int:
        return await post_signed(self.http, self.url + path, body, self.keys)

    def client(self, token: str | None = None, *, backlog_limit: int = 100_000) -> RelayClient:
        intake = WebhookIntake(self.queue.aio, backlog_limit=backlog_limit, bus=self.bus, backlog_recount_seconds=0)
        return RelayClient(self.url, token or self.token, intake, bus=self.bus,
                           on_state=lambda change: self.states.append(change.state),
                           backoff_initial=0.02, backoff_max=0.1, heartbeat=5.0)

    def message_ids(self) -> list[str]:
        return [j.payload["event"]["messageId"] for j in self.queue.list(limit=10_000)
                if j.kind == KIND_OUTBOUND_MESSAGE]


# The relay's store runs on its worker thread, as in production. (Thread completions on the suite's
# loop work since ghl_desktop/ui/qloop.py fixed qasync's stopped-loop callbacks.)
DB_THREAD = True


def _gate(keys: SigningKeys) -> WebhookGate:
    return WebhookGate(SignatureVerifier.from_values(keys.ed25519_public_pem, keys.rsa_public_pem))


@pytest_asyncio.fixture
async def rig(tmp_path: Path, signing_keys: SigningKeys) -> AsyncIterator[Rig]:
    store = RelayStore.open(f"sqlite:///{tmp_path / 'relay.db'}")
    token = store.create_token("desktop")
    config = RelayConfig(backlog_limit=1000, stream_window=8, db_thread=DB_THREAD)
    relay = RelayServer(store, _gate(signing_keys), config=config)
    await relay.start()
    try:
        async with aiohttp.ClientSession() as http:
            rig = Rig(relay, store, token, http, signing_keys)
            yield rig
    finally:
        await rig.relay.stop()  # the relay the test left (a restart test replaces rig.relay)
        store.close()


@pytest.mark.asyncio
async def test_events_stream_in_order_and_are_deleted_only_after_ack(rig: Rig) -> None:
    bodies = [outbound_message() for _ in range(20)]  # more than the stream window of 8
    for body in bodies:
        assert await rig.deliver(body) == 200
    assert rig.store.pending_count() == 20
    client = rig.client()
    client.start()
    await wait_for(lambda: len(rig.queue.list()) == 20, "20 jobs in the desktop queue")
    await wait_for(lambda: rig.store.pending_count() == 0, "relay queue drained by acks")
    assert rig.message_ids() == [b["messageId"] for b in bodies]
    assert all(j.payload["via"] == "relay" and j.payload["signature"] == "relay" for j in rig.queue.list())
    # live events keep flowing on the open stream
    late = outbound_message()
    assert await rig.deliver(late) == 200
    await wait_for(lambda: rig.message_ids()[-1:] == [late["messageId"]], "live event")
    await client.stop()
    assert rig.states[0] is RelayLinkState.CONNECTING and RelayLinkState.CONNECTED in rig.states
    assert rig.states[-1] is RelayLinkState.STOPPED


@pytest.mark.asyncio
async def test_unacknowledged_events_come_again_in_order_and_are_stored_once(rig: Rig) -> None:
    bodies = [outbound_message() for _ in range(5)]
    for body in bodies:
        assert await rig.deliver(body) == 200
    headers = {"Authorization": f"Bearer {rig.token}"}
    async with rig.http.ws_connect(rig.url + "/v1/stream", headers=headers) as ws:
        frames = [json.loads((await ws.receive()).data) for _ in range(5)]
        assert [f["event"]["messageId"] for f in frames] == [b["messageId"] for b in bodies]
        assert {f["kind"] for f in frames} == {KIND_OUTBOUND_MESSAGE}
        await ws.send_str(json.dumps({"ack": frames[0]["id"]}))
        await wait_for(lambda: rig.store.pending_count() == 4, "first ack applied")
    # the desktop stored event 2 but its ack was lost when it crashed
    await WebhookIntake(rig.queue.aio).store_relayed(KIND_OUTBOUND_MESSAGE, frames[1]["event"])
    async with rig.http.ws_connect(rig.url + "/v1/stream", headers=headers) as ws:
        again = [json.loads((await ws.receive()).data) for _ in range(4)]
    assert [f["id"] for f in again] == [f["id"] for f in frames[1:]]
    client = rig.client()
    client.start()
    await wait_for(lambda: rig.store.pending_count() == 0, "all acked")
    await client.stop()
    assert rig.message_ids() == [b["messageId"] for b in bodies[1:]]  # event 1 was acked by the raw client


@pytest.mark.asyncio
async def test_unknown_token_is_401_and_the_client_stops_as_unauthorized(rig: Rig) -> None:
    async with rig.http.get(rig.url + "/v1/stream") as resp:
        assert resp.status == 401
    async with rig.http.get(rig.url + "/v1/stream", headers={"Authorization": "Bearer ghlr_nope"}) as resp:
        assert resp.status == 401
    client = rig.client("ghlr_wrong")
    client.start()
    await wait_for(lambda: client.state is RelayLinkState.UNAUTHORIZED, "unauthorized")
    assert client._task is not None
    await wait_for(client._task.done, "the client gave up instead of retrying")
    assert rig.states == [RelayLinkState.CONNECTING, RelayLinkState.UNAUTHORIZED]
    # a revoked token is refused the same way
    assert rig.store.revoke_token("desktop")
    revoked = rig.client()
    revoked.start()
    await wait_for(lambda: revoked.state is RelayLinkState.UNAUTHORIZED, "revoked token refused")


@pytest.mark.asyncio
async def test_install_uninstall_and_oauth_code_reach_the_desktop(rig: Rig) -> None:
    codes: list[OAuthCodeReceived] = []
    rig.bus.subscribe(OAuthCodeReceived, codes.append)
    client = rig.client()
    client.start()
    await wait_for(lambda: client.state is RelayLinkState.CONNECTED, "connected")
    assert await rig.deliver(install_event(), APP_PATH) == 200
    uninstall = {"type": "UNINSTALL", "appId": "ve9EPM428h8vShlRW1KT", "locationId": "otg8dTQqGLh3Q6iQI55w"}
    assert await rig.deliver(uninstall, APP_PATH) == 200
    st1, st2 = "state-one-0123456789", "state-two-0123456789"
    await client.expect_authorization(st1)
    async with rig.http.get(rig.url + "/oauth/callback", params={"code": "secret-code-123", "state": st1}) as resp:
        assert resp.status == 200
        assert "close this window" in await resp.text()
    assert await client.wait_authorization(st1, 20) == "secret-code-123"
    await wait_for(lambda: len(codes) == 1 and len(rig.queue.list()) == 2, "app events and the code")
    assert [j.payload["event"]["type"] for j in rig.queue.list()] == ["INSTALL", "UNINSTALL"]
    assert {j.kind for j in rig.queue.list()} == {KIND_APP_EVENT}
    assert (codes[0].code, codes[0].state) == ("secret-code-123", st1)
    assert "secret-code-123" not in repr(codes[0])
    await wait_for(lambda: rig.store.pending_count() == 0, "acked")
    # the code itself is not written to the desktop's queue
    assert all("secret-code-123" not in json.dumps(j.payload) for j in rig.queue.list())
    await client.expect_authorization(st2)
    async with rig.http.get(rig.url + "/oauth/callback", params={"error": "access_denied", "state": st2}) as resp:
        assert resp.status == 200
    with pytest.raises(OAuthError, match="access_denied"):
        await client.wait_authorization(st2, 20)
    await wait_for(lambda: len(codes) == 2, "oauth error forwarded")
    assert (codes[1].error, codes[1].code) == ("access_denied", None)
    async with rig.http.get(rig.url + "/oauth/callback") as resp:
        assert resp.status == 400
    await client.stop()


@pytest.mark.asyncio
async def test_refusals_and_backpressure_on_the_relay(rig: Rig, signing_keys: SigningKeys) -> None:
    other = SigningKeys()
    body = outbound_message()
    assert await post_signed(rig.http, rig.url + PROVIDER_PATH, body, other) == 401
    assert await rig.deliver({"messageId": "only"}) == 400
    async with rig.http.post(rig.url + PROVIDER_PATH, data=b"x" * 300_000) as resp:
        assert resp.status == 413
    assert rig.store.pending_count() == 0
    assert await rig.deliver(body) == 200
    assert await rig.deliver(body) == 200  # duplicate
    assert rig.store.pending_count() == 1
    async with rig.http.get(rig.url + "/healthz") as resp:
        assert await resp.json() == {"ok": True}  # liveness only: no counts without the token
    async with rig.http.get(rig.url + "/v1/status", headers={"Authorization": f"Bearer {rig.token}"}) as resp:
        assert (await resp.json())["pending"] == 1
    async with rig.http.get(rig.url + "/v1/status") as resp:
        assert resp.status == 401


@pytest.mark.asyncio
async def test_relay_backlog_limit_and_no_registered_desktop_answer_429(tmp_path: Path,
                                                                       signing_keys: SigningKeys) -> None:
    store = RelayStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    relay = RelayServer(store, _gate(signing_keys), config=RelayConfig(backlog_limit=2, db_thread=DB_THREAD))
    await relay.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = relay.url + PROVIDER_PATH
            assert await post_signed(http, url, outbound_message(), signing_keys) == 429  # no token yet
            store.create_token("d")
            assert await post_signed(http, url, outbound_message(), signing_keys) == 200
            assert await post_signed(http, url, outbound_message(), signing_keys) == 200
            assert await post_signed(http, url, outbound_message(), signing_keys) == 429
        assert store.pending_count() == 2
    finally:
        await relay.stop()
        store.close()


@pytest.mark.asyncio
async def test_desktop_backlog_full_defers_without_ack_and_keeps_order(rig: Rig) -> None:
    bodies = [outbound_message() for _ in range(6)]
    for body in bodies:
        assert await rig.deliver(body) == 200
    client = rig.client(backlog_limit=3)
    client.start()
    await wait_for(lambda: len(rig.queue.list()) == 3, "3 stored")
    await wait_for(lambda: RelayLinkState.RECONNECTING in rig.states, "deferred")
    assert rig.store.pending_count() == 3
    for _ in range(3):  # the bridge works through the (same-conversation, so one at a time) jobs
        [job] = rig.queue.lease("worker", now=rig.queue.list()[-1].next_attempt_at, lease_seconds=30)
        rig.queue.complete(job.id, "worker")
    await wait_for(lambda: rig.store.pending_count() == 0, "the rest delivered after draining")
    await client.stop()
    assert rig.message_ids() == [b["messageId"] for b in bodies]


@pytest.mark.asyncio
async def test_a_second_connection_replaces_the_first(rig: Rig) -> None:
    headers = {"Authorization": f"Bearer {rig.token}"}
    first = await rig.http.ws_connect(rig.url + "/v1/stream", headers=headers)
    second = await rig.http.ws_connect(rig.url + "/v1/stream", headers=headers)
    msg = await first.receive()
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4001
    body = outbound_message()
    assert await rig.deliver(body) == 200
    frame = json.loads((await second.receive()).data)
    assert frame["event"]["messageId"] == body["messageId"]
    await second.close()


@pytest.mark.asyncio
async def test_client_reconnects_with_backoff_when_the_relay_restarts(rig: Rig, tmp_path: Path,
                                                                      signing_keys: SigningKeys) -> None:
    changes: list[RelayStateChanged] = []
    rig.bus.subscribe(RelayStateChanged, changes.append)
    client = rig.client()
    client.start()
    await wait_for(lambda: client.state is RelayLinkState.CONNECTED, "connected")
    port = rig.relay.bound_port
    await rig.relay.stop()
    await wait_for(lambda: client.state is RelayLinkState.RECONNECTING, "reconnecting")
    assert all(c.retry_in is not None and 0 < c.retry_in <= 0.1 for c in changes
               if c.state is RelayLinkState.RECONNECTING)
    rig.relay = RelayServer(rig.store, _gate(signing_keys), port=port or 0,
                            config=RelayConfig(db_thread=DB_THREAD))
    await rig.relay.start()
    body = outbound_message()
    assert await rig.deliver(body) == 200
    await wait_for(lambda: rig.message_ids() == [body["messageId"]], "event after reconnect")
    assert client.state is RelayLinkState.CONNECTED
    await client.stop()


def test_backoff_is_capped_and_jittered() -> None:
    client = RelayClient("https://relay.example.com", "t", WebhookIntake(MemoryJobQueue().aio),
                         backoff_initial=1.0, backoff_max=60.0, rng=lambda: 1.0)
    assert client.url == "wss://relay.example.com/v1/stream"
    assert [client.backoff(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    low = RelayClient("http://h:1/", "t", WebhookIntake(MemoryJobQueue().aio), rng=lambda: 0.0)
    assert low.url == "ws://h:1/v1/stream"
    assert low.backoff(3) == 4.0  # half of the 8 s step
    assert low.backoff(500) == 30.0


def test_logs_are_json_lines_without_secrets() -> None:
    record = logging.LogRecord("ghl.relay", logging.INFO, __file__, 1,
                               "got Bearer ghlr_abcdef123 and /oauth/callback?code=xyz&state=1", None, None)
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["level"] == "info" and entry["logger"] == "ghl.relay"
    assert "ghlr_abcdef123" not in line and "xyz" not in line
    assert redact("token ghlr_Zz-9_ end") == "token *** end"


@pytest.mark.asyncio
async def test_relay_never_logs_tokens_codes_or_bodies(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = rig.client()
    client.start()
    body = outbound_message(message="very private words")
    assert await rig.deliver(body) == 200
    await client.expect_authorization("a-state-of-20-chars!")
    async with rig.http.get(rig.url + "/oauth/callback",
                            params={"code": "c0de-s3cret", "state": "a-state-of-20-chars!"}) as resp:
        assert resp.status == 200
    await wait_for(lambda: rig.store.pending_count() == 0 and len(rig.queue.list()) == 1, "delivered")
    await client.stop()
    text = "\n".join(r.getMessage() + " " + json.dumps({k: str(v) for k, v in r.__dict__.items()})
                     for r in caplog.records)
    assert "stored" in text  # the relay did log
    for secret in (rig.token, "c0de-s3cret", "very private words"):
        assert secret not in text


@pytest.mark.asyncio
async def test_workers_of_one_cluster_stream_side_by_side_and_each_event_is_stored_once(rig: Rig) -> None:
    """Issue 14: a cluster's workers share one relay token (it is in the shared database). Streams that
    name different workers do not replace each other; each is sent every pending event, the shared
    queue stores it once, and the same worker connecting again still replaces its old stream."""
    headers = {"Authorization": f"Bearer {rig.token}"}
    raw_w1 = await rig.http.ws_connect(rig.url + "/v1/stream", headers={**headers, WORKER_HEADER: "w1"})
    raw_w2 = await rig.http.ws_connect(rig.url + "/v1/stream", headers={**headers, WORKER_HEADER: "w2"})
    body = outbound_message()
    assert await rig.deliver(body) == 200
    for ws in (raw_w1, raw_w2):  # both stay open and both get the event
        frame = json.loads((await ws.receive()).data)
        assert frame["event"]["messageId"] == body["messageId"]
    status = await rig.http.get(rig.url + "/v1/status", headers=headers)
    assert (await status.json())["streams"] == 2
    again = await rig.http.ws_connect(rig.url + "/v1/stream", headers={**headers, WORKER_HEADER: "w1"})
    msg = await raw_w1.receive()
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4001
    for ws in (raw_w2, again):
        await ws.close()

    # two workers' relay clients over one shared queue (the cluster's database): stored once, acked
    workers = [rig.client(), rig.client()]
    for client, name in zip(workers, ("w1", "w2"), strict=True):
        client.worker = name
        client.start()
    try:
        await wait_for(lambda: all(c.state is RelayLinkState.CONNECTED for c in workers), "both workers connected")
        bodies = [outbound_message() for _ in range(5)]
        for b in bodies:
            assert await rig.deliver(b) == 200
        await wait_for(lambda: rig.store.pending_count() == 0, "every event acknowledged")
        assert all(c.state is RelayLinkState.CONNECTED for c in workers)  # neither replaced the other
        assert sum(c.received for c in workers) >= 6  # (a duplicate reaching both is stored once:)
        assert sorted(rig.message_ids()) == sorted([body["messageId"], *(b["messageId"] for b in bodies)])
    finally:
        for client in workers:
            await client.stop()
