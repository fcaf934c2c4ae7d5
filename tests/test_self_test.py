"""``ghl-desktop --self-test`` from source, in a subprocess as a user would start it (re-exec included).

The bundle runs the same command in CI (.ci/run → scripts/dist-self-test.sh) from outside the tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ghl_desktop.self_test import STEPS

REPO = Path(__file__).resolve().parents[1]


def run_self_test(tmp_path: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NEONIZE_BOT_TAG", "GHL_DESKTOP_NO_REEXEC")}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "ghl_desktop", "--self-test"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280,
    )


def data_dir_of(stdout: str) -> Path:
    match = re.search(r"data dir (\S+)", stdout.splitlines()[0])
    assert match, stdout
    return Path(match.group(1))


def test_self_test_passes_every_step_and_leaves_the_users_data_alone(tmp_path: Path) -> None:
    user_home = tmp_path / "user-data"
    user_home.mkdir()
    # a user's environment pointing elsewhere must not leak in (another data dir, a database, creds)
    result = run_self_test(
        tmp_path,
        GHL_DESKTOP_HOME=str(user_home),
        GHL_DESKTOP_DB_URL=f"sqlite:///{user_home / 'other.db'}",
        GHL_CLIENT_ID="user-client",
        GHL_CLIENT_SECRET="user-secret",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("self-test: ghl-desktop ") and "(source)" in lines[0]
    step_lines = [line for line in lines if re.match(r"self-test: \w+ (ok|FAILED)", line)]
    assert [line.split()[1] for line in step_lines] == list(STEPS)
    assert all(line.split()[2] == "ok" for line in step_lines), step_lines
    assert lines[-1] == "self-test: passed"
    assert "phone → HighLevel → phone" in result.stdout
    assert "client constructed, no network" in result.stdout
    assert list(user_home.iterdir()) == []
    assert not data_dir_of(result.stdout).exists()  # the temporary data dir is removed after a pass


def test_self_test_names_the_step_that_failed_and_exits_1(tmp_path: Path) -> None:
    # without the launcher's re-exec the engine would tag every message as a bot: the engine step
    # must refuse, after the database step passed, and nothing after it runs
    result = run_self_test(tmp_path, GHL_DESKTOP_NO_REEXEC="1")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "self-test: database ok" in result.stdout
    assert any(line.startswith("self-test: engine FAILED: NEONIZE_BOT_TAG=off") for line in lines), lines
    assert not any(line.startswith(("self-test: qr", "self-test: window")) for line in lines)
    assert lines[-1].startswith("self-test: failed at step 'engine'")
    kept = data_dir_of(result.stdout)
    assert kept.is_dir()  # kept for a look at its logs
    assert "--- end of" in result.stderr
    shutil.rmtree(kept)


def test_self_test_is_in_the_help() -> None:
    from ghl_desktop.cli import build_parser

    assert "--self-test" in build_parser().format_help()
