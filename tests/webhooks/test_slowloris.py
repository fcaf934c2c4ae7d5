"""Issue 10.5, slowloris: half-open and trickling connections must not lock HighLevel out. The relay
runs as its own process with 256 file descriptors (where ~300 half-open connections used to lock it
out); the direct endpoint runs in-process with a small cap. A genuine delivery gets 200 under 600
half-open connections in both."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from ghl_desktop.config import Settings
from ghl_desktop.relay.store import RelayStore
from ghl_desktop.webhooks.endpoint import PROVIDER_PATH, ConnectionLimits, WebhookServer
from ghl_desktop.webhooks.intake import WebhookIntake
from tests.fakes.job_queue import MemoryJobQueue
from tests.relay.helpers import post_signed
from tests.webhooks.signing import SigningKeys, dump, outbound_message

HALF_OPEN = 600


@pytest.fixture(autouse=True)
def _enough_descriptors() -> Iterator[None]:
    """The attacker side of the test needs ~600 sockets (the server side, in-process, as many again)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 3 * HALF_OPEN + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.asynccontextmanager
async def half_open(port: int, count: int = HALF_OPEN) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` connections that never finish a request: half send nothing, half a partial head."""
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for n in range(count):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                break  # an old server out of descriptors stops accepting; the delivery below then fails
            if n % 2:
                writer.write(f"POST {PROVIDER_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: app".encode())
            conns.append((reader, writer))
        yield [r for r, _ in conns]
    finally:
        for _, writer in conns:
            writer.close()


async def _deliver(url: str, keys: SigningKeys) -> int:
    # a liveness bound on the genuine delivery (not a speed goal): a locked-out server never answers
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        return await post_signed(http, url + PROVIDER_PATH, outbound_message(), keys)


@pytest.mark.asyncio
async def test_relay_with_256_descriptors_still_takes_a_delivery_under_600_half_open(
        tmp_path: Path, signing_keys: SigningKeys) -> None:
    db_url = f"sqlite:///{tmp_path / 'relay.db'}"
    store = RelayStore.open(db_url)
    store.create_token("desktop")
    store.close()
    env = {**os.environ, "GHL_WEBHOOK_ED25519_PUBLIC_KEY": signing_keys.ed25519_public_pem}

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghl_desktop.relay", "serve", "--port", "0", "--db-url", db_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env, preexec_fn=limit_descriptors)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("relay: "), line
        url = line.split(" ", 1)[1].strip()
        port = int(url.rsplit(":", 1)[1])
        async with half_open(port):
            assert await _deliver(url, signing_keys) == 200
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _settings(keys: SigningKeys) -> Settings:
    return Settings(webhook_ed25519_public_key=keys.ed25519_public_pem, webhook_port=0)


@pytest.mark.asyncio
async def test_direct_endpoint_caps_connections_and_drops_idle_ones_first(signing_keys: SigningKeys) -> None:
    queue = MemoryJobQueue()
    server = WebhookServer(_settings(signing_keys), WebhookIntake(queue.aio),
                           limits=ConnectionLimits(max_connections=64, header_timeout=30.0))
    url = await server.start()
    port = int(url.rsplit(":", 1)[1])
    try:
        async with half_open(port):
            assert server.guard.open_connections <= 64
            assert await _deliver(url, signing_keys) == 200
            assert server.guard.open_connections <= 64
            assert server.guard.evicted >= HALF_OPEN - 64
    finally:
        await server.stop()
    assert queue.count() == 1


@pytest.mark.asyncio
async def test_a_connection_that_never_finishes_its_head_is_closed(signing_keys: SigningKeys) -> None:
    server = WebhookServer(_settings(signing_keys), WebhookIntake(MemoryJobQueue().aio),
                           limits=ConnectionLimits(header_timeout=0.3))
    url = await server.start()
    port = int(url.rsplit(":", 1)[1])
    try:
        async with half_open(port, 4) as readers:
            for reader in readers:  # the server hangs up on each of them (EOF), without an answer
                assert await asyncio.wait_for(reader.read(), 20) == b""
        assert server.guard.timed_out == 4
        assert await _deliver(url, signing_keys) == 200
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_a_body_that_trickles_in_too_slowly_gets_408_and_nothing_is_stored(signing_keys: SigningKeys) -> None:
    queue = MemoryJobQueue()
    server = WebhookServer(_settings(signing_keys), WebhookIntake(queue.aio),
                           limits=ConnectionLimits(body_timeout=0.3))
    url = await server.start()
    port = int(url.rsplit(":", 1)[1])
    raw = dump(outbound_message())
    headers = signing_keys.headers(raw)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"POST {PROVIDER_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(raw)}\r\n{head}\r\n".encode()
                     + raw[:10])
        status = await asyncio.wait_for(reader.readline(), 20)
        writer.close()
        assert status.startswith(b"HTTP/1.1 408")
    finally:
        await server.stop()
    assert queue.count() == 0


@pytest.mark.asyncio
async def test_a_keep_alive_connection_that_served_a_request_is_not_cut_by_the_head_timeout(
        signing_keys: SigningKeys) -> None:
    """A reverse proxy (Render, a tunnel) reuses its upstream connection; closing it at the head timeout
    would race its next request (a 502, which HighLevel treats as final)."""
    queue = MemoryJobQueue()
    server = WebhookServer(_settings(signing_keys), WebhookIntake(queue.aio),
                           limits=ConnectionLimits(header_timeout=0.2))
    url = await server.start()
    port = int(url.rsplit(":", 1)[1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for n in range(2):
            raw = dump(outbound_message())
            head = "".join(f"{k}: {v}\r\n" for k, v in signing_keys.headers(raw).items())
            writer.write(f"POST {PROVIDER_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(raw)}\r\n{head}\r\n"
                         .encode() + raw)
            status = await asyncio.wait_for(reader.readline(), 20)
            assert status.startswith(b"HTTP/1.1 200"), status
            response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            length = int(next(line.split(b":")[1] for line in response_head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            if n == 0:
                await asyncio.sleep(0.6)  # three head timeouts: the connection must still be open
        writer.close()
        assert server.guard.timed_out == 0
    finally:
        await server.stop()
    assert queue.count() == 2
