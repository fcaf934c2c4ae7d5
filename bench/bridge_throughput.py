"""Inbound throughput of the whole bridge, against a baseline measured in the same run.

Everything runs in this process over real loopback HTTP/WebSocket (tests/e2e/harness.py): the sandbox
plays HighLevel, the simulated network plays WhatsApp and the customers' phones. Measured:

  baseline  provider messages posted straight to the sandbox with the bridge's own HighLevel client
            (GhlClient.add_inbound_message, same rate limiter, same concurrency as the job runner)
  bridge    customer messages sent on the simulated network → stored by the bridge (message + job)
            → acked → worker → contact cache → posted to HighLevel, until all are in the sandbox

and prints messages/s for each and the ratio bridge/baseline (the figure to compare across machines).
Two variants: the sandbox in memory, and the sandbox persisting its state (what headless --sandbox
does, a JSON rewrite + fsync per change). The sandbox's rate-limit window is shrunk to 50 ms so the
limiter (100 requests per window) is not what is measured.

    .venv/bin/python bench/bridge_throughput.py [--messages 400] [--phones 8]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import FAST_RUNTIME, Env, bridge_env  # noqa: E402

LIMITS = {"rate_limit_per_10s": 100, "rate_limit_window_seconds": 0.05}


async def baseline(env: Env, n: int, concurrency: int) -> float:
    """Provider messages/s posted directly with the bridge's GhlClient."""
    client = env.runtime.client
    location = env.location_id
    contact = (await client.upsert_contact(location, "+4915140009999", name="Baseline")).contact.id
    sem = asyncio.Semaphore(concurrency)
    now = datetime.now(UTC)

    async def post(i: int) -> None:
        async with sem:
            await client.add_inbound_message(location, contact, f"baseline {i}", attachments=[],
                                             alt_id=f"BASE{i:08d}", direction="inbound", date=now)

    start = time.perf_counter()
    await asyncio.gather(*(post(i) for i in range(n)))
    return n / (time.perf_counter() - start)


async def through_bridge(env: Env, n: int, phones: list[str]) -> float:
    """Customer messages/s from the simulated phones into HighLevel through the bridge."""
    state = env.sandbox.state
    for i, phone in enumerate(phones):  # contacts exist before timing (the steady state)
        await env.customer(phone, f"Bench {i}")
        await env.send(phone, text="warm-up")
    await _until(lambda: sum(1 for m in state.messages.values() if m.body == "warm-up") == len(phones), 60)

    sent: set[str] = set()
    start = time.perf_counter()

    async def phone_sends(k: int, phone: str) -> None:
        for i in range(k, n, len(phones)):
            sent.add(await env.send(phone, text=f"bench {i}"))

    await asyncio.gather(*(phone_sends(k, p) for k, p in enumerate(phones)))
    await _until(lambda: sum(1 for m in state.messages.values() if m.alt_id in sent) >= n, 600)
    return n / (time.perf_counter() - start)


async def _until(check, limit: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.perf_counter() + limit
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError("the bridge did not finish within the time budget")
        await asyncio.sleep(0.01)


async def run(n: int, n_phones: int, persist: bool) -> tuple[float, float]:
    phones = [f"+49151400{i:05d}" for i in range(n_phones)]
    options = replace(FAST_RUNTIME, runner=replace(FAST_RUNTIME.runner, poll_interval=0.05))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GHL_DESKTOP_HOME"] = str(Path(tmp) / "home")
        extra = {"state_dir": str(Path(tmp) / "sandbox")} if persist else {}
        async with bridge_env(options, **LIMITS, **extra) as env:
            base = await baseline(env, n, options.runner.concurrency)
            bridge = await through_bridge(env, n, phones)
            assert env.runtime.client.scheduler.rate_limited_responses == 0
    return base, bridge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--phones", type=int, default=8)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    print(f"{args.messages} inbound messages from {args.phones} phones, concurrency "
          f"{FAST_RUNTIME.runner.concurrency}")
    print(f"{'sandbox':<22}{'baseline msg/s':>16}{'bridge msg/s':>14}{'ratio':>8}")
    for label, persist in (("in memory", False), ("persisted (headless)", True)):
        base, bridge = asyncio.run(run(args.messages, args.phones, persist))
        print(f"{label:<22}{base:>16.1f}{bridge:>14.1f}{bridge / base:>8.2f}")


if __name__ == "__main__":
    main()
