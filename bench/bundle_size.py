"""Size of the double-click bundle and how fast it starts, against the source checkout.

    .venv/bin/python -m bench.bundle_size [--dist dist/ghl-desktop] [--rounds 3]

Prints the bundle's size on disk and file count, then the start-to-``ready`` time of the frozen
``ghl-desktop headless --sandbox`` and of ``python -m ghl_desktop headless --sandbox`` measured in the
same run, alternately, each from a fresh empty data dir (cold: migrations, OAuth install, QR link)
and again on that data dir (warm: resume), plus the time from SIGTERM to exit; the ratio is frozen /
source. Both re-exec once for NEONIZE_BOT_TAG=off, which is part of the measured time. Exit code 1
when a run does not reach ``ready``, does not exit 0 on SIGTERM, or the bundle is missing.
Build first: ``make dist`` (or ``pyinstaller --noconfirm --clean --distpath /tmp/ghl-dist --workpath
/tmp/ghl-build build.spec`` and pass ``--dist /tmp/ghl-dist/ghl-desktop``).

Each run appends one JSON line to ``bench/results/bundle_size.jsonl`` (``--results`` to change,
``--results ''`` for none): when, commit, platform, bundle size / file count / download archive size,
and the cold/warm medians of both with their ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


def bundle_stats(folder: Path) -> tuple[int, int]:
    size = files = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            size += path.stat().st_size
            files += 1
    return size, files


def start_to_ready(cmd: list[str], home: str) -> tuple[float, float, int]:
    """(seconds to the ``ready`` line, seconds from SIGTERM to exit, exit code)."""
    env = dict(os.environ, GHL_DESKTOP_HOME=home, GHL_DESKTOP_VAULT_PASSPHRASE="bench")
    for name in ("NEONIZE_BOT_TAG", "GHL_DESKTOP_NO_REEXEC"):
        env.pop(name, None)  # measure the real start, re-exec included
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    ready = float("nan")
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    try:
        while time.perf_counter() - start < READY_TIMEOUT:
            if not sel.select(timeout=0.5):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            if b"\nready\n" in b"\n" + buffer:
                ready = time.perf_counter() - start
                break
        stop = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        # keep draining stdout so a chatty shutdown cannot block on a full pipe
        while proc.poll() is None and time.perf_counter() - stop < STOP_TIMEOUT:
            if sel.select(timeout=0.2) and not os.read(proc.stdout.fileno(), 65536):
                break
        code = proc.wait(timeout=max(0.1, STOP_TIMEOUT - (time.perf_counter() - stop)))
        return ready, time.perf_counter() - stop, code
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=REPO / "dist" / "ghl-desktop", help="the onedir bundle")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=str(REPO / "bench" / "results" / "bundle_size.jsonl"),
                        help="append the figures as one JSON line here ('' for none)")
    args = parser.parse_args()
    exe = args.dist / ("ghl-desktop.exe" if sys.platform == "win32" else "ghl-desktop")
    if not exe.exists():
        print(f"no bundle at {exe}: build it first (see the docstring)", file=sys.stderr)
        return 1
    size, files = bundle_stats(args.dist)
    print(f"bundle: {args.dist}  {size / 1e6:.1f} MB in {files} files")

    commands = {
        "frozen": [str(exe), "headless", "--sandbox"],
        "source": [sys.executable, "-m", "ghl_desktop", "headless", "--sandbox"],
    }
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    failed = False
    for round_no in range(args.rounds):
        order = list(commands) if round_no % 2 == 0 else list(reversed(commands))
        for name in order:
            with tempfile.TemporaryDirectory(prefix=f"ghl-bench-{name}-") as home:
                for phase in ("cold", "warm"):
                    ready, stop, code = start_to_ready(commands[name], home)
                    results.setdefault((name, phase), []).append((ready, stop, code))
                    if ready != ready or code != 0:  # NaN: never ready
                        failed = True
                        print(f"  {name} {phase}: ready={ready:.2f}s exit={code}", file=sys.stderr)

    print(f"{'':8}{'phase':6}{'ready median':>14}{'min':>8}{'max':>8}{'SIGTERM->exit':>15}  exit codes")
    medians: dict[tuple[str, str], float] = {}
    for (name, phase), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        readies = [r for r, _, _ in runs if r == r]
        stops = [s for _, s, _ in runs]
        codes = sorted({c for _, _, c in runs})
        med = statistics.median(readies) if readies else float("nan")
        medians[(name, phase)] = med
        lo = min(readies) if readies else float("nan")
        hi = max(readies) if readies else float("nan")
        print(
            f"{name:8}{phase:6}{med:>13.2f}s{lo:>7.2f}s{hi:>7.2f}s{statistics.median(stops):>14.2f}s  {codes}"
        )
    ratios: dict[str, float] = {}
    for phase in ("cold", "warm"):
        ratio = medians[("frozen", phase)] / medians[("source", phase)]
        ratios[phase] = ratio
        print(f"ratio frozen/source, {phase} start-to-ready: {ratio:.2f}")
    if args.results:
        archives = sorted(args.dist.parent.glob("ghl-desktop-*.tar.gz"), key=lambda p: p.stat().st_mtime)
        record = {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "platform": f"{sys.platform}-{platform.machine()}",
            "rounds": args.rounds,
            "bundle_mb": round(size / 1e6, 1),
            "files": files,
            "archive_mb": round(archives[-1].stat().st_size / 1e6, 1) if archives else None,
            **{f"{name}_{phase}_ready_s": round(med, 2) for (name, phase), med in sorted(medians.items())},
            **{f"ratio_{phase}": round(r, 3) for phase, r in ratios.items()},
            "failed": failed,
        }
        out = Path(args.results)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"appended to {out}")
    return 1 if failed else 0


def _git_commit() -> str | None:
    try:
        answer = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return answer.stdout.strip() or None


if __name__ == "__main__":
    raise SystemExit(main())
