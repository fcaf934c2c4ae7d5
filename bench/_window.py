"""The real main window (``MainWindow`` with the app's ``BridgeRuntime``, its message log open) against
a sandbox in its OWN process, for the benches that need the window: loop_lag.py and startup.py.

``run_window`` (what ``ghl-desktop`` runs) starts the sandbox in-process in sandbox mode, on the
window's own loop; here the window, the App and the runtime are built the same way (as
``ui/main.py``'s ``run_window`` and ``build_runtime`` do for sandbox mode) but the HighLevel sandbox
and the simulated WhatsApp network run in ``ghl-desktop sandbox``, so their work is not counted
against the window's loop or memory. The location is connected through the consent page and every
number linked by a QR scan, as a person does.

As a child process (startup.py): ``python -m bench._window --numbers 1 10 [--neonize]`` prints one
JSON line per step with the process's RSS (``/proc/self/status``) after that many numbers are linked
and have carried messages (and, with --neonize, after the neonize engine is loaded too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench._common import NO_LIMITS, SandboxProcess, customers, link_number, sandbox_process  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def number_phone(i: int) -> str:
    return f"+1555030{i:04d}"


@dataclass
class WindowEnv:
    sandbox: SandboxProcess
    window: Any
    http: Any
    location_id: str = ""
    numbers: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.sandbox.url

    async def link(self, total: int) -> None:
        """Link numbers until ``total`` are connected to the location."""
        while len(self.numbers) < total:
            phone = number_phone(len(self.numbers))
            await link_number(self.window.runtime, self.url, self.location_id, phone)
            self.numbers.append(phone)

    async def customer(self, phone: str, name: str) -> None:
        (await self.http.post(f"{self.url}/_sandbox/phones", json={"phone": phone, "name": name})).raise_for_status()

    async def send(self, phone: str, text: str, to: str) -> None:
        answer = await self.http.post(f"{self.url}/_sandbox/phones/{phone}/send", json={"to": to, "text": text})
        assert answer.status_code == 201, answer.text


def runtime_options() -> Any:
    """The app's defaults (as the window runs in sandbox mode), rate limits off on both sides."""
    from ghl_desktop.adapters.ghl.rate import RateLimitConfig
    from ghl_desktop.runtime import RuntimeOptions

    return RuntimeOptions(webhook_port=0, oauth={"port": 0},
                          rate_limits=RateLimitConfig(max_per_window=10_000_000, adapt_to_headers=False))


@asynccontextmanager
async def window_env(sandbox: SandboxProcess, options: Any = None) -> AsyncIterator[WindowEnv]:
    """The window shown, its bridge started, one location connected; the message log tab in front."""
    import httpx

    from ghl_desktop.adapters.whatsapp.simulated import simulated_transport_factory
    from ghl_desktop.app import App
    from ghl_desktop.config import load_settings
    from ghl_desktop.runtime import BridgeRuntime
    from ghl_desktop.sandbox.consent import ConsentClicker
    from ghl_desktop.sandbox_mode import point_sandbox_webhooks
    from ghl_desktop.ui.main_window import MainWindow

    sys.path.insert(0, str(ROOT))
    from tests.fakes.secrets import MemorySecretStore

    settings = replace(load_settings(), api_base=sandbox.url, marketplace_base=sandbox.url,
                       client_id=sandbox.client_id, client_secret=sandbox.client_secret,
                       provider_id=sandbox.provider_id, webhook_ed25519_public_key=sandbox.public_key_pem)
    app = App(settings, secrets=MemorySecretStore(), console_log=False, sandbox=True)
    clicker = ConsentClicker()
    runtime = BridgeRuntime(app, simulated_transport_factory(sandbox.url), options or runtime_options(),
                            open_url=clicker)
    window = MainWindow(app, runtime, tray=None, sandbox_url=sandbox.url, open_url=clicker)
    window.confirm = lambda *_: True  # type: ignore[method-assign]
    http = httpx.AsyncClient(timeout=30)
    try:
        async def start() -> None:
            await runtime.start()
            await point_sandbox_webhooks(sandbox.url, runtime.webhooks.url)

        window.show()
        window.start_bridge(start())
        deadline = time.perf_counter() + 60
        while not window.bridge_ready:
            if time.perf_counter() > deadline:
                raise TimeoutError("the window's bridge did not start")
            await asyncio.sleep(0.02)
        await runtime.oauth.connect()
        env = WindowEnv(sandbox, window, http, location_id=str(app.db.locations.list()[0].id))
        window.log_tabs.setCurrentIndex(0)  # the message log, live
        yield env
    finally:
        await http.aclose()
        await asyncio.wait_for(window.wait_shutdown(), 60)
        window.deleteLater()


class Posted:
    """Counts messages the bridge has posted to HighLevel (MessageLogged with a HighLevel id)."""

    def __init__(self, bus: Any, prefix: str) -> None:
        from ghl_desktop.services.bridge import MessageLogged

        self.ids: set[str] = set()
        self.prefix = prefix
        self._unsubscribe = bus.subscribe(MessageLogged, self._on)

    def _on(self, event: Any) -> None:
        m = event.message
        if m.ghl_message_id and m.body and m.body.startswith(self.prefix):
            self.ids.add(str(m.wa_message_id))

    def close(self) -> None:
        self._unsubscribe()

    async def wait(self, n: int, limit: float) -> None:
        deadline = time.perf_counter() + limit
        while len(self.ids) < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {len(self.ids)} of {n} messages reached HighLevel in {limit:.0f} s")
            await asyncio.sleep(0.02)


async def traffic(env: WindowEnv, prefix: str, per_number: int, customers_per_number: int = 2) -> None:
    """``per_number`` messages to every linked number from its own customers, as fast as they go; the
    customers run in their own process (bench/_customers.py), so their sends are not work on this
    loop. Returns once the bridge has posted all of them to HighLevel."""
    plan = [{"phone": f"+49152{n:03d}{c:05d}", "name": f"Customer {n}.{c}", "to": env.numbers[n],
             "texts": [f"{prefix} {n} {i}" for i in range(c, per_number, customers_per_number)]}
            for n in range(len(env.numbers)) for c in range(customers_per_number)]
    posted = Posted(env.window.app.bus, prefix)
    try:
        await customers(env.url, plan)
        await posted.wait(per_number * len(env.numbers), 600)
    finally:
        posted.close()


async def rss_steps(steps: list[int], messages: int, neonize: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GHL_DESKTOP_HOME"] = str(Path(tmp) / "home")
        print(json.dumps({"step": "start", "rss_mb": round(rss_mb(), 1)}), flush=True)
        async with sandbox_process(faults=NO_LIMITS) as sb, window_env(sb) as env:
            print(json.dumps({"step": "window", "rss_mb": round(rss_mb(), 1)}), flush=True)
            for total in steps:
                await env.link(total)
                await traffic(env, f"rss{total}", messages)
                await asyncio.sleep(1.0)  # let the log's pages and the runner settle
                print(json.dumps({"step": "numbers", "numbers": total, "rss_mb": round(rss_mb(), 1),
                                  "messages_each": messages}), flush=True)
            if neonize:
                # the WhatsApp engine the real (non-sandbox) mode runs: the app's adapter, neonize and its
                # Go library loaded into this process (a linked neonize number needs a real account)
                import neonize.aioze.client

                import ghl_desktop.adapters.whatsapp.neonize  # noqa: F401

                print(json.dumps({"step": "neonize", "rss_mb": round(rss_mb(), 1)}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--numbers", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--messages", type=int, default=20, help="messages through every number per step")
    parser.add_argument("--neonize", action="store_true", help="then load the neonize engine and report RSS")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    from ghl_desktop.ui.main import create_qt_application
    from ghl_desktop.ui.qloop import QEventLoop

    qt_app = create_qt_application()
    loop = QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(rss_steps(sorted(args.numbers), args.messages, args.neonize))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
