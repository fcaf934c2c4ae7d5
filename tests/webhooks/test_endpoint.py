"""Direct mode over real loopback HTTP: every answer and what is (not) stored for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
import pytest
import pytest_asyncio

from ghl_desktop.config import Settings
from ghl_desktop.core.events import EventBus
from ghl_desktop.webhooks.endpoint import APP_PATH, PROVIDER_PATH, WebhookServer
from ghl_desktop.webhooks.gate import KIND_APP_EVENT, KIND_OUTBOUND_MESSAGE
from ghl_desktop.webhooks.intake import WebhookIntake, WebhookReceived, WebhookRefused
from tests.fakes.job_queue import MemoryJobQueue
from tests.webhooks.signing import SigningKeys, dump, install_event, outbound_message


@dataclass
class Endpoint:
    url: str
    queue: MemoryJobQueue
    intake: WebhookIntake
    http: aiohttp.ClientSession
    received: list[WebhookReceived]
    refused: list[WebhookRefused]

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
        async with self.http.post(self.url + path, data=body, headers=headers) as resp:
            return resp.status, await resp.json()


def _settings(keys: SigningKeys, **changes: object) -> Settings:
    return replace(Settings(webhook_ed25519_public_key=keys.ed25519_public_pem,
                            webhook_rsa_public_key=keys.rsa_public_pem, webhook_port=0), **changes)


@pytest_asyncio.fixture
async def endpoint(signing_keys: SigningKeys) -> AsyncIterator[Endpoint]:
    queue = MemoryJobQueue()
    bus = EventBus()
    received: list[WebhookReceived] = []
    refused: list[WebhookRefused] = []
    bus.subscribe(WebhookReceived, received.append)
    bus.subscribe(WebhookRefused, refused.append)
    intake = WebhookIntake(queue.aio, backlog_limit=5, bus=bus, backlog_recount_seconds=0)
    server = WebhookServer(_settings(signing_keys), intake)
    url = await server.start()
    async with aiohttp.ClientSession() as http:
        yield Endpoint(url, queue, intake, http, received, refused)
    await server.stop()


@pytest.mark.asyncio
async def test_binds_loopback_by_default(endpoint: Endpoint) -> None:
    assert endpoint.url.startswith("http://127.0.0.1:")
    async with endpoint.http.get(endpoint.url + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True}


@pytest.mark.asyncio
async def test_signed_reply_is_stored_before_200(endpoint: Endpoint, signing_keys: SigningKeys) -> None:
    body = outbound_message()
    raw = dump(body)
    status, answer = await endpoint.post(PROVIDER_PATH, raw, signing_keys.headers(raw))
    assert (status, answer) == (200, {"ok": True, "duplicate": False})
    [job] = endpoint.queue.list()
    assert job.kind == KIND_OUTBOUND_MESSAGE
    assert job.payload["event"] == body
    assert job.payload["signature"] == "ed25519" and job.payload["via"] == "direct"
    assert job.dedupe_key == f"ghl:msg:{body['messageId']}"
    assert job.ordering_key == f"ghl:conv:{body['locationId']}:{body['contactId']}"
    assert [(r.job_id, r.duplicate) for r in endpoint.received] == [(job.id, False)]


@pytest.mark.asyncio
async def test_duplicate_delivery_answers_200_and_stores_nothing_new(endpoint: Endpoint,
                                                                    signing_keys: SigningKeys) -> None:
    raw = dump(outbound_message())
    for _ in range(3):
        status, _answer = await endpoint.post(PROVIDER_PATH, raw, signing_keys.headers(raw, "rsa"))
        assert status == 200
    assert endpoint.queue.count() == 1
    assert [r.duplicate for r in endpoint.received] == [False, True, True]


@pytest.mark.asyncio
async def test_install_on_the_app_endpoint(endpoint: Endpoint, signing_keys: SigningKeys) -> None:
    raw = dump(install_event())
    status, _ = await endpoint.post(APP_PATH, raw, signing_keys.headers(raw))
    assert status == 200
    [job] = endpoint.queue.list()
    assert job.kind == KIND_APP_EVENT and job.payload["event"]["type"] == "INSTALL"
    assert endpoint.received[0].event_type == "INSTALL"


@pytest.mark.asyncio
async def test_refusals_store_nothing(endpoint: Endpoint, signing_keys: SigningKeys) -> None:
    good = dump(outbound_message())
    install = dump(install_event(timestamp="2020-01-01T00:00:00Z"))
    other = SigningKeys()
    cases = [
        (good, other.headers(good), 401),  # wrong key
        (good, {"Content-Type": "application/json"}, 401),  # unsigned
        (good.replace(b"text to send", b"text to sand"), signing_keys.headers(good), 401),  # tampered
        (b"{not json", signing_keys.headers(b"{not json"), 400),
        (dump({"messageId": "x"}), signing_keys.headers(dump({"messageId": "x"})), 400),
        (install, signing_keys.headers(install), 400),  # an app event on the provider endpoint
    ]
    for raw, headers, expected in cases:
        status, answer = await endpoint.post(PROVIDER_PATH, raw, headers)
        assert status == expected, answer
        assert "error" in answer
    status, _ = await endpoint.post(APP_PATH, install, signing_keys.headers(install))  # stale timestamp
    assert status == 401
    assert endpoint.queue.count() == 0
    assert [r.status for r in endpoint.refused] == [401, 401, 401, 400, 400, 400, 401]


@pytest.mark.asyncio
async def test_too_large_is_413_with_or_without_content_length(endpoint: Endpoint,
                                                               signing_keys: SigningKeys) -> None:
    raw = dump(outbound_message(message="x" * 300_000))
    status, _ = await endpoint.post(PROVIDER_PATH, raw, signing_keys.headers(raw))
    assert status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 10_000):
            yield raw[i:i + 10_000]

    async with endpoint.http.post(endpoint.url + PROVIDER_PATH, data=chunks(),
                                  headers=signing_keys.headers(raw)) as resp:
        assert resp.status == 413
    assert endpoint.queue.count() == 0


@pytest.mark.asyncio
async def test_backlog_over_limit_answers_429_so_highlevel_retries(endpoint: Endpoint,
                                                                  signing_keys: SigningKeys) -> None:
    for _ in range(5):
        raw = dump(outbound_message())
        assert (await endpoint.post(PROVIDER_PATH, raw, signing_keys.headers(raw)))[0] == 200
    raw = dump(outbound_message())
    async with endpoint.http.post(endpoint.url + PROVIDER_PATH, data=raw,
                                  headers=signing_keys.headers(raw)) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "600"
    assert endpoint.queue.count() == 5
    # the worker drains one job; HighLevel's retry is now taken
    [job] = endpoint.queue.lease("w", now=endpoint.queue.list()[0].next_attempt_at, lease_seconds=30, limit=1)
    endpoint.queue.complete(job.id, "w")
    assert (await endpoint.post(PROVIDER_PATH, raw, signing_keys.headers(raw)))[0] == 200
    assert endpoint.queue.count("pending") == 5


@pytest.mark.asyncio
async def test_database_failure_answers_429_never_5xx(endpoint: Endpoint, signing_keys: SigningKeys) -> None:
    endpoint.queue.fail_writes = True
    raw = dump(outbound_message())
    status, _ = await endpoint.post(PROVIDER_PATH, raw, signing_keys.headers(raw))
    assert status == 429
    endpoint.queue.fail_writes = False
    status, _ = await endpoint.post(PROVIDER_PATH, raw, signing_keys.headers(raw))
    assert status == 200
    assert endpoint.queue.count() == 1


@pytest.mark.asyncio
async def test_unsigned_accepted_when_configured(signing_keys: SigningKeys) -> None:
    queue = MemoryJobQueue()
    server = WebhookServer(_settings(signing_keys, accept_unsigned_webhooks=True), WebhookIntake(queue.aio))
    url = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url + PROVIDER_PATH, data=dump(outbound_message()),
                                 headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 200
    finally:
        await server.stop()
    [job] = queue.list()
    assert job.payload["signature"] == "unsigned"


@pytest.mark.asyncio
async def test_start_stop_restart_on_a_chosen_port(signing_keys: SigningKeys) -> None:
    queue = MemoryJobQueue()
    server = WebhookServer(_settings(signing_keys), WebhookIntake(queue.aio))
    url = await server.start()
    assert server.running
    await server.stop()
    assert not server.running
    port = int(url.rsplit(":", 1)[1])
    again = WebhookServer(_settings(signing_keys, webhook_port=port), WebhookIntake(queue.aio))
    assert await again.start() == url
    await again.stop()


@pytest.mark.asyncio
async def test_real_sqlite_queue_keeps_the_job_across_a_restart(sqlite_url: str, signing_keys: SigningKeys) -> None:
    """With helper A's storage: the job is committed when 200 goes out, and survives reopening."""
    from ghl_desktop.adapters.storage import open_database

    db = open_database(sqlite_url, migrate=True)
    body = outbound_message()
    raw = dump(body)
    server = WebhookServer(_settings(signing_keys), WebhookIntake(db.aio.jobs, backlog_limit=100_000))
    url = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(url + PROVIDER_PATH, data=raw, headers=signing_keys.headers(raw)) as resp:
                    assert resp.status == 200
    finally:
        await server.stop()
        db.close()
    reopened = open_database(sqlite_url, migrate=True)
    try:
        [job] = reopened.jobs.list()
        assert job.kind == KIND_OUTBOUND_MESSAGE and job.payload["event"] == body
        assert job.dedupe_key == f"ghl:msg:{body['messageId']}"
        assert reopened.jobs.count("pending") == 1
    finally:
        reopened.close()


@pytest.mark.asyncio
async def test_backlog_is_recounted_periodically_and_tracks_own_inserts() -> None:
    """Counting 100,000 pending rows per delivery would be slow: recount once a second, add our inserts."""
    from ghl_desktop.webhooks.gate import VerifiedEvent

    queue = MemoryJobQueue()
    now = [0.0]
    counts: list[int] = []

    async def count() -> int:
        counts.append(queue.count("pending"))
        return counts[-1]

    intake = WebhookIntake(queue.aio, backlog_limit=3, pending_count=count, clock=lambda: now[0])

    def event(n: int) -> VerifiedEvent:
        return VerifiedEvent(kind=KIND_OUTBOUND_MESSAGE, event={"n": n}, dedupe_key=f"k{n}", ordering_key=None)

    for n in range(3):
        await intake.store(event(n))
    assert len(counts) == 1  # counted once, then tracked
    with pytest.raises(Exception, match="waiting"):
        await intake.store(event(3))
    for job in queue.lease("w", now=queue.list()[-1].next_attempt_at, lease_seconds=5):
        queue.complete(job.id, "w")
    with pytest.raises(Exception, match="waiting"):
        await intake.store(event(3))  # not recounted yet
    now[0] = 1.5
    assert (await intake.store(event(3))).created
    assert len(counts) == 2


@pytest.mark.asyncio
async def test_port_in_use_is_a_clear_config_error(endpoint: Endpoint, signing_keys: SigningKeys) -> None:
    from ghl_desktop.core.errors import ConfigError

    port = int(endpoint.url.rsplit(":", 1)[1])
    clash = WebhookServer(_settings(signing_keys, webhook_port=port), WebhookIntake(MemoryJobQueue().aio))
    with pytest.raises(ConfigError, match="cannot listen"):
        await clash.start()
    assert not clash.running


@pytest.mark.asyncio
async def test_highlevel_retries_after_429_at_10_and_20_minutes_are_stored_once(signing_keys: SigningKeys) -> None:
    """Issue 11.1: a 429 asks HighLevel to retry (same body, same timestamp, ~10 min later). The retry
    must not be refused as stale, and the second retry must not store it twice."""
    from datetime import UTC, datetime, timedelta

    from ghl_desktop.webhooks.gate import WebhookGate
    from ghl_desktop.webhooks.verify import SignatureVerifier

    sent = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    now = [sent + timedelta(seconds=2)]
    settings = _settings(signing_keys)
    gate = WebhookGate(SignatureVerifier.from_settings(settings), clock=lambda: now[0])
    queue = MemoryJobQueue()
    server = WebhookServer(settings, WebhookIntake(queue.aio, backlog_recount_seconds=0), gate=gate)
    url = await server.start()
    raw = dump(install_event(timestamp=sent.isoformat().replace("+00:00", "Z")))
    try:
        async with aiohttp.ClientSession() as http:
            async def deliver() -> tuple[int, dict[str, object]]:
                async with http.post(url + APP_PATH, data=raw, headers=signing_keys.headers(raw)) as resp:
                    return resp.status, await resp.json()

            queue.fail_writes = True  # the store cannot take it now: 429, HighLevel will retry
            assert (await deliver())[0] == 429
            queue.fail_writes = False
            now[0] = sent + timedelta(minutes=10, seconds=37)
            assert await deliver() == (200, {"ok": True, "duplicate": False})
            now[0] = sent + timedelta(minutes=20, seconds=51)
            assert await deliver() == (200, {"ok": True, "duplicate": True})
    finally:
        await server.stop()
    assert [j.kind for j in queue.list()] == [KIND_APP_EVENT]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
    ],
)
async def test_unsigned_mode_refuses_what_a_web_page_can_send(signing_keys: SigningKeys, headers: dict[str, str],
                                                              status: int) -> None:
    """Issue 10.6: with unsigned webhooks on, a page on any website could POST a reply (text/plain needs
    no CORS preflight) and make the desktop send WhatsApp messages."""
    queue = MemoryJobQueue()
    server = WebhookServer(_settings(signing_keys, accept_unsigned_webhooks=True), WebhookIntake(queue.aio))
    url = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url + PROVIDER_PATH, data=dump(outbound_message()), headers=headers) as resp:
                assert resp.status == status
    finally:
        await server.stop()
    assert queue.count() == 0
