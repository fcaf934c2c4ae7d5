"""End to end over real sockets: sandbox replies → ``ghl-relay serve`` (a real process) → desktop queue.

The relay is killed with SIGKILL and restarted on the same database while 50 events wait for a
desktop that is disconnected; every reply must reach the desktop's job queue (helper A's SQLite
storage) exactly once and in the order the agent sent them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.models import NewJob
from ghl_desktop.relay.client import RelayClient, RelayLinkState
from ghl_desktop.sandbox.server import running_sandbox
from ghl_desktop.webhooks.endpoint import PROVIDER_PATH
from ghl_desktop.webhooks.gate import KIND_OUTBOUND_MESSAGE
from ghl_desktop.webhooks.intake import WebhookIntake, WebhookReceived
from tests.relay.helpers import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RelayProcess:
    """``python -m ghl_desktop.relay`` as a child process (what ``ghl-relay`` runs)."""

    def __init__(self, db_url: str, env: dict[str, str]) -> None:
        self.db_url = db_url
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.port = _free_port()
        self.log = Path(env["GHL_RELAY_LOG_FILE"])

    def run(self, *args: str) -> list[str]:
        out = subprocess.run([sys.executable, "-m", "ghl_desktop.relay", *args, "--db-url", self.db_url],
                             env=self.env, capture_output=True, text=True, timeout=60, check=True)
        return out.stdout.strip().splitlines()

    def start(self) -> str:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ghl_desktop.relay", "serve", "--port", str(self.port),
                 "--db-url", self.db_url], env=self.env, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # printed once the socket listens
        assert line == f"relay: http://127.0.0.1:{self.port}", line
        return line.removeprefix("relay: ")

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()  # an unclosed pipe is a ResourceWarning (an error in the suite)


class CrashRelayAfter:
    """The desktop's (async) job queue, except that the relay is SIGKILLed right after the Nth new job is
    committed, so that event's ack is never received: the worst moment for a crash."""

    def __init__(self, queue: Any, relay: RelayProcess, after: int) -> None:
        self._queue = queue
        self._relay = relay
        self._left = after
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def enqueue(self, job: NewJob) -> tuple[int, bool]:
        result: tuple[int, bool] = await self._queue.enqueue(job)
        if result[1] and not self.crashed:
            self._left -= 1
            if self._left == 0:
                self._relay.kill()
                self.crashed = True
        return result


@pytest.fixture
def desktop_db(tmp_path: Path) -> Iterator[Database]:
    db = open_database(f"sqlite:///{tmp_path / 'desktop' / 'ghl-desktop.db'}", migrate=True)
    yield db
    db.close()


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_sandbox_replies_reach_the_desktop_once_in_order_across_a_relay_crash(
        tmp_path: Path, desktop_db: Database) -> None:
    relay_db = f"sqlite:///{tmp_path / 'relay' / 'relay.db'}"
    env = {**os.environ, "GHL_RELAY_LOG_FILE": str(tmp_path / "relay.log")}
    relay = RelayProcess(relay_db, env)
    token = relay.run("token", "create", "--name", "office-pc")[-1]
    assert token.startswith("ghlr_")
    webhook_url = f"http://127.0.0.1:{relay.port}{PROVIDER_PATH}"
    states: list[RelayLinkState] = []
    bus = EventBus()
    received: list[WebhookReceived] = []
    bus.subscribe(WebhookReceived, received.append)

    async with running_sandbox(webhook_url=webhook_url, locations=1) as sb:
        env["GHL_WEBHOOK_ED25519_PUBLIC_KEY"] = sb.public_key_pem  # the sandbox signs with its own key
        base = relay.start()
        location = sb.location_ids[0]
        contacts = [sb.sandbox.create_contact(location, f"+1555010{i:04d}") for i in range(3)]
        sent: list[str] = []

        async def reply(n: int) -> None:
            result = await sb.reply(location, contacts[n % 3].id, f"reply {n}")
            assert result["delivery"]["statusCode"] == 200, result
            sent.append(result["messageId"])

        def client(queue: Any = desktop_db.aio.jobs) -> RelayClient:
            return RelayClient(base, token, WebhookIntake(queue, bus=bus), backoff_initial=0.05, backoff_max=0.3,
                               on_state=lambda change: states.append(change.state))

        async def relay_pending() -> int:
            async with aiohttp.ClientSession() as http, http.get(
                    base + "/v1/status", headers={"Authorization": f"Bearer {token}"}) as resp:
                return int((await resp.json())["pending"])

        def desktop_ids() -> list[str]:
            jobs = desktop_db.jobs.list(limit=1000)
            return [j.payload["event"]["messageId"] for j in jobs if j.kind == KIND_OUTBOUND_MESSAGE]

        try:
            # 1. connected desktop: replies flow live
            desktop = client()
            desktop.start()
            await wait_for(lambda: desktop.state is RelayLinkState.CONNECTED, "desktop connected")
            for n in range(10):
                await reply(n)
            await wait_for(lambda: len(desktop_ids()) == 10, "10 live replies stored")

            # 2. desktop goes away; 50 replies pile up in the relay
            await desktop.stop()
            for n in range(10, 60):
                await reply(n)
            assert await relay_pending() == 50

            # 3. the relay crashes (no clean shutdown) and comes back on the same database
            relay.kill()
            relay.start()
            assert await relay_pending() == 50

            # 4. the desktop returns; the relay crashes again right after the 25th event is stored
            #    on the desktop (its ack is lost), comes back, and the stream resumes
            crashing = CrashRelayAfter(desktop_db.aio.jobs, relay, after=25)
            desktop = client(crashing)
            desktop.start()
            await wait_for(lambda: crashing.crashed, "the crash point")
            assert 35 <= len(desktop_ids()) < 60  # frames already in the socket buffer may still land
            await wait_for(lambda: desktop.state is RelayLinkState.RECONNECTING, "desktop notices the crash")
            relay.start()
            await wait_for(lambda: len(desktop_ids()) == 60, "all 60 stored")
            for n in range(60, 65):
                await reply(n)
            await wait_for(lambda: len(desktop_ids()) == 65, "live again after the restart")
            for _ in range(500):  # the last acks may still be on their way
                if await relay_pending() == 0:
                    break
                await asyncio.sleep(0.02)
            assert await relay_pending() == 0
            await desktop.stop()
        finally:
            relay.stop()

    ids = desktop_ids()
    assert ids == sent  # every reply exactly once, in the order the agent sent them
    assert len(set(ids)) == 65
    assert desktop_db.jobs.count() == 65
    # the events whose acks died with the relay were sent again and recognised as duplicates
    assert sum(r.duplicate for r in received) >= 1
    assert len(received) - sum(r.duplicate for r in received) == 65
    assert RelayLinkState.RECONNECTING in states and states[-1] is RelayLinkState.STOPPED
    log_lines = [json.loads(line) for line in (tmp_path / "relay.log").read_text().splitlines() if line.strip()]
    assert any("listening" in entry["msg"] for entry in log_lines)
    assert token not in (tmp_path / "relay.log").read_text()
    assert "reply 1" not in (tmp_path / "relay.log").read_text()
