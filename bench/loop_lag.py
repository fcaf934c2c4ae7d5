"""Event-loop lag in the real window while 10 WhatsApp numbers feed the bridge at its full rate.

The window is the app's ``MainWindow`` with its ``BridgeRuntime`` on the qasync loop, offscreen
(QT_QPA_PLATFORM=offscreen), the message log tab open and live (every message appears in it as the
bridge stores and posts it); the HighLevel sandbox and the simulated WhatsApp network run in their
own process (bench/_window.py). One location, 10 numbers linked by QR, 2 customers per number sending
as fast as the simulated network takes them; rate limits off (the bridge's full rate).

The lag probe is a timer on the loop: every ``--interval`` (10 ms) a callback is scheduled with
``loop.call_at``; its lag is the time it actually ran minus the time it was scheduled for, and the
next one is scheduled ``--interval`` after it ran (one block counts once). Measured twice in the same
run: idle (window open, numbers linked, no traffic: the timer's own jitter, the baseline) and under
load (from the first customer send to the last message posted).

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/loop_lag.py [--messages 100] [--quick]

Prints a table and appends one JSON line to bench/results/loop_lag.jsonl (loop_lag_p99_ms).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from bench._common import NO_LIMITS, percentile, record, sandbox_process, table
from bench._window import traffic, window_env

NUMBERS = 10


class LagProbe:
    """A periodic timer on the loop: how late each tick ran (scheduled vs actual), in ms."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        self.samples: list[float] = []
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self.samples = []
        self._due = self.loop.time() + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        now = self.loop.time()
        self.samples.append((now - self._due) * 1000)
        self._due = now + self.interval
        self._handle = self.loop.call_at(self._due, self._tick)

    def stop(self) -> list[float]:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        return self.samples


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(samples, 0.5), 2), "p99": round(percentile(samples, 0.99), 2),
            "max": round(max(samples), 2), "samples": len(samples)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    probe = LagProbe(loop, args.interval)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GHL_DESKTOP_HOME"] = str(Path(tmp) / "home")
        async with sandbox_process(faults=NO_LIMITS) as sb, window_env(sb) as env:
            await env.link(NUMBERS)
            await traffic(env, "warm-up", 2)  # contacts exist, the log has rows
            await asyncio.sleep(1.0)
            probe.start()
            await asyncio.sleep(args.idle_seconds)
            idle = probe.stop()
            watch = None
            if args.watch:
                from ghl_desktop.core.loop_watch import LoopWatch

                watch = LoopWatch(loop, threshold=args.watch / 1000).start()
            probe.start()
            start = time.perf_counter()
            await traffic(env, "lag", args.messages)
            elapsed = time.perf_counter() - start
            busy = probe.stop()
            blocks = watch.stop() if watch is not None else []
            shown = env.window.log_panel.model.rowCount()
    total = args.messages * NUMBERS
    if shown < total:
        raise RuntimeError(f"the message log shows {shown} rows, fewer than the {total} messages sent")
    return {"idle": summary(idle), "load": summary(busy), "messages": total, "elapsed_s": elapsed,
            "log_rows": shown, "culprits": culprits(blocks)}


def culprits(blocks: list[Any], top: int = 5) -> list[dict[str, Any]]:
    """The project's frames that held the loop longest (LoopWatch: CPU waits not counted)."""
    import ghl_desktop

    root = str(Path(ghl_desktop.__file__).parent)
    total: dict[str, list[float]] = {}
    for block in blocks:
        frame = block.culprit([root])
        inner = block.stack[-1] if block.stack else None
        where = frame.where().replace(root, "ghl_desktop") if frame else "(no stack)"
        if inner is not None and inner != frame:  # the library or Qt call the project's frame was in
            where += " → " + inner.where().split("site-packages/")[-1].split("/lib/python3")[-1]
        total.setdefault(where, []).append(block.stalled)
    ranked = sorted(total.items(), key=lambda kv: -sum(kv[1]))[:top]
    return [{"where": k, "stalls": len(v), "stalled_s": round(sum(v), 3), "max_ms": round(max(v) * 1000, 1)}
            for k, v in ranked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=None, help="per number (default 100; --quick 30)")
    parser.add_argument("--interval", type=float, default=0.01, help="the probe's period in seconds")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--watch", type=float, default=0, metavar="MS",
                        help="diagnosis: also run the LoopWatch (threshold MS) under load and list what held the "
                             "loop (its sampling thread costs a little: figures of such a run are not recorded)")
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    args.messages = args.messages or (30 if args.quick else 100)
    logging.disable(logging.INFO)
    from ghl_desktop.ui.main import create_qt_application
    from ghl_desktop.ui.qloop import QEventLoop

    qt_app = create_qt_application()
    loop = QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    load = os.getloadavg()
    with loop:
        r = loop.run_until_complete(run(args))
    idle, busy = r["idle"], r["load"]
    rate = r["messages"] / r["elapsed_s"]
    for c in r["culprits"]:
        print(f"  held the loop: {c['where']}  {c['stalls']} stalls, {c['stalled_s']} s, max {c['max_ms']} ms")
    table([
        ("numbers", f"{NUMBERS} simulated, 2 customers each, rate limits off"),
        ("messages", f"{r['messages']:,} in {r['elapsed_s']:.1f} s ({rate:.1f} msg/s posted to HighLevel)"),
        ("message log rows", r["log_rows"]),
        ("idle lag p50 / p99 / max ms", f"{idle['p50']} / {idle['p99']} / {idle['max']}  ({idle['samples']} ticks)"),
        ("load lag p50 / p99 / max ms", f"{busy['p50']} / {busy['p99']} / {busy['max']}  ({busy['samples']} ticks)"),
        ("loop_lag_p99_ms", f"{busy['p99']}  (goal < 50)"),
        ("load average at start", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"),
    ], "event-loop lag in the real window (offscreen), sandbox in its own process")
    record("loop_lag", {
        "numbers": NUMBERS, "messages": r["messages"], "msg_per_s": round(rate, 1), "interval_ms": args.interval * 1000,
        "loop_lag_p99_ms": busy["p99"], "loop_lag_p50_ms": busy["p50"], "loop_lag_max_ms": busy["max"],
        "ticks": busy["samples"], "idle_lag_p99_ms": idle["p99"], "idle_lag_max_ms": idle["max"],
        "log_rows": r["log_rows"], "load_avg_1m_start": round(load[0], 2),
    }, quick=args.quick, enabled=not args.no_record and not args.watch)


if __name__ == "__main__":
    main()
