"""`make faults`: the bridge under each fault of issue 11, one table at the end.

    .venv/bin/python -m faults.run [--quick] [--only CASE ...]

Every case drives real parts — the sandbox (HighLevel) and the simulated WhatsApp network over
loopback HTTP, real SQLite, the headless bridge as a child process, ``ghl-relay serve`` as a child
process — reusing the end-to-end drivers in tests/e2e and tests/relay. Each row counts what went in
(WhatsApp messages + agent replies), what arrived (in HighLevel by altId / on the customer's phone /
in the desktop's queue), what is missing (lost) and what arrived more than once (duplicated), and
the error a person would see (dead letters with their reason, the 429 body, /healthz). Exit status
1 when any row lost or duplicated something or a case could not run to the end.

``--quick`` (CI, ``make faults QUICK=1``) shrinks the sizes: a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class Row:
    case: str
    messages_in: int
    delivered: int
    lost: int
    duplicated: int
    error: str

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0


def count(sent: list[str], arrived: list[str]) -> tuple[int, int, int]:
    """(delivered, lost, duplicated): ``sent`` are unique keys, ``arrived`` every copy that landed."""
    seen = Counter(a for a in arrived if a in set(sent))
    delivered = sum(1 for s in sent if seen[s])
    return delivered, len(sent) - delivered, sum(n - 1 for n in seen.values() if n > 1)


def dead_letters(jobs: Any) -> str:
    dead = jobs.list("dead", 5)
    if not dead:
        return "none"
    reasons = Counter((j.last_error or "?")[:60] for j in dead)
    return f"{jobs.count('dead')} dead-lettered: " + "; ".join(f"{r} ×{n}" for r, n in reasons.items())


# --- in-process cases (tests/e2e/harness.bridge_env) -------------------------------------------------

async def _traffic(env: Any, phones: list[str], inbound: int, replies: int, *, mid: Callable[[], Awaitable[None]]
                   | None = None, limit: float = 240.0) -> tuple[list[str], list[str], dict[str, Any]]:
    """Customers write ``inbound`` messages, agents answer ``replies`` times; ``mid`` runs half way.
    Waits (liveness bound) until everything arrived, or the bound passed. Returns (alt ids sent,
    reply texts sent, final sandbox state + inboxes)."""
    from tests.e2e.harness import eventually
    from tests.e2e.test_faults import contact_ids

    for i, phone in enumerate(phones):
        await env.customer(phone, f"Customer {i}")
    alts = [await env.send(phones[i % len(phones)], text=f"fault message {i}") for i in range(inbound // 2)]
    if mid is not None:
        await mid()
    alts += [await env.send(phones[i % len(phones)], text=f"fault message {i}") for i in range(inbound // 2, inbound)]
    contacts = await contact_ids(env, phones)
    texts = [f"agent answer {k}" for k in range(replies)]
    for k, text in enumerate(texts):
        await env.reply(contacts[phones[k % len(phones)]], text)

    async def arrived() -> bool:
        got = {m.get("altId") for m in await env.messages()}
        if not set(alts) <= got:
            return False
        on_phones = {m["text"] for p in phones for m in await env.inbox(p)}
        return set(texts) <= on_phones

    with contextlib.suppress(AssertionError):
        await eventually(arrived, limit, interval=0.5)
    await asyncio.sleep(1.0)  # anything late and twice would land now
    state = await env.state()
    state["inbox_texts"] = [m["text"] for p in phones for m in await env.inbox(p)]
    return alts, texts, state


def _row(case: str, alts: list[str], texts: list[str], state: dict[str, Any], error: str) -> Row:
    d1, l1, u1 = count(alts, [m["altId"] for m in state["messages"] if m.get("altId")])
    d2, l2, u2 = count(texts, state["inbox_texts"])
    return Row(case, len(alts) + len(texts), d1 + d2, l1 + l2, u1 + u2, error)


PHONES = ["+4915130000001", "+4915130000002", "+4915130000003", "+4915130000004"]


async def case_5xx(quick: bool) -> Row:
    from tests.e2e.harness import FAST_RUNTIME, bridge_env
    from tests.e2e.test_faults import QUICK_CLIENT, TIGHT_LIMIT

    inbound, replies = (40, 8) if quick else (200, 40)
    options = replace(FAST_RUNTIME, rate_limits=QUICK_CLIENT)
    async with bridge_env(options, seed=20261203, **TIGHT_LIMIT) as env:
        env.sandbox.set_faults(error_rate=0.2)
        stop = asyncio.Event()

        async def spikes() -> None:  # 2 s latency on every answer for a second, every 3 s
            while not stop.is_set():
                env.sandbox.set_faults(latency_ms=2000)
                await asyncio.sleep(1.0)
                env.sandbox.set_faults(latency_ms=0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)

        task = asyncio.create_task(spikes())
        try:
            alts, texts, state = await _traffic(env, PHONES, inbound, replies)
        finally:
            stop.set()
            await task
            env.sandbox.set_faults(error_rate=0.0, latency_ms=0)
        injected = state["stats"].get("injected_errors", 0)
        return _row("HighLevel 20 % 5xx + 2 s latency spikes", alts, texts, state,
                    f"{dead_letters(env.app.db.jobs)} ({injected} 5xx injected)")


async def case_429(quick: bool) -> Row:
    from tests.e2e.harness import FAST_RUNTIME, bridge_env
    from tests.e2e.test_faults import QUICK_CLIENT

    inbound, replies = (40, 8) if quick else (200, 40)
    options = replace(FAST_RUNTIME, rate_limits=QUICK_CLIENT)
    async with bridge_env(options, rate_limit_per_10s=20, rate_limit_window_seconds=1.0) as env:
        sandbox = env.sandbox.sandbox
        stop = asyncio.Event()

        async def storm() -> None:
            """Another client of the same app eats the whole quota: 3 s storm, 1 s calm, repeated."""
            while not stop.is_set():
                until = time.monotonic() + 3.0
                while time.monotonic() < until and not stop.is_set():
                    faults = sandbox.state.faults
                    for key in sandbox.limiter.summary():
                        for _ in range(faults.rate_limit_per_10s):
                            allowed, _headers = sandbox.limiter.hit(key, sandbox.state.now(), faults)
                            if not allowed:
                                break
                    await asyncio.sleep(0.02)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

        task = asyncio.create_task(storm())
        try:
            alts, texts, state = await _traffic(env, PHONES, inbound, replies)
        finally:
            stop.set()
            await task
        limited = state["stats"].get("rate_limited", 0)
        return _row("429 storm (quota eaten by another client)", alts, texts, state,
                    f"{dead_letters(env.app.db.jobs)} ({limited} × 429 answered)")


async def case_token(quick: bool) -> Row:
    from tests.e2e.harness import FAST_RUNTIME, bridge_env
    from tests.e2e.test_faults import QUICK_CLIENT, TIGHT_LIMIT, control

    inbound, replies = (40, 8) if quick else (200, 40)
    async with bridge_env(replace(FAST_RUNTIME, rate_limits=QUICK_CLIENT), **TIGHT_LIMIT) as env:
        before = len(env.sandbox.state.tokens)
        expired: dict[str, Any] = {}

        async def expire() -> None:
            expired.update(await control(env, "tokens/expire", {"locationId": env.location_id}))

        alts, texts, state = await _traffic(env, PHONES, inbound, replies, mid=expire)
        refreshed = len(env.sandbox.state.tokens) - before
        return _row("token expiry mid-stream", alts, texts, state,
                    f"{dead_letters(env.app.db.jobs)} ({expired.get('expired', 0)} token(s) expired, "
                    f"{refreshed} refreshed)")


# --- the database's disk full --------------------------------------------------------------------

@contextlib.contextmanager
def _full_disk(base: Path) -> Iterator[tuple[Path, Callable[[], None], Callable[[], None], str]]:
    """(dir, fill, free, how): a real tmpfs when mount is permitted, else a plain dir (simulated)."""
    mount = base / "disk"
    mount.mkdir()
    # FAULTS_SIMULATE_ENOSPC=1: the fallback even where mount works (to check it)
    mounted = os.geteuid() == 0 and not os.environ.get("FAULTS_SIMULATE_ENOSPC") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
        capture_output=True, check=False).returncode == 0
    filler = mount / "filler"

    def fill() -> None:
        # ENOSPC may come at open() already: the database's own growth can fill the 8 MB first
        with contextlib.suppress(OSError), open(filler, "ab") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()

    def free() -> None:
        filler.unlink(missing_ok=True)

    try:
        yield mount, fill, free, "tmpfs" if mounted else "simulated ENOSPC"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


async def case_disk_full(quick: bool) -> Row:
    import httpx
    from sqlalchemy import event

    from ghl_desktop.core.storage_health import StorageProblem
    from tests.e2e.harness import bridge_env, eventually
    from tests.e2e.test_faults import contact_ids

    inbound, replies = (10, 4) if quick else (40, 10)
    with tempfile.TemporaryDirectory() as tmp, _full_disk(Path(tmp)) as (disk, fill, free, how):
        old = os.environ.get("GHL_DESKTOP_DB_URL")
        os.environ["GHL_DESKTOP_DB_URL"] = f"sqlite:///{disk / 'ghl-desktop.db'}"
        try:
            # HighLevel retries a 429 six times (~10 min apart): here 1 s apart, longer than the outage
            async with bridge_env(webhook_retry_seconds=1.0) as env:
                simulated = {"full": False}
                if how != "tmpfs":
                    import sqlite3

                    def refuse(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
                        writes = ("INSERT", "UPDATE", "DELETE", "REPLACE")  # what a full disk refuses
                        if simulated["full"] and statement.lstrip().upper().startswith(writes):
                            raise sqlite3.OperationalError("database or disk is full")

                    event.listen(env.app.db.engine, "before_cursor_execute", refuse)

                    def fill_now() -> None:
                        simulated["full"] = True

                    def free_now() -> None:
                        simulated["full"] = False
                else:
                    fill_now, free_now = fill, free
                problems: list[StorageProblem] = []
                env.app.bus.subscribe(StorageProblem, problems.append)
                for i, phone in enumerate(PHONES):
                    await env.customer(phone, f"Customer {i}")
                warm = [await env.send(phone, text="before the disk filled") for phone in PHONES]
                contacts = await contact_ids(env, PHONES)
                await eventually(lambda: _alts_in(env, warm), 60)
                fill_now()
                alts = warm + [await env.send(PHONES[i % 4], text=f"while full {i}") for i in range(inbound)]
                texts = [f"reply while full {k}" for k in range(replies)]
                for k, text in enumerate(texts):
                    await env.reply(contacts[PHONES[k % 4]], text)
                await eventually(lambda: any(p.disk_full for p in problems), 60)
                async with httpx.AsyncClient() as http:
                    health = (await http.get(env.runtime.webhooks.url + "/healthz")).json()
                error = str(health.get("storage") or (problems[-1].text if problems else "none"))
                await asyncio.sleep(2.0)  # HighLevel retries its webhooks meanwhile (429 "disk full")
                free_now()

                async def arrived() -> bool:
                    got = {m.get("altId") for m in await env.messages()}
                    on_phones = {m["text"] for p in PHONES for m in await env.inbox(p)}
                    return set(alts) <= got and set(texts) <= on_phones

                with contextlib.suppress(AssertionError):
                    await eventually(arrived, 120, interval=0.5)
                await asyncio.sleep(1.0)
                state = await env.state()
                state["inbox_texts"] = [m["text"] for p in PHONES for m in await env.inbox(p)]
                deliveries = env.sandbox.state.deliveries
                retried = sum(max(0, d.attempts - 1) for d in deliveries)
                gave_up = sum(1 for d in deliveries if d.status == "lost")
                return _row(f"database disk full ({how}), then freed", alts, texts, state,
                            f"429 + /healthz '{error.split(':')[0]}' ({retried} webhook retries, {gave_up} given up)")
        finally:
            if old is None:
                os.environ.pop("GHL_DESKTOP_DB_URL", None)
            else:
                os.environ["GHL_DESKTOP_DB_URL"] = old


async def _alts_in(env: Any, alts: list[str]) -> bool:
    return set(alts) <= {m.get("altId") for m in await env.messages()}


# --- the relay restarted with 50 pending events (tests/relay/test_e2e.py's process) ---------------

async def case_relay(quick: bool) -> Row:
    from ghl_desktop.adapters.storage import open_database
    from ghl_desktop.core.events import EventBus
    from ghl_desktop.relay.client import RelayClient, RelayLinkState
    from ghl_desktop.sandbox.server import running_sandbox
    from ghl_desktop.webhooks.endpoint import PROVIDER_PATH
    from ghl_desktop.webhooks.gate import KIND_OUTBOUND_MESSAGE
    from ghl_desktop.webhooks.intake import WebhookIntake
    from tests.relay.helpers import wait_for
    from tests.relay.test_e2e import CrashRelayAfter, RelayProcess

    pending = 50
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db = open_database(f"sqlite:///{tmp / 'desktop' / 'ghl-desktop.db'}", migrate=True)
        env = {**os.environ, "GHL_RELAY_LOG_FILE": str(tmp / "relay.log")}
        relay = RelayProcess(f"sqlite:///{tmp / 'relay' / 'relay.db'}", env)
        token = relay.run("token", "create", "--name", "faults")[-1]
        sent: list[str] = []
        try:
            async with running_sandbox(webhook_url=f"http://127.0.0.1:{relay.port}{PROVIDER_PATH}",
                                       locations=1) as sb:
                env["GHL_WEBHOOK_ED25519_PUBLIC_KEY"] = sb.public_key_pem
                base = relay.start()
                location = sb.location_ids[0]
                contacts = [sb.sandbox.create_contact(location, f"+1555010{i:04d}") for i in range(3)]
                for n in range(pending):  # no desktop connected: they wait in the relay
                    result = await sb.reply(location, contacts[n % 3].id, f"reply {n}")
                    sent.append(result["messageId"])
                relay.kill()  # SIGKILL with 50 pending, then back on the same database
                relay.start()
                crashing = CrashRelayAfter(db.aio.jobs, relay, after=pending // 2)  # and again mid-stream
                bus = EventBus()
                desktop = RelayClient(base, token, WebhookIntake(crashing, bus=bus), backoff_initial=0.05,
                                      backoff_max=0.3)
                desktop.start()
                await wait_for(lambda: crashing.crashed, "the crash point")
                relay.start()

                def ids() -> list[str]:
                    return [j.payload["event"]["messageId"] for j in db.jobs.list(limit=10_000)
                            if j.kind == KIND_OUTBOUND_MESSAGE]

                with contextlib.suppress(AssertionError):
                    await wait_for(lambda: set(sent) <= set(ids()), "all stored")
                await asyncio.sleep(1.0)
                state = desktop.state
                await desktop.stop()
                got = ids()
        finally:
            relay.stop()
            db.close()
    delivered, lost, dup = count(sent, got)
    shown = "none" if state is RelayLinkState.CONNECTED else f"relay link {state.value}"
    return Row("relay SIGKILLed with 50 pending, and mid-stream", len(sent), delivered, lost, dup, shown)


# --- SIGKILL of headless ×5 (tests/e2e/test_crash.py's driver) ------------------------------------

def case_sigkill(quick: bool) -> Row:
    inbound, outbound = (200, 40) if quick else (1000, 200)
    os.environ["GHL_CRASH_INBOUND"], os.environ["GHL_CRASH_OUTBOUND"] = str(inbound), str(outbound)
    from ghl_desktop.adapters.storage import open_database
    from tests.e2e import test_crash as crash
    from tests.e2e.crash_driver import Cluster, Driver, killer

    crash.INBOUND, crash.OUTBOUND = inbound, outbound
    rng = random.Random(crash.SEED)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "data"
        home.mkdir()
        cluster = Cluster(home, tmp, dict(crash.CHILD_ENV))
        driver = Driver(cluster, rng)
        ops = crash.plan(rng)
        thresholds = sorted(rng.sample(range(len(ops) // 10, len(ops)), crash.KILLS - 1))
        errors: list[BaseException] = []
        try:
            cluster.start()
            driver.setup(crash.PHONES, crash.FAULTS)
            thread = threading.Thread(target=killer, args=(cluster, driver, thresholds, rng.uniform(0.5, 3.0),
                                                           random.Random(crash.SEED + 1), errors, len(ops)),
                                      daemon=True)
            thread.start()
            for kind, phone, value in ops:
                if kind == "in":
                    driver.inbound(phone, value, f"message {value[-10:]} from {phone}")
                else:
                    driver.reply(phone, value)
            thread.join(300)
            alts = [v for k, _, v in ops if k == "in"]
            replies = {v: p for k, p, v in ops if k == "out"}
            try:
                state = crash.converge(driver, set(alts), replies, limit=240.0)
            except AssertionError:
                state = driver.state()
                state["inboxes"] = {p: driver.get_json(f"/_sandbox/phones/{p}/inbox") for p in crash.PHONES}
            kills = len(cluster.kills)
            cluster.current.terminate()
            db = open_database(f"sqlite:///{home / 'ghl-desktop.db'}", migrate=False)
            try:
                shown = dead_letters(db.jobs)
            finally:
                db.close()
        finally:
            cluster.stop_all()
            driver.close()
    d1, l1, u1 = count(alts, [m["altId"] for m in state["messages"] if m.get("altId")])
    d2, l2, u2 = count(list(replies), [m["text"] for inbox in state["inboxes"].values() for m in inbox])
    note = f"{shown} ({kills} SIGKILLs{', killer: ' + repr(errors[0]) if errors else ''})"
    return Row(f"SIGKILL headless ×{kills} ({inbound} in + {outbound} out)", inbound + outbound,
               d1 + d2, l1 + l2, u1 + u2, note)


CASES: dict[str, Callable[[bool], Any]] = {
    "sigkill": case_sigkill,
    "5xx": case_5xx,
    "429": case_429,
    "token": case_token,
    "relay": case_relay,
    "disk": case_disk_full,
}


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """What tests/conftest.py does for every test: a fresh data dir, no credentials from outside."""
    names = ("GHL_DESKTOP_HOME", "GHL_CLIENT_ID", "GHL_CLIENT_SECRET", "GHL_PROVIDER_ID", "GHL_API_BASE",
             "GHL_DESKTOP_DB_URL", "GHL_DESKTOP_VAULT_PASSPHRASE", "GHL_RELAY_URL")
    saved = {n: os.environ.pop(n, None) for n in names}
    with tempfile.TemporaryDirectory(prefix="faults-home-") as home:
        os.environ["GHL_DESKTOP_HOME"] = home
        try:
            yield
        finally:
            for n, v in saved.items():
                os.environ.pop(n, None)
                if v is not None:
                    os.environ[n] = v


def table(rows: list[Row]) -> str:
    head = ("case", "messages in", "delivered", "lost", "duplicated", "user-visible error")
    cells = [head] + [(r.case, str(r.messages_in), str(r.delivered), str(r.lost), str(r.duplicated), r.error)
                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line]
    for n, c in enumerate(cells):
        out.append("| " + " | ".join(v.ljust(w) if i in (0, 5) else v.rjust(w)
                                     for i, (v, w) in enumerate(zip(c, widths, strict=True))) + " |")
        if n == 0:
            out.append(line.replace("-", "="))
    out.append(line)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size")
    parser.add_argument("--only", nargs="*", choices=list(CASES), help="run only these cases")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import logging

    logging.basicConfig(level=getattr(logging, os.environ.get("FAULTS_LOG", "ERROR")))
    rows: list[Row] = []
    started = time.monotonic()
    for name in args.only or list(CASES):
        t0 = time.monotonic()
        print(f"faults: {name} …", file=sys.stderr, flush=True)
        try:
            with isolated():
                result = CASES[name](args.quick)
                row = asyncio.run(result) if asyncio.iscoroutine(result) else result
        except Exception as exc:
            traceback.print_exc()
            row = Row(name, 0, 0, -1, -1, f"case failed: {type(exc).__name__}: {exc}"[:100])
        rows.append(row)
        print(f"faults: {name} done in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    print(table(rows))
    print(f"{len(rows)} cases in {time.monotonic() - started:.0f} s{' (quick)' if args.quick else ''}; "
          + ("every row: 0 lost, 0 duplicated" if all(r.ok for r in rows) else "FAILED: a row lost or duplicated"))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
