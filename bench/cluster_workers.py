"""Messages per second through a cluster of 1, 2 and 3 workers on one PostgreSQL (issue 14).

Each round: a fresh standalone sandbox (rate limits off) and a fresh database schema; one location
connected and 6 numbers linked through the operator commands (``locations connect``, ``numbers
link``); N ``headless --sandbox-url --db-url --worker`` processes until the numbers are spread and
connected; then 6 customers write ``--messages`` messages in all to the 6 numbers and the clock runs
from the first send to the last message in the sandbox's HighLevel. Baseline: the 1-worker round of
the same run (``scaling_N`` = msg/s with N workers ÷ with 1).

    python bench/cluster_workers.py [--messages 600] [--workers 1 2 3] [--db-url URL] [--quick]

On a 2-core machine the workers, the sandbox and PostgreSQL share the same two cores, so what this
shows is that adding workers costs nothing (no contention on the shared queue, no lost throughput to
leases and routing), not how a fleet of machines scales. Skipped (said so) without a PostgreSQL.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench._common import NO_LIMITS, record, table
from bench._pg import fresh_schema, postgres_url
from ghl_desktop.adapters.crypto import ENV_KEY
from ghl_desktop.sandbox.consent import approve_links
from tests.fixtures.processes import CliProcess, free_port, standalone_sandbox, until

NUMBERS = [f"+1555040000{i}" for i in range(6)]
CUSTOMERS = [f"+1555050000{i}" for i in range(6)]
TIMING = {  # a short heartbeat so a round starts quickly; the bridge's own pacing off (as bridge_throughput)
    "GHL_DESKTOP_HEARTBEAT_SECONDS": "1", "GHL_DESKTOP_TAKEOVER_SECONDS": "5",
    "GHL_DESKTOP_SEND_MIN_GAP": "0", "GHL_DESKTOP_SEND_JITTER": "0", "GHL_DESKTOP_JOB_POLL_INTERVAL": "0.2",
}


_until = functools.partial(until, within=300.0)


def one_round(server_url: str, workers: int, messages: int, tmp: Path) -> dict[str, Any]:
    oauth_port = free_port()
    db_url = fresh_schema(server_url, f"cw{workers}")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    env = {**base, **TIMING, ENV_KEY: secrets.token_hex(32), "GHL_OAUTH_REDIRECT_PORT": str(oauth_port)}
    procs: list[CliProcess] = []

    def cli(home: str, *args: str) -> CliProcess:
        return CliProcess([*args, "--sandbox-url", url, "--db-url", db_url],
                          env={**env, "GHL_DESKTOP_HOME": str(tmp / f"r{workers}-{home}")}, timeout=180)

    with standalone_sandbox("--redirect-uri", f"http://127.0.0.1:{oauth_port}/oauth/callback") as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        http.post("/_sandbox/faults", json=NO_LIMITS).raise_for_status()
        for phone in NUMBERS + CUSTOMERS:
            http.post("/_sandbox/phones", json={"phone": phone, "name": f"Phone {phone[-2:]}"}).raise_for_status()
        connect = cli("operator", "locations", "connect")
        consent = connect.expect("consent: ")
        with httpx.Client(follow_redirects=False, timeout=30) as browser:
            page = browser.get(consent)
            link = next(x for x in approve_links(page.text) if "locationId=" in x)
            browser.get(browser.get(httpx.URL(consent).join(link)).headers["location"]).raise_for_status()
        location = connect.expect("connected: ").split()[0]
        assert connect.finish() == 0, connect.stderr

        def link_number(phone: str) -> None:
            proc = cli(f"link{phone[-1]}", "numbers", "link", "--location", location)
            http.post("/_sandbox/whatsapp/scan", json={"qr": proc.expect("qr: "), "phone": phone}).raise_for_status()
            proc.expect("linked: ")
            assert proc.finish() == 0, proc.stderr

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(link_number, NUMBERS))
        try:
            for i in range(workers):
                proc = cli(f"w{i}", "headless", "--worker", f"w{i}")
                proc.expect("ready")
                procs.append(proc)

            def all_connected() -> bool:
                state = http.get("/_sandbox/whatsapp/state").json()["linked_numbers"]
                return sum(1 for n in state if n["state"] == "connected") == len(NUMBERS)

            _until(all_connected, "every number connected")
            time.sleep(3)  # the heartbeat's rebalancing settles (shares of ceil(6 / N))

            texts = [f"r{workers} m{k}" for k in range(messages)]
            started = time.monotonic()

            def send(k: int) -> None:
                i = k % len(NUMBERS)
                http.post(f"/_sandbox/phones/{CUSTOMERS[i]}/send",
                          json={"to": NUMBERS[i], "text": texts[k]}).raise_for_status()

            with ThreadPoolExecutor(6) as pool:
                list(pool.map(send, range(messages)))
            sent = time.monotonic() - started

            def arrived() -> bool:
                bodies = {m["body"] for m in http.get("/_sandbox/state").json()["messages"]
                          if m["direction"] == "inbound"}
                return bodies >= set(texts)

            _until(arrived, f"{messages} messages in HighLevel")
            elapsed = time.monotonic() - started
            state = http.get("/_sandbox/whatsapp/state").json()["linked_numbers"]
            concurrent = max(n["max_concurrent_sessions"] for n in state)
        finally:
            for proc in procs:
                proc.close()
    return {"workers": workers, "messages": messages, "seconds": round(elapsed, 2),
            "msgs_per_s": round(messages / elapsed, 1), "send_s": round(sent, 2), "max_concurrent_sessions": concurrent}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--db-url", default=None, help="a PostgreSQL server URL (default: a throwaway one)")
    parser.add_argument("--quick", action="store_true", help="120 messages")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    messages = 120 if args.quick else args.messages
    with postgres_url(args.db_url) as server:
        if server is None:
            print("cluster_workers: no PostgreSQL on this machine (server binaries or --db-url); skipped")
            return 0
        with tempfile.TemporaryDirectory(prefix="ghl-bench-cluster.") as tmp:
            rounds = [one_round(server, n, messages, Path(tmp)) for n in sorted(set(args.workers))]
    base = rounds[0]["msgs_per_s"]
    figures: dict[str, Any] = {"messages": messages, "numbers": len(NUMBERS)}
    for r in rounds:
        figures[f"msgs_per_s_{r['workers']}"] = r["msgs_per_s"]
        figures[f"scaling_{r['workers']}"] = round(r["msgs_per_s"] / base, 2) if base else None
        figures[f"max_concurrent_sessions_{r['workers']}"] = r["max_concurrent_sessions"]
    table([(f"{r['workers']} worker(s)", f"{r['msgs_per_s']} msg/s ({r['messages']} in {r['seconds']} s; "
            f"sends took {r['send_s']} s), x{figures['scaling_' + str(r['workers'])]}") for r in rounds],
          "cluster workers: inbound msg/s, 6 numbers, one PostgreSQL")
    record("cluster_workers", figures, quick=args.quick, enabled=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
