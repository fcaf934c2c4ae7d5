"""Hypothesis fuzzing of the direct-mode endpoint over real loopback HTTP (aiohttp's own parser).

10,000 random bodies and headers: never a 5xx, never the "unexpected failure" 429, never a crash, and
nothing stored. A second, smaller run signs the random bodies with the configured key, so they get
past the signature into JSON and schema checks: a refusal still stores nothing, and every 200 is a
stored job.
"""

from __future__ import annotations

import asyncio
import base64
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghl_desktop.config import Settings
from ghl_desktop.webhooks.endpoint import APP_PATH, PROVIDER_PATH, WebhookServer
from ghl_desktop.webhooks.gate import WebhookGate
from ghl_desktop.webhooks.intake import WebhookIntake
from ghl_desktop.webhooks.verify import SignatureVerifier
from tests.fakes.job_queue import MemoryJobQueue
from tests.webhooks.signing import SigningKeys, install_event, outbound_message

MAX_BODY = 4096
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer",
            "keep-alive", "proxy-connection"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=8,
)
FIELDS = ["locationId", "messageId", "contactId", "type", "message", "attachments", "userId", "timestamp",
          "webhookId", "appId", "companyId", "installType", "trial", "phone"]


@st.composite
def mutated_event(draw: st.DrawFn) -> bytes:
    """A near-valid HighLevel body with some fields dropped or replaced by random JSON."""
    base = draw(st.sampled_from([outbound_message(messageId="m1"), install_event(webhookId="w1"),
                                 {"type": "UNINSTALL", "appId": "a1", "locationId": "l1"}]))
    body = dict(base)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    return json.dumps(body).encode()


bodies = st.one_of(
    st.binary(max_size=600),
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated_event(),
    st.integers(MAX_BODY - 2, MAX_BODY + 50).map(lambda n: b"{" + b"x" * n + b"}"),
)


def _printable(blob: bytes) -> str:
    return "".join(PRINTABLE[b % len(PRINTABLE)] for b in blob)


def headers_from(blob: bytes) -> dict[str, str]:
    """Decode one random byte string into a header set (one cheap draw instead of many small ones).

    Byte 0 chooses which signature headers appear and whether they hold base64 or raw text; byte 1 picks
    Content-Type / Content-Encoding; the rest is split into header values and random extra headers."""
    if len(blob) < 2:
        return {}
    flags, pick, rest = blob[0], blob[1], blob[2:]
    third = max(1, len(rest) // 3)
    parts = [rest[:third], rest[third:2 * third], rest[2 * third:]]
    headers: dict[str, str] = {"Content-Type": ["application/json", "text/plain", "", "x/y"][pick % 4]}
    if pick % 10 == 0:
        headers["Content-Encoding"] = ["gzip", "deflate", "br", "identity", "x-nope"][(pick // 10) % 5]
    for bit, name, part in ((1, "x-ghl-signature", parts[0]), (2, "x-wh-signature", parts[1])):
        if flags & bit:
            headers[name] = base64.b64encode(part).decode() if flags & (bit << 2) else _printable(part[:80])
    if flags & 16 and parts[2]:
        name = "".join(TOKEN_CHARS[b % len(TOKEN_CHARS)] for b in parts[2][:10])
        if name.lower() not in RESERVED:
            headers[name] = _printable(parts[2][10:70])
    return headers


header_sets = st.binary(min_size=2, max_size=400).map(headers_from)


@dataclass
class LiveEndpoint:
    loop: asyncio.AbstractEventLoop
    url: str
    queue: MemoryJobQueue
    http: aiohttp.ClientSession

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        async def go() -> int:
            async with self.http.post(self.url + path, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status

        return self.loop.run_until_complete(go())


@pytest.fixture(scope="module")
def live(signing_keys: SigningKeys) -> Iterator[LiveEndpoint]:
    loop = asyncio.new_event_loop()
    queue = MemoryJobQueue()
    settings_ = Settings(webhook_ed25519_public_key=signing_keys.ed25519_public_pem,
                         webhook_rsa_public_key=signing_keys.rsa_public_pem, webhook_port=0)
    gate = WebhookGate(SignatureVerifier.from_settings(settings_), max_body_bytes=MAX_BODY)
    server = WebhookServer(settings_, WebhookIntake(queue.aio), gate=gate)
    url = loop.run_until_complete(server.start())

    async def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(auto_decompress=False, skip_auto_headers={"Content-Type"})

    http = loop.run_until_complete(session())
    try:
        yield LiveEndpoint(loop, url, queue, http)
    finally:
        loop.run_until_complete(http.close())
        loop.run_until_complete(server.stop())
        loop.close()


def test_fuzz_random_bodies_and_headers_store_nothing(live: LiveEndpoint) -> None:
    seen: dict[int, int] = {}

    @settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(path=st.sampled_from([PROVIDER_PATH, APP_PATH]), body=bodies, headers=header_sets)
    def run(path: str, body: bytes, headers: dict[str, str]) -> None:
        status = live.post(path, body, headers)
        seen[status] = seen.get(status, 0) + 1
        assert status in (400, 401, 413, 415), (status, body[:200], headers)
        assert live.queue.count() == 0

    run()
    assert seen.get(401, 0) > 0 and seen.get(413, 0) > 0  # the strategies reach more than one refusal


def test_fuzz_signed_random_bodies(live: LiveEndpoint, signing_keys: SigningKeys) -> None:
    stored: set[str] = set()

    @settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(path=st.sampled_from([PROVIDER_PATH, APP_PATH]), body=bodies, scheme=st.sampled_from(["ed25519", "rsa"]))
    def run(path: str, body: bytes, scheme: str) -> None:
        before = live.queue.count()
        status = live.post(path, body, signing_keys.headers(body, scheme))
        assert status in (200, 400, 401, 413), status
        if status != 200:
            assert live.queue.count() == before
            return
        event: Any = json.loads(body)
        key = f"ghl:msg:{event['messageId']}" if path == PROVIDER_PATH else None
        stored.update(j.dedupe_key or "" for j in live.queue.list(limit=100_000))
        if key is not None:
            assert key in stored

    run()
