"""HighLevel's rate budget: how much of it the bridge uses on a backlog, and the latency below it.

The sandbox runs in its own process (``ghl-desktop sandbox``) and enforces HighLevel's real limit —
100 requests per app per location in a sliding 10 s window (``--window`` changes the window — shorter
for a faster run, longer where the machine cannot keep up with the real rate — and the output and the
JSON line say the scale) — answering 429 past it. The bridge is the app's own
``BridgeRuntime`` with the app's default options (job runner, HighLevel client, its rate scheduler
told the documented limit) and three locations connected through the consent page, each with its own
simulated WhatsApp number linked by QR.

  drain     ``--backlog`` inbound WhatsApp messages (default 1,000) on each of the 3 locations, sent
            by 10 customers per location and stored by the bridge while its job runner is paused (a
            backlog, as after an outage); the runner resumes and the drain is timed from there.
              budget_use        requests the drain made per window ÷ the limit, averaged over every
                                full window (aligned at the drain's first request; the last, partial
                                window — the backlog running out — is left out), lowest location
              rate_limited_429  429 answers the sandbox gave during the run (all locations)
  latency   the same customers (in their own process, bench/_customers.py) send at half the budget
            (limit ÷ 2 per window per location, evenly paced) for ``--latency-seconds``:
            latency_p50_ms / latency_p99_ms from the customer's send on the WhatsApp network to
            HighLevel's answer to the bridge's post (MessageLogged with a HighLevel
            id), i.e. WhatsApp event → HighLevel request, upper bound.

Request times are the bridge's (the moment HighLevel's answer arrived, a few ms after the sandbox
counted it); request counts and 429s are the sandbox's own (GET /_sandbox/state → rate_limits). The
customers' contacts exist before the drain (the steady state: one request per message); the line
reports requests per message so an extra request per message would show.

    .venv/bin/python bench/budget.py [--backlog 1000] [--window 10] [--latency-seconds 30] [--quick]

Prints a table and appends one JSON line to bench/results/budget.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import BridgeEnv, bridge_env, percentile, record, sandbox_process, table
from bench._common import customers as run_customers

LIMIT = 100  # HighLevel: 100 requests per app per location per 10 s
REAL_WINDOW = 10.0
LOCATIONS = 3
CUSTOMERS = 10  # per location


class Posts:
    """Every message the bridge posted to HighLevel (a MessageLogged with a HighLevel id), by body."""

    def __init__(self, bus: Any) -> None:
        from ghl_desktop.services.bridge import MessageLogged

        self.at: dict[str, float] = {}  # body → when HighLevel's answer came back (perf_counter)
        self.location: dict[str, str] = {}
        self.stored: set[str] = set()  # bodies the bridge has stored (message + job)
        self._unsubscribe = bus.subscribe(MessageLogged, self._on)

    def _on(self, event: Any) -> None:
        m = event.message
        if m.body:
            self.stored.add(m.body)
        if m.ghl_message_id and m.body and m.body not in self.at:
            self.at[m.body] = time.perf_counter()
            self.location[m.body] = str(m.location_id)

    def close(self) -> None:
        self._unsubscribe()

    async def wait(self, bodies: list[str], limit: float) -> None:
        deadline = time.perf_counter() + limit
        while True:
            missing = sum(1 for b in bodies if b not in self.at)
            if not missing:
                return
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{missing} of {len(bodies)} messages did not reach HighLevel in {limit:.0f} s")
            await asyncio.sleep(0.05)


async def limits(env: BridgeEnv) -> dict[str, dict[str, Any]]:
    """The sandbox's own count per location: {location id: {requests, limited}}."""
    state = (await env.http.get(f"{env.url}/_sandbox/state")).json()
    out: dict[str, dict[str, Any]] = {}
    for key, value in state["rate_limits"].items():
        client, _, resource = key.rpartition(":")
        if client == env.sandbox.client_id:
            out[resource] = value
    return out


def per_window(times: list[float], window: float) -> list[int]:
    """Requests in each full window [t0 + k·window, t0 + (k+1)·window) of the drain, t0 its first."""
    t0, last = min(times), max(times)
    full = int((last - t0) // window)
    counts = [0] * full
    for t in times:
        k = int((t - t0) // window)
        if k < full:
            counts[k] += 1
    return counts


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from ghl_desktop.adapters.ghl.rate import RateLimitConfig
    from ghl_desktop.runtime import RuntimeOptions

    window = args.window
    faults = {"rate_limit_per_10s": LIMIT, "rate_limit_window_seconds": window, "rate_limit_daily": 10**9,
              "status_race_seconds": 0.2}
    # the app's defaults; the client is told the documented limit (on the shortened scale, when asked)
    options = RuntimeOptions(webhook_port=0, oauth={"port": 0},
                             rate_limits=RateLimitConfig(window_seconds=window, max_per_window=LIMIT))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GHL_DESKTOP_HOME"] = str(Path(tmp) / "home")
        async with sandbox_process(locations=LOCATIONS, faults=faults) as sb, \
                bridge_env(sb, options, locations=LOCATIONS) as env:
            return await measure(env, args)


async def measure(env: BridgeEnv, args: argparse.Namespace) -> dict[str, Any]:
    window = args.window
    locations = list(env.numbers)
    customers = {loc: [f"+49151{i:02d}{k:05d}" for k in range(CUSTOMERS)] for i, loc in enumerate(locations)}
    posts = Posts(env.app.bus)
    try:
        # contacts first (the steady state), then an empty window
        warm = []
        for loc in locations:
            for k, phone in enumerate(customers[loc]):
                await env.customer(phone, f"Customer {k}")
                body = f"warm-up {phone}"
                await env.send(phone, body, env.numbers[loc])
                warm.append(body)
        await posts.wait(warm, 300)
        await asyncio.sleep(window + 0.5)

        # drain: a backlog of args.backlog messages per location
        scheduler = env.runtime.client.scheduler
        held_before = {loc: scheduler.limiter(f"location:{loc}").delayed_requests for loc in locations}
        pauses_before = {loc: scheduler.limiter(f"location:{loc}").header_pauses for loc in locations}
        before = await limits(env)
        bodies = {loc: [f"drain {loc} {i}" for i in range(args.backlog)] for loc in locations}
        backlog_plan = [{"phone": phone, "to": env.numbers[loc],
                         "texts": [f"drain {loc} {i}" for i in range(k, args.backlog, CUSTOMERS)]}
                        for loc in locations for k, phone in enumerate(customers[loc])]

        closed = {loc: 0 for loc in locations}
        samples = 0
        runner = env.runtime.runner
        slots = runner._options.concurrency
        # the job runner's slots: jobs running, and how many of them wait for a closed location window
        # (LocationLimiter.waiting); "starved": every slot held (running jobs) while a location had budget
        # but no job running, i.e. the other locations' waiting jobs kept its jobs from starting
        occupancy = {"running": 0, "waiting": 0, "all_slots_waiting": 0, "starved": 0}

        async def watch_limiters() -> None:
            # how often the client's own scheduler had the location's window closed (full, or paused on
            # X-RateLimit-Remaining: 0 / a 429): read-only, from its LocationLimiter
            nonlocal samples
            while True:
                await asyncio.sleep(0.05)
                samples += 1
                waiting = 0
                open_locations = 0
                for loc in locations:
                    limiter = scheduler.limiter(f"location:{loc}")
                    waiting += limiter.waiting
                    if limiter._wait_seconds(limiter._clock()) > 0:
                        closed[loc] += 1
                    elif limiter._in_flight == 0:
                        open_locations += 1
                running = runner.active_jobs if hasattr(runner, "active_jobs") else len(runner._running)
                occupancy["running"] += len(runner._running)
                occupancy["waiting"] += waiting
                occupancy["all_slots_waiting"] += int(waiting >= slots)
                occupancy["starved"] += int(running >= slots and open_locations > 0)

        # the backlog: every message stored in the local queue while the job runner is paused (as after
        # an outage), then the runner resumes and the drain is timed from there
        runner.pause()
        sends_start = time.perf_counter()
        await run_customers(env.url, backlog_plan)  # the customers' own process, as fast as they go
        everything = [b for loc in locations for b in bodies[loc]]
        deadline = time.perf_counter() + 300
        while any(b not in posts.stored for b in everything):
            if time.perf_counter() > deadline:
                raise TimeoutError("the backlog was not stored within 300 s")
            await asyncio.sleep(0.05)
        sent_s = time.perf_counter() - sends_start
        if any(b in posts.at for b in everything):
            raise RuntimeError("messages reached HighLevel while the runner was paused")
        watcher = asyncio.ensure_future(watch_limiters())
        start = time.perf_counter()
        runner.resume()
        try:
            await posts.wait(everything, args.backlog * window / LIMIT * 3 + 120)
        finally:
            watcher.cancel()
        drain_s = max(posts.at[b] for b in everything) - start
        closed_share = {loc: closed[loc] / max(1, samples) for loc in locations}
        after = await limits(env)
        held = {loc: scheduler.limiter(f"location:{loc}").delayed_requests - held_before[loc] for loc in locations}
        header_pauses = {loc: scheduler.limiter(f"location:{loc}").header_pauses - pauses_before[loc]
                         for loc in locations}

        use: dict[str, float] = {}
        windows: dict[str, list[int]] = {}
        requests: dict[str, int] = {}
        for loc in locations:
            times = [posts.at[b] for b in bodies[loc]]
            windows[loc] = per_window(times, window)
            use[loc] = statistics.mean(windows[loc]) / LIMIT if windows[loc] else float("nan")
            requests[loc] = after[loc]["requests"] - before.get(loc, {}).get("requests", 0)
        limited_drain = sum(after[loc]["limited"] - before.get(loc, {}).get("limited", 0) for loc in locations)

        # latency at half the budget
        await asyncio.sleep(window + 0.5)
        gap = 2 * window / LIMIT  # per location: LIMIT / 2 messages per window
        count = max(1, int(args.latency_seconds / gap))
        # paced sends from the customers' own process (their HTTP is not work on the bridge's loop):
        # location message i at start + i·gap, round robin over its customers
        plan = [{"phone": phone, "to": env.numbers[loc], "gap": gap * CUSTOMERS, "offset": k * gap,
                 "texts": [f"latency {loc} {i}" for i in range(k, count, CUSTOMERS)]}
                for loc in locations for k, phone in enumerate(customers[loc])]
        sent_at = await run_customers(env.url, plan)
        await posts.wait(list(sent_at), 120)
        latencies = [(posts.at[b] - t) * 1000 for b, t in sent_at.items()]
        final = await limits(env)
        limited = sum(final[loc]["limited"] for loc in locations)
        client_429 = env.runtime.client.scheduler.rate_limited_responses
    finally:
        posts.close()
    low = min(locations, key=lambda loc: use[loc])
    drain_rate = args.backlog * len(locations) / drain_s
    needed = len(locations) * LIMIT / window
    if use[low] >= 0.95:
        bounded_by = "HighLevel's limit (the scheduler used the budget)"
    elif closed_share[low] < 0.5:
        bounded_by = (f"the bridge's own rate on this machine ({drain_rate:.1f} msg/s for all locations, "
                      f"{needed:.0f}/s needed): the scheduler's window was closed only "
                      f"{closed_share[low]:.0%} of the drain")
    else:
        bounded_by = (f"the scheduler: its window was closed {closed_share[low]:.0%} of the drain, yet only "
                      f"{use[low]:.2f} of the budget was used (the bridge moved {drain_rate:.1f} msg/s)")
    return {
        "window_s": window, "scale": round(REAL_WINDOW / window, 3), "limit_per_window": LIMIT,
        "locations": len(locations), "backlog_per_location": args.backlog, "customers_per_location": CUSTOMERS,
        "budget_use": round(use[low], 3),
        "budget_use_by_location": [round(use[loc], 3) for loc in locations],
        "requests_per_window_lowest": windows[low],
        "requests_per_window_by_location": [windows[loc] for loc in locations],
        "requests_per_message": round(sum(requests.values()) / (args.backlog * len(locations)), 3),
        "rate_limited_429": limited, "rate_limited_429_drain": limited_drain, "client_saw_429": client_429,
        "held_back_by_scheduler": [held[loc] for loc in locations],
        "remaining_zero_pauses": [header_pauses[loc] for loc in locations],
        "scheduler_closed_share": [round(closed_share[loc], 3) for loc in locations],
        "bridge_drain_msg_per_s": round(drain_rate, 1),
        "runner_slots": slots,
        "slots_running_mean": round(occupancy["running"] / max(1, samples), 2),
        "slots_waiting_for_window_mean": round(occupancy["waiting"] / max(1, samples), 2),
        "all_slots_waiting_share": round(occupancy["all_slots_waiting"] / max(1, samples), 3),
        "starved_share": round(occupancy["starved"] / max(1, samples), 3),
        "bounded_by": bounded_by,
        "drain_s": round(drain_s, 1), "sends_s": round(sent_s, 1),
        "drain_msg_per_min_per_location": round(args.backlog / drain_s * 60, 0),
        "latency_messages": len(latencies), "latency_rate_per_location_per_s": round(1 / gap, 2),
        "latency_p50_ms": round(percentile(latencies, 0.5), 1),
        "latency_p99_ms": round(percentile(latencies, 0.99), 1),
        "latency_max_ms": round(max(latencies), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=None, help="messages per location (default 1000; --quick 200)")
    parser.add_argument("--window", type=float, default=REAL_WINDOW,
                        help="the limit's window in seconds (HighLevel: 10); shorter = the same limit, faster; "
                             "longer = a slower rate (room for the bridge on a slow machine)")
    parser.add_argument("--latency-seconds", type=float, default=None, help="default 30 (--quick 15)")
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    args.backlog = args.backlog or (200 if args.quick else 1000)
    args.latency_seconds = args.latency_seconds or (15.0 if args.quick else 30.0)
    logging.disable(logging.INFO)
    load = os.getloadavg()
    r = asyncio.run(run(args))
    scale = f"{LIMIT} / {r['window_s']:g} s" + ("" if r["window_s"] == REAL_WINDOW else
                                               f" (HighLevel's 100 / 10 s at {r['scale']:g}x its rate)")
    table([
        ("limit (sandbox, per location)", scale),
        ("backlog", f"{r['backlog_per_location']:,} messages on each of {r['locations']} locations"),
        ("backlog stored in", f"{r['sends_s']} s (runner paused)"),
        ("drain", f"{r['drain_s']} s ({r['drain_msg_per_min_per_location']:.0f} messages a minute per location)"),
        ("requests per window (lowest)", r["requests_per_window_lowest"]),
        ("requests per message", r["requests_per_message"]),
        ("budget_use", f"{r['budget_use']}  by location {r['budget_use_by_location']}  (goal >= 0.95)"),
        ("requests the scheduler held back", r["held_back_by_scheduler"]),
        ("whole-interval pauses on Remaining: 0", r["remaining_zero_pauses"]),
        ("share of the drain its window was closed", r["scheduler_closed_share"]),
        ("runner slots: running / waiting for a window (mean)",
         f"{r['slots_running_mean']} / {r['slots_waiting_for_window_mean']} of {r['runner_slots']}"),
        ("share of the drain every slot waited for a window", r["all_slots_waiting_share"]),
        ("share: slots full, a location open and idle", r["starved_share"]),
        ("bounded by", r["bounded_by"]),
        ("rate_limited_429", f"{r['rate_limited_429']}  (client saw {r['client_saw_429']}; goal 0)"),
        ("latency at half the budget", f"{r['latency_messages']} messages, "
                                       f"{r['latency_rate_per_location_per_s']}/s per location"),
        ("latency_p50_ms", r["latency_p50_ms"]),
        ("latency_p99_ms", f"{r['latency_p99_ms']}  (max {r['latency_max_ms']})"),
        ("load average at start", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"),
    ], "HighLevel's rate budget: the bridge against the sandbox's real limit (sandbox in its own process)")
    record("budget", {**r, "load_avg_1m_start": round(load[0], 2)}, quick=args.quick, enabled=not args.no_record)


if __name__ == "__main__":
    main()
