"""What every bench script shares: the JSON line it appends to bench/results/<name>.jsonl, the
``--quick`` flag, and a HighLevel sandbox (``ghl-desktop sandbox``) in its own process with a bridge
(the app's own BridgeRuntime, simulated WhatsApp network) linked to it over loopback.

Keys of the figures (issue 12): pipeline_ratio, budget_use, rate_limited_429, latency_p50_ms,
latency_p99_ms, lease_ratio, loop_lag_p99_ms, log_open_s, log_mem_delta_mb, cold_start_s, rss_mb_1,
rss_mb_10, relay_ratio.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: GHL_BENCH_RESULTS / GHL_BENCH_COMMIT: a run from an exported snapshot of a commit (``git archive``,
#: no .git) still appends to the repository's results, under that commit
RESULTS = Path(os.environ.get("GHL_BENCH_RESULTS") or ROOT / "bench" / "results")
VENV_BIN = Path(sys.executable).parent


def commit() -> str:
    if os.environ.get("GHL_BENCH_COMMIT"):
        return os.environ["GHL_BENCH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def record(name: str, figures: dict[str, Any], *, quick: bool = False, enabled: bool = True) -> dict[str, Any]:
    """Append one JSON line (commit, CPU count, load average, figures) to bench/results/<name>.jsonl."""
    line = {"bench": name, "at": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit(),
            "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "load_avg_5m": round(os.getloadavg()[1], 2), "quick": quick, **figures}
    if enabled:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with (RESULTS / f"{name}.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
    return line


def table(rows: list[tuple[str, Any]], title: str) -> None:
    print(title)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system, every thread) a process has used so far: this one (``pid`` None) or
    a child such as the sandbox (Linux ``/proc``; NaN where it cannot be read)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SandboxProcess:
    """``ghl-desktop sandbox`` running as a child process (its spec validation is not on our loop)."""

    url: str
    process: subprocess.Popen[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def client_id(self) -> str:
        return str(self.info["app"]["client_id"])

    @property
    def client_secret(self) -> str:
        return str(self.info["app"]["client_secret"])

    @property
    def provider_id(self) -> str:
        return str(self.info["app"]["provider_id"])

    @property
    def public_key_pem(self) -> str:
        return str(self.info["webhook_public_keys"][0])

    @property
    def location_ids(self) -> list[str]:
        return [loc["id"] for loc in self.info["locations"]]


@asynccontextmanager
async def sandbox_process(*, locations: int = 1, faults: dict[str, Any] | None = None,
                          state_dir: str | None = None) -> AsyncIterator[SandboxProcess]:
    """Start ``ghl-desktop sandbox`` on a free loopback port, set its faults, stop it on exit."""
    import httpx

    from ghl_desktop.adapters.ghl.oauth import app_registration
    from ghl_desktop.sandbox.oauth import any_port

    port = free_port()
    cmd = [str(VENV_BIN / "ghl-desktop"), "sandbox", "--host", "127.0.0.1", "--port", str(port),
           "--locations", str(locations), "--redirect-uri", any_port(app_registration().redirect_uri)]
    if state_dir:
        cmd += ["--state-dir", state_dir]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)  # noqa: ASYNC220
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        if not first.startswith("sandbox: "):
            raise RuntimeError(f"ghl-desktop sandbox did not start: {first!r}")
        url = first.split(" ", 1)[1].strip()
        async with httpx.AsyncClient(timeout=30) as http:
            if faults:
                (await http.post(f"{url}/_sandbox/faults", json=faults)).raise_for_status()
            info = (await http.get(f"{url}/_sandbox/state")).json()
        yield SandboxProcess(url=url, process=proc, info=info)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


#: rate limits off: a window far beyond anything a run sends
NO_LIMITS = {"rate_limit_per_10s": 10_000_000, "rate_limit_daily": 1_000_000_000, "status_race_seconds": 0.2}


@dataclass
class BridgeEnv:
    sandbox: SandboxProcess
    app: Any
    runtime: Any
    http: Any
    #: location id → the simulated agency number linked to it
    numbers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.sandbox.url

    @property
    def location_id(self) -> str:
        return str(self.app.db.locations.list()[0].id)

    async def customer(self, phone: str, name: str) -> None:
        (await self.http.post(f"{self.url}/_sandbox/phones", json={"phone": phone, "name": name})).raise_for_status()

    async def send(self, phone: str, text: str, to: str) -> str:
        answer = await self.http.post(f"{self.url}/_sandbox/phones/{phone}/send", json={"to": to, "text": text})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def fast_runtime(**rate: Any) -> Any:
    """The runtime options the end-to-end tests use (short backoffs), poll interval 50 ms."""
    from ghl_desktop.runtime import RuntimeOptions
    from ghl_desktop.services.jobs import RunnerOptions
    from ghl_desktop.services.sessions import SessionOptions

    return RuntimeOptions(
        runner=RunnerOptions(concurrency=8, lease_seconds=30, poll_interval=0.05, max_attempts=6,
                             backoff_base=0.05, backoff_cap=0.5),
        sessions=SessionOptions(send_min_gap=0.0, send_jitter=0.0, backoff_initial=0.05, backoff_max=0.5),
        webhook_port=0, oauth={"port": 0}, **rate,
    )


async def link_number(runtime: Any, sandbox_url: str, location_id: str, phone: str, *,
                      limit: float = 60) -> str:
    """Link one more simulated WhatsApp number to ``location_id`` the way a person does: a new session
    in the app, its QR code scanned by ``phone`` on the simulated network; returns the session id once
    it is connected."""
    import httpx

    from ghl_desktop.core.models import SessionState
    from ghl_desktop.services.events import SessionChanged, SessionQr

    codes: dict[str, str] = {}
    connected: set[str] = set()
    unsubscribe_qr = runtime.app.bus.subscribe(SessionQr, lambda e: codes.setdefault(e.session_id, e.code))
    unsubscribe_changed = runtime.app.bus.subscribe(
        SessionChanged, lambda e: connected.add(e.session.id) if e.session.state is SessionState.CONNECTED else None)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            (await http.post(f"{sandbox_url}/_sandbox/phones", json={"phone": phone, "name": f"Agency {phone}"})
             ).raise_for_status()
            session = await runtime.sessions.create_session(location_id)
            deadline = time.perf_counter() + limit
            while session.id not in codes:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"no QR code for the session of {phone}")
                await asyncio.sleep(0.02)
            (await http.post(f"{sandbox_url}/_sandbox/whatsapp/scan",
                             json={"qr": codes[session.id], "phone": phone})).raise_for_status()
        while session.id not in connected:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the number {phone} did not connect")
            await asyncio.sleep(0.02)
        return str(session.id)
    finally:
        unsubscribe_qr()
        unsubscribe_changed()


def linked_phone(index: int) -> str:
    """The simulated agency number linked to location ``index`` (0: the one headless mode links)."""
    from ghl_desktop.headless import SANDBOX_LINKED_PHONE

    return SANDBOX_LINKED_PHONE if index == 0 else f"+1555020{index:04d}"


@asynccontextmanager
async def bridge_env(sandbox: SandboxProcess, options: Any = None, *,
                     secrets: Any = None, locations: int = 1) -> AsyncIterator[BridgeEnv]:
    """The app's BridgeRuntime against ``sandbox``: one location connected by the consent flow and one
    simulated WhatsApp number linked by QR, as ``ghl-desktop headless --sandbox`` does; with
    ``locations`` > 1 the next locations of the sandbox are connected the same way (consent page,
    location ``i``), each with its own number ``linked_phone(i)`` (``BridgeEnv.numbers``)."""
    import httpx

    from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
    from ghl_desktop.app import App
    from ghl_desktop.config import load_settings
    from ghl_desktop.headless import ensure_linked
    from ghl_desktop.runtime import BridgeRuntime
    from ghl_desktop.sandbox.consent import ConsentClicker
    from ghl_desktop.sandbox_mode import point_sandbox_webhooks

    if secrets is None:
        sys.path.insert(0, str(ROOT))
        from tests.fakes.secrets import MemorySecretStore

        secrets = MemorySecretStore()
    settings = replace(load_settings(), api_base=sandbox.url, marketplace_base=sandbox.url,
                       client_id=sandbox.client_id, client_secret=sandbox.client_secret,
                       provider_id=sandbox.provider_id, webhook_ed25519_public_key=sandbox.public_key_pem)
    app = App(settings, secrets=secrets, console_log=False, sandbox=True)
    clicker = ConsentClicker()
    runtime = BridgeRuntime(app, simulated_transport_factory(sandbox.url), options or fast_runtime(),
                            open_url=clicker)
    http = httpx.AsyncClient(timeout=30)
    try:
        await runtime.start()
        await point_sandbox_webhooks(sandbox.url, runtime.webhooks.url)
        await ensure_linked(runtime, sandbox.url, asyncio.Event())
        env = BridgeEnv(sandbox, app, runtime, http)
        env.numbers[env.location_id] = linked_phone(0)
        for index in range(1, locations):
            clicker.index = index
            known = {loc.id for loc in app.db.locations.list()}
            await runtime.oauth.connect()
            new = [loc.id for loc in app.db.locations.list() if loc.id not in known]
            if len(new) != 1:
                raise RuntimeError(f"connecting sandbox location {index} added {len(new)} locations")
            env.numbers[str(new[0])] = linked_phone(index)
            await link_number(runtime, sandbox.url, str(new[0]), linked_phone(index))
        yield env
    finally:
        await http.aclose()
        await runtime.stop()
        await app.aclose()


class SentCounter:
    """Counts messages the bridge has posted to HighLevel (MessageLogged with a HighLevel id)."""

    def __init__(self, bus: Any, texts: Callable[[str], bool]) -> None:
        from ghl_desktop.services.bridge import MessageLogged

        self.done: dict[str, float] = {}
        self._texts = texts
        self._unsubscribe = bus.subscribe(MessageLogged, self._on)

    def _on(self, event: Any) -> None:
        m = event.message
        if m.ghl_message_id and m.body and self._texts(m.body) and m.wa_message_id not in self.done:
            self.done[m.wa_message_id] = time.perf_counter()

    def close(self) -> None:
        self._unsubscribe()

    async def wait(self, n: int, limit: float) -> None:
        deadline = time.perf_counter() + limit
        while len(self.done) < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {len(self.done)} of {n} messages reached HighLevel in {limit:.0f} s")
            await asyncio.sleep(0.005)


async def customers(sandbox_url: str, plan: list[dict[str, Any]]) -> dict[str, float]:
    """Run bench/_customers.py (the customers in their own process) with ``plan``; returns when each
    text was sent (time.perf_counter: CLOCK_MONOTONIC, comparable across processes on Linux)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"
        path.write_text(json.dumps(plan), "utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._customers", sandbox_url, str(path), cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the customers' process failed ({proc.returncode}): {err.decode()[-2000:]}")
    sent = {str(k): float(v) for k, v in json.loads(out.decode().strip().splitlines()[-1]).items()}
    CUSTOMERS_CPU.append(sent.pop(CPU_KEY, float("nan")))
    return sent


#: the key of the customers' own CPU seconds in bench/_customers.py's JSON line, and every run's figure
CPU_KEY = "_cpu_seconds"
CUSTOMERS_CPU: list[float] = []
