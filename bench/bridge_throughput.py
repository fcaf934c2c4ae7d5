"""pipeline_ratio: inbound messages/s through the whole bridge ÷ direct posts with the same HighLevel
client, measured in one run, with the sandbox in its OWN process (``ghl-desktop sandbox`` on a free
loopback port, rate limits off) so its OpenAPI validation is not counted against the bridge.

  direct   provider messages posted straight to the sandbox with the bridge's own GhlClient
           (add_inbound_message, same rate limiter, same concurrency as the job runner)
  bridge   customer messages sent on the simulated WhatsApp network (the customers in their own
           process, bench/_customers.py) → stored by the bridge (message + job) → acked → job
           runner → contact cache → the same client → in HighLevel

Contacts exist before timing (the steady state: the contact cache answers). The bridge figure counts
from the first customer send to the last message the bridge logged with a HighLevel id. Lines
without ``"customers"`` were measured with the customers' sends in the bridge's own process (their
HTTP client's CPU counted against the bridge): ``--in-process-customers`` measures that way again.

    .venv/bin/python bench/bridge_throughput.py [--messages 1500] [--phones 8] [--quick] [--profile FILE]
                                                [--in-process-customers]

Prints a table and appends one JSON line to bench/results/bridge_throughput.jsonl (pipeline_ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    CUSTOMERS_CPU,
    NO_LIMITS,
    SentCounter,
    bridge_env,
    cpu_seconds,
    customers,
    fast_runtime,
    record,
    sandbox_process,
    table,
)
from ghl_desktop.adapters.ghl.rate import RateLimitConfig


class Cpu:
    """CPU milliseconds per message of each process over one phase (where the two cores went)."""

    def __init__(self, env, n: int) -> None:  # type: ignore[no-untyped-def]
        self.pid, self.n = env.sandbox.process.pid, n
        self.start = (cpu_seconds(), cpu_seconds(self.pid))
        self.ms: dict[str, float] = {}

    def stop(self, customers_s: float | None = None) -> dict[str, float]:
        own, sandbox = cpu_seconds() - self.start[0], cpu_seconds(self.pid) - self.start[1]
        self.ms = {"app": own, "sandbox": sandbox}
        if customers_s is not None:
            self.ms["customers"] = customers_s
        self.ms = {k: round(v * 1000 / self.n, 2) for k, v in self.ms.items()}
        return self.ms


async def direct(env, n: int, concurrency: int, cpu: dict[str, Any]) -> float:  # type: ignore[no-untyped-def]
    """Provider messages/s posted directly with the bridge's GhlClient."""
    client = env.runtime.client
    location = env.location_id
    contact = (await client.upsert_contact(location, "+4915140009999", name="Direct")).contact.id
    sem = asyncio.Semaphore(concurrency)
    now = datetime.now(UTC)

    async def post(i: int) -> None:
        async with sem:
            await client.add_inbound_message(location, contact, f"direct {i}", attachments=[],
                                             alt_id=f"DIRECT{i:08d}", direction="inbound", date=now)

    await asyncio.gather(*(post(i) for i in range(min(50, n))))  # warm the connections
    start, meter = time.perf_counter(), Cpu(env, n)
    await asyncio.gather(*(post(i) for i in range(100, 100 + n)))
    elapsed = time.perf_counter() - start
    cpu["direct"] = meter.stop()
    return n / elapsed


async def through_bridge(env, n: int, phones: list[str], profile: cProfile.Profile | None,  # type: ignore[no-untyped-def]
                         cpu: dict[str, Any], in_process: bool = False) -> float:
    """Customer messages/s from the simulated phones into HighLevel through the bridge."""
    from ghl_desktop.headless import SANDBOX_LINKED_PHONE

    linked = SANDBOX_LINKED_PHONE
    warm = SentCounter(env.app.bus, lambda body: body == "warm-up")
    for i, phone in enumerate(phones):
        await env.customer(phone, f"Bench {i}")
        await env.send(phone, "warm-up", linked)
    await warm.wait(len(phones), 120)
    warm.close()

    counter = SentCounter(env.app.bus, lambda body: body.startswith("bench "))
    # the customers send from their own process (bench/_customers.py), as in bench/budget.py: their
    # HTTP client is the network's side, not work of the bridge being measured
    plan = [{"phone": phone, "to": linked, "texts": [f"bench {i}" for i in range(k, n, len(phones))]}
            for k, phone in enumerate(phones)]
    if profile:
        profile.enable()
    meter = Cpu(env, n)
    CUSTOMERS_CPU.clear()
    sending = asyncio.ensure_future(in_process_customers(env, plan) if in_process else customers(env.url, plan))
    await counter.wait(n, 600)
    sent = await sending
    cpu["bridge"] = meter.stop(CUSTOMERS_CPU[-1] if CUSTOMERS_CPU else None)
    if profile:
        profile.disable()
    counter.close()
    start = min(sent.values())
    sent_s = max(sent.values()) - start
    elapsed = max(counter.done.values()) - start
    print(f"  (the customers' {n} sends took {sent_s:.2f} s: {n / sent_s:.0f}/s offered)")
    return n / elapsed


async def in_process_customers(env, plan: list[dict[str, Any]]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """--in-process-customers: the sends from this process (how the bench measured before): their
    HTTP client's CPU counts against the bridge."""
    sent: dict[str, float] = {}

    async def sends(customer: dict[str, Any]) -> None:
        for text in customer["texts"]:
            sent[text] = time.perf_counter()
            await env.send(customer["phone"], text, customer["to"])

    await asyncio.gather(*(sends(c) for c in plan))
    return sent


def slow_disk(env, commit_delay_ms: float) -> None:  # type: ignore[no-untyped-def]
    """--commit-delay-ms: every commit of the app's database waits this long more, as an fsync on a
    slow disk does (a sleep, like the fsync, lets the other threads run)."""
    if commit_delay_ms > 0:
        from sqlalchemy import event

        event.listen(env.app.db.engine, "commit", lambda conn: time.sleep(commit_delay_ms / 1000))


async def run(n: int, n_phones: int, profile: cProfile.Profile | None, cpu: dict[str, Any],
              in_process: bool = False, commit_delay_ms: float = 0) -> tuple[float, float]:
    phones = [f"+49151400{i:05d}" for i in range(n_phones)]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GHL_DESKTOP_HOME"] = str(Path(tmp) / "home")
        # rate limits off on both sides: the sandbox's window and the client's own scheduler
        options = fast_runtime(rate_limits=RateLimitConfig(max_per_window=10_000_000, adapt_to_headers=False))
        async with sandbox_process(faults=NO_LIMITS) as sb, bridge_env(sb, options) as env:
            concurrency = env.runtime.options.runner.concurrency
            slow_disk(env, commit_delay_ms)
            base = await direct(env, n, concurrency, cpu)
            bridge = await through_bridge(env, n, phones, profile, cpu, in_process)
            assert env.runtime.client.scheduler.rate_limited_responses == 0
    return base, bridge


def _cpu_line(ms: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in ms.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=None, help="default 1500 (--quick: 200)")
    parser.add_argument("--phones", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--profile", default=None, help="cProfile the bridge phase into this file")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/results")
    parser.add_argument("--in-process-customers", action="store_true",
                        help="send the customers' messages from this process (the measurement before; recorded "
                             "with customers=in-process)")
    parser.add_argument("--commit-delay-ms", type=float, default=0.0,
                        help="add this to every commit of the app's database (a slow disk's fsync); recorded")
    args = parser.parse_args()
    n = args.messages or (200 if args.quick else 1500)
    logging.disable(logging.INFO)
    profile = cProfile.Profile() if args.profile else None
    cpu: dict[str, Any] = {}
    base, bridge = asyncio.run(run(n, args.phones, profile, cpu, args.in_process_customers,
                                   args.commit_delay_ms))
    if profile:
        profile.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(40)
    ratio = bridge / base
    table([("messages", n), ("phones", args.phones), ("direct msg/s", f"{base:.1f}"),
           ("bridge msg/s", f"{bridge:.1f}"), ("pipeline_ratio", f"{ratio:.2f}  (goal >= 0.7)"),
           ("CPU ms/msg direct", _cpu_line(cpu.get("direct", {}))),
           ("CPU ms/msg bridge", _cpu_line(cpu.get("bridge", {})))],
          "bridge throughput, sandbox in its own process, rate limits off")
    record("bridge_throughput", {"messages": n, "phones": args.phones,
                                 "customers": "in-process" if args.in_process_customers else "own-process",
                                 "direct_msg_per_s": round(base, 1),
                                 "bridge_msg_per_s": round(bridge, 1), "pipeline_ratio": round(ratio, 3),
                                 "cpu_ms_per_msg": cpu, "commit_delay_ms": args.commit_delay_ms},
           quick=args.quick, enabled=not args.no_record and not args.profile)


if __name__ == "__main__":
    main()
