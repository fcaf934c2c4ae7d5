"""Cold start to the window shown, and the app's memory with 1 and 10 linked numbers.

  cold_start_s   ``ghl-desktop`` (the installed entry point, as ``make run`` starts it) on a fresh,
                 empty data dir, offscreen, no credentials → sandbox mode: from just before the
                 process is started to the line ``window shown`` in its log (ui/main.py logs it once
                 the loop has run after the window's show()). Includes the CLI's one re-exec and the
                 in-process sandbox's start (sandbox mode's first screen). Median of ``--rounds``
                 fresh data dirs (the OS file cache is warm after the first: ``first_start_s`` is it).
                 Baselines in the same run: ``ghl-desktop --version`` and an empty Qt window shown by
                 the same interpreter (``cold_start_vs_blank_window``: what the app adds over Qt).
  rss_mb_1/10    RSS (/proc/<pid>/status VmRSS) of a process running the real window + bridge
                 (bench/_window.py: the sandbox in its own process, not counted) after 1, then 10,
                 simulated numbers are linked and have each carried messages into HighLevel.
  rss_mb_neonize the same process after the neonize engine (the app's adapter, neonize, its Go
                 library) is loaded too; numbers linked through neonize need real WhatsApp accounts
                 and the network, so they are not measured here.

    .venv/bin/python bench/startup.py [--rounds 3] [--quick]

Prints a table and appends one JSON line to bench/results/startup.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import VENV_BIN, record, table  # noqa: E402


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHL_") or k == "GHL_BENCH_COMMIT"}
    # an installed app starts from bytecode (pip compiles a wheel at install, the bundle ships it): a
    # machine that sets this (some CI images do) would make every start compile the app from source
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(GHL_DESKTOP_HOME=str(home), QT_QPA_PLATFORM="offscreen",
               PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.pop("NEONIZE_BOT_TAG", None)  # the CLI's re-exec happens, as for a user
    return env


#: the log lines that split a cold start into its steps (their own timestamps, wall clock, ms)
STEPS = (("starting", "ghl.ui: ghl-desktop ", " starting ("), ("sandbox", "ghl.ui: sandbox: ", ""),
         ("app", "ghl-desktop ready: ", ""), ("window", "ghl.ui: window shown", ""))


def steps(text: str, started_wall: float) -> dict[str, float]:
    """Seconds from the process start to each step's first log line."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name, marker, also in STEPS:
            if name not in out and marker in line and also in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out[name] = round(stamp - started_wall, 3)
    return out


def cold_start(limit: float = 120) -> tuple[float, float, dict[str, float]]:
    """(seconds to 'window shown', seconds to 'bridge running', the steps) for one fresh data dir."""
    with tempfile.TemporaryDirectory(prefix="ghl-cold-start-") as tmp:
        home = Path(tmp)
        log = home / "logs" / "ghl-desktop.log"
        started_wall = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen([str(VENV_BIN / "ghl-desktop")], env=_env(home), cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        shown = running = float("nan")
        try:
            while running != running:  # nan: until 'bridge running'
                text = log.read_text("utf-8", errors="replace") if log.exists() else ""
                now = time.perf_counter() - start
                if shown != shown and "window shown" in text:
                    shown = now
                if "bridge running" in text:
                    running = now
                if proc.poll() is not None:
                    raise RuntimeError(f"ghl-desktop exited {proc.returncode} before its bridge ran")
                if now > limit:
                    raise TimeoutError("ghl-desktop did not show its window")
                time.sleep(0.005)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return shown, running, steps(log.read_text("utf-8", errors="replace"), started_wall)


def compile_app() -> None:
    """The app's own modules compiled to bytecode first (``__pycache__``, ignored by git), as an
    installed app has them: the starts measure the app, not the compiler."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "ghl_desktop")], env=env, check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=300)


def version_baseline() -> float:
    with tempfile.TemporaryDirectory(prefix="ghl-version-") as tmp:
        start = time.perf_counter()
        subprocess.run([str(VENV_BIN / "ghl-desktop"), "--version"], env=_env(Path(tmp)), cwd=tmp, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        return time.perf_counter() - start


BLANK_WINDOW = ("from PySide6.QtWidgets import QApplication, QWidget; app = QApplication([]); w = QWidget(); "
                "w.show(); app.processEvents(); print('shown', flush=True)")


def blank_window() -> float:
    """Seconds for the same interpreter to show an empty Qt window (the floor under any Qt app)."""
    with tempfile.TemporaryDirectory(prefix="ghl-blank-") as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", BLANK_WINDOW], env=_env(Path(tmp)), cwd=tmp, check=True,
                       capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        return time.perf_counter() - start


def memory(messages: int) -> dict[str, Any]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "NEONIZE_BOT_TAG": "off"}
    out = subprocess.run([sys.executable, "-m", "bench._window", "--numbers", "1", "10", "--messages", str(messages),
                          "--neonize"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"bench._window failed ({out.returncode}): {out.stderr[-2000:]}")
    steps = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    by = {(s["step"], s.get("numbers")): s["rss_mb"] for s in steps}
    return {"rss_mb_start": by[("start", None)], "rss_mb_window": by[("window", None)],
            "rss_mb_1": by[("numbers", 1)], "rss_mb_10": by[("numbers", 10)],
            "rss_mb_neonize": by[("neonize", None)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="cold starts (default 3; --quick 1)")
    parser.add_argument("--messages", type=int, default=20, help="messages through every number before RSS")
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    load = os.getloadavg()
    compile_app()
    baseline = statistics.median(version_baseline() for _ in range(rounds))
    blank = statistics.median(blank_window() for _ in range(rounds))
    starts = [cold_start() for _ in range(rounds)]
    shown = [s for s, _, _ in starts]
    cold = statistics.median(shown)
    # the median round's steps: process start → "starting" (interpreter, re-exec, imports, Qt, secrets)
    # → the in-process sandbox up → the App (database migrated) → the window shown
    middle = sorted(starts, key=lambda s: s[0])[len(starts) // 2][2]
    names = [name for name, _, _ in STEPS]
    split = {f"{b}_s": round(middle[b] - (middle[a] if a else 0.0), 3)
             for a, b in zip([None, *names[:-1]], names, strict=True) if b in middle and (a is None or a in middle)}
    mem = memory(args.messages)
    table([
        ("cold starts (fresh data dir each)", ", ".join(f"{s:.2f} s" for s in shown)),
        ("cold_start_s (median)", f"{cold:.2f}  (goal < 2)"),
        ("steps of the median start", ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in split.items())
         + "  (s each: start → 'starting' log line → sandbox up → App ready → window shown)"),
        ("bridge running (median)", f"{statistics.median(r for _, r, _ in starts):.2f} s"),
        ("baseline: ghl-desktop --version", f"{baseline:.2f} s"),
        ("baseline: an empty Qt window", f"{blank:.2f} s (cold start is {cold / blank:.1f}x it)"),
        ("RSS: window, no number", f"{mem['rss_mb_window']} MB"),
        ("rss_mb_1", f"{mem['rss_mb_1']} MB"),
        ("rss_mb_10", f"{mem['rss_mb_10']} MB  (goal < 250)"),
        ("RSS with the neonize engine loaded", f"{mem['rss_mb_neonize']} MB (no neonize number linked: "
                                               "that needs a real WhatsApp account)"),
        ("load average at start", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"),
    ], "cold start (sandbox mode, offscreen) and memory (real window + bridge, simulated numbers)")
    record("startup", {
        "rounds": rounds, "cold_start_s": round(cold, 3), "first_start_s": round(shown[0], 3),
        "cold_starts_s": [round(s, 3) for s in shown], "cold_start_steps_s": split,
        "bridge_running_s": round(statistics.median(r for _, r, _ in starts), 3),
        "version_baseline_s": round(baseline, 3), "cold_start_vs_version": round(cold / baseline, 2),
        "blank_window_s": round(blank, 3), "cold_start_vs_blank_window": round(cold / blank, 2),
        **mem, "messages_per_number": args.messages, "load_avg_1m_start": round(load[0], 2),
    }, quick=args.quick, enabled=not args.no_record)


if __name__ == "__main__":
    main()
