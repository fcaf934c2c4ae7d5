"""How long closing the main window takes until the app is fully shut down (goal: under 2 s).

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m bench.bench_shutdown [--rounds 5] [--tasks 50]

Each round builds a fresh App (its own data dir, a real SQLite file with seeded rows, an in-memory
secret store), starts ``--tasks`` background tasks that sleep until cancelled, shows the window, then
measures close() → shutdown_finished. The baseline, measured in the same run, is one round trip of the
qasync loop plus closing a bare QMainWindow, so the ratio says how much our shutdown adds over Qt's
own cost on this machine. Exit code 1 when the median exceeds the goal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import qasync
from PySide6.QtWidgets import QMainWindow

from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.ui.main import create_qt_application
from ghl_desktop.ui.main_window import MainWindow
from tests.fakes.secrets import MemorySecretStore
from tests.ui.seed import seed

GOAL_SECONDS = 2.0


async def baseline_round() -> float:
    window = QMainWindow()
    window.show()
    await asyncio.sleep(0)
    start = time.perf_counter()
    window.close()
    await asyncio.sleep(0)
    return time.perf_counter() - start


async def shutdown_round(tasks: int) -> float:
    with tempfile.TemporaryDirectory() as home:
        os.environ["GHL_DESKTOP_HOME"] = home
        app = App(load_settings(), secrets=MemorySecretStore(), console_log=False)
        seed(app.db)
        for i in range(tasks):
            app.spawn(asyncio.Event().wait(), name=f"idle-{i}")
        window = MainWindow(app)
        window.show()
        await asyncio.sleep(0.05)
        done = asyncio.Event()
        window.shutdown_finished.connect(done.set)
        start = time.perf_counter()
        window.close()
        await done.wait()
        elapsed = time.perf_counter() - start
        assert app.closed
        return elapsed


async def main(rounds: int, tasks: int) -> int:
    base = [await baseline_round() for _ in range(rounds)]
    ours = [await shutdown_round(tasks) for _ in range(rounds)]
    b, o = statistics.median(base), statistics.median(ours)
    print(f"baseline (bare window close + loop turn): median {b * 1000:.2f} ms")
    print(f"main window close → app shut down ({tasks} tasks): median {o * 1000:.2f} ms, max {max(ours) * 1000:.2f} ms")
    print(
        f"ratio vs baseline: {o / b if b else float('inf'):.1f}x; goal {GOAL_SECONDS:.0f} s: "
        f"{'met' if o < GOAL_SECONDS else 'MISSED'}"
    )
    return 0 if o < GOAL_SECONDS else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=50)
    args = parser.parse_args()
    qt_app = create_qt_application()
    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    with loop:
        sys.exit(loop.run_until_complete(main(args.rounds, args.tasks)))
