"""How long a second ``ghl-desktop`` on the same data dir takes to raise the first window and exit
(the contract: exit 0 within 5 s).

    .venv/bin/python -m bench.second_launch [--rounds 5]

Starts ``ghl-desktop --sandbox`` (offscreen, a temp data dir, no keyring), waits until its bridge runs,
then times ``--rounds`` second launches (each must exit 0 and be seen by the first). The baseline,
measured in the same run, is ``ghl-desktop --version`` (interpreter start + the CLI's re-exec), so the
ratio says what the hand-off adds on this machine. Appends the figures to
bench/results/second_launch.jsonl. Exit code 1 when the median exceeds 5 s.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 5.0


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    env.update(GHL_DESKTOP_HOME=str(home), QT_QPA_PLATFORM="offscreen",
               PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    return env


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)
    return time.monotonic() - started, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="ghl-second-launch-"))
    env = _env(home)
    log = home / "logs" / "ghl-desktop.log"
    first = subprocess.Popen([sys.executable, "-m", "ghl_desktop", "--sandbox"], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while "bridge running" not in (log.read_text("utf-8", errors="replace") if log.exists() else ""):
            if first.poll() is not None or time.monotonic() > deadline:
                print("the first instance did not start", file=sys.stderr)
                return 2
            time.sleep(0.2)
        baseline = [_timed([sys.executable, "-m", "ghl_desktop", "--version"], env)[0] for _ in range(args.rounds)]
        launches = []
        for _ in range(args.rounds):
            seconds, code = _timed([sys.executable, "-m", "ghl_desktop"], env)
            if code != 0:
                print(f"a second launch exited {code}", file=sys.stderr)
                return 2
            launches.append(seconds)
        handed = log.read_text("utf-8", errors="replace").count("a second launch asked for the window")
    finally:
        first.send_signal(signal.SIGTERM)
        try:
            first.wait(60)
        except subprocess.TimeoutExpired:
            first.kill()
    median, base = statistics.median(launches), statistics.median(baseline)
    result = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": args.rounds,
              "second_launch_median_s": round(median, 3), "second_launch_max_s": round(max(launches), 3),
              "version_baseline_median_s": round(base, 3), "ratio": round(median / base, 2) if base else None,
              "handed_off": handed, "goal_s": GOAL_SECONDS, "load_average": os.getloadavg()[0]}
    print(json.dumps(result))
    out = ROOT / "bench" / "results" / "second_launch.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(result) + "\n")
    return 0 if median <= GOAL_SECONDS and handed == args.rounds else 1


if __name__ == "__main__":
    raise SystemExit(main())
