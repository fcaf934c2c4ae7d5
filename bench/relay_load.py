"""Load test for ``ghl-relay`` on loopback, bounded in count and time.

Starts a real ``ghl-relay serve`` process (SQLite, WAL, full fsync, DB worker thread) with a generated
Ed25519 key, then measures in one run:

  baseline   GET /healthz requests per second (same HTTP stack, one trivial DB read)
  ingest     signed ProviderOutboundMessage webhooks verified + committed per second
  stream     events streamed over the WebSocket, stored in a desktop SQLite job queue and acked, per s

and prints each rate plus its ratio to the baseline (ratios are what to compare across machines).

    .venv/bin/python bench/relay_load.py [--events 2000] [--concurrency 16] [--time-budget 60]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ghl_desktop.adapters.storage import open_database  # noqa: E402
from ghl_desktop.relay.client import RelayClient  # noqa: E402
from ghl_desktop.webhooks.intake import WebhookIntake  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def timed_requests(n: int, concurrency: int, budget: float, make) -> tuple[int, float, dict[int, int]]:  # type: ignore[no-untyped-def]
    """Run up to ``n`` requests (``make(i)`` → coroutine returning a status), stop at ``budget`` s."""
    statuses: dict[int, int] = {}
    next_i = 0
    done = 0
    start = time.perf_counter()
    deadline = start + budget

    async def worker() -> None:
        nonlocal next_i, done
        while next_i < n and time.perf_counter() < deadline:
            i = next_i
            next_i += 1
            status = await make(i)
            statuses[status] = statuses.get(status, 0) + 1
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - start, statuses


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--baseline-requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time-budget", type=float, default=60.0, help="seconds per phase, at most")
    args = parser.parse_args()

    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    db_url = f"sqlite:///{tmp / 'relay.db'}"
    env = {**os.environ, "GHL_WEBHOOK_ED25519_PUBLIC_KEY": pem, "GHL_RELAY_LOG_LEVEL": "WARNING",
           "GHL_RELAY_BACKLOG_LIMIT": str(max(100_000, args.events * 2))}
    cmd = [sys.executable, "-m", "ghl_desktop.relay"]
    token = subprocess.run([*cmd, "token", "create", "--name", "bench", "--db-url", db_url], env=env, cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen([*cmd, "serve", "--port", str(port), "--db-url", db_url], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    base = proc.stdout.readline().strip().removeprefix("relay: ")
    try:
        results = asyncio.run(measure(args, base, token, key, tmp))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    b = results["baseline_healthz_per_s"]
    print(json.dumps({
        **{k: round(v, 1) for k, v in results.items()},
        "ingest_vs_baseline": round(results["ingest_per_s"] / b, 3),
        "stream_vs_baseline": round(results["stream_per_s"] / b, 3),
        "events": args.events, "concurrency": args.concurrency, "cpus": os.cpu_count(),
    }))
    return 0


async def measure(args: argparse.Namespace, base: str, token: str, key: Ed25519PrivateKey,
                  tmp: Path) -> dict[str, float]:
    results: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def health(_i: int) -> int:
            async with http.get(base + "/healthz") as resp:
                await resp.read()
                return resp.status

        await timed_requests(200, args.concurrency, 10, health)  # warm up
        n, secs, st = await timed_requests(args.baseline_requests, args.concurrency, args.time_budget, health)
        results["baseline_healthz_per_s"] = n / secs
        print(f"baseline : {n} GET /healthz in {secs:.2f}s = {n / secs:.0f}/s {st}")

        bodies = []
        for i in range(args.events):
            raw = json.dumps({"contactId": f"c{i % 50:019d}", "locationId": "benchLocation0000001",
                              "messageId": f"m{i:019d}", "type": "SMS", "phone": "+15550000000",
                              "message": f"bench message {i}"}).encode()
            bodies.append((raw, base64.b64encode(key.sign(raw)).decode()))

        async def deliver(i: int) -> int:
            raw, sig = bodies[i]
            async with http.post(base + "/ghl/provider/webhook", data=raw,
                                 headers={"x-ghl-signature": sig, "Content-Type": "application/json"}) as resp:
                await resp.read()
                return resp.status

        n, secs, st = await timed_requests(args.events, args.concurrency, args.time_budget, deliver)
        stored = st.get(200, 0)
        results["ingest_per_s"] = stored / secs
        print(f"ingest   : {stored} webhooks verified+stored in {secs:.2f}s = {stored / secs:.0f}/s {st}")

    desktop = open_database(f"sqlite:///{tmp / 'desktop.db'}", migrate=True)
    client = RelayClient(base, token, WebhookIntake(desktop.aio.jobs, backlog_limit=10**9), backoff_initial=0.05)
    start = time.perf_counter()
    client.start()
    deadline = start + args.time_budget
    while client.received < stored and time.perf_counter() < deadline:  # noqa: ASYNC110 (polls a counter)
        await asyncio.sleep(0.01)
    secs = time.perf_counter() - start
    await client.stop()
    got = desktop.jobs.count()
    desktop.close()
    results["stream_per_s"] = got / secs
    print(f"stream   : {got} events streamed, stored in the desktop queue and acked in {secs:.2f}s "
          f"= {got / secs:.0f}/s")
    return results


if __name__ == "__main__":
    raise SystemExit(main())
