"""The blocked-loop fixture (tests/fixtures/loop_watch.py): a test whose loop is blocked longer than
20 ms fails with the blocking code's stack; a test that only awaits passes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ghl_desktop.core.loop_watch import LoopWatch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.asyncio
async def test_the_fixture_watches_the_app_loop(loop_watch: LoopWatch) -> None:
    # the suite's loop is the app's (qasync on Qt); the fixture's watch sees a blocking call on it
    await asyncio.sleep(0.05)
    time.sleep(0.05)  # noqa: ASYNC251  # deliberately blocking the loop thread
    await asyncio.sleep(0.05)
    caught = loop_watch.clear()  # taken back, so this test itself passes
    assert len(caught) == 1 and caught[0].stack[-1].name == "test_the_fixture_watches_the_app_loop"
    await asyncio.sleep(0.1)
    assert loop_watch.blocks == []


CHILD = '''
import asyncio, time
import pytest

@pytest.mark.asyncio
@pytest.mark.loop_watch
async def test_sleeps_on_the_loop():
    await asyncio.sleep(0.03)
    time.sleep(0.05)
    await asyncio.sleep(0.03)

@pytest.mark.asyncio
@pytest.mark.loop_watch
async def test_awaits():
    await asyncio.sleep(0.05)
    await asyncio.sleep(0.05)

@pytest.mark.asyncio
@pytest.mark.loop_watch(allow=[("in test_allowed", "this test's own, on purpose")])
async def test_allowed():
    await asyncio.sleep(0.03)
    time.sleep(0.05)
    await asyncio.sleep(0.03)
'''


def _pytest_in(tmp_path: Path, target: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """pytest with the loop-watch plugin, in ``tmp_path`` as its root, on ``target``; and its output."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GHL_DESKTOP_LOOP_WATCH", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.fixtures.loop_watch",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-rA", str(target)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    return run, run.stdout + run.stderr


def test_a_blocked_loop_fails_the_test_and_an_awaiting_one_does_not(tmp_path: Path) -> None:
    (tmp_path / "test_child.py").write_text(textwrap.dedent(CHILD))
    run, out = _pytest_in(tmp_path, tmp_path / "test_child.py")
    assert run.returncode == 1, out
    assert "FAILED test_child.py::test_sleeps_on_the_loop" in out, out
    assert "PASSED test_child.py::test_awaits" in out, out
    assert "PASSED test_child.py::test_allowed" in out, out
    assert "the event loop was blocked longer than 20 ms 1 time(s)" in out, out
    assert "test_child.py:9 in test_sleeps_on_the_loop" in out and "time.sleep(0.05)" in out, out
    assert "tolerated stalls" in out and "in test_allowed (this test's own, on purpose)" in out, out


def test_an_innermost_allow_matches_only_stalls_with_nothing_above_that_frame() -> None:
    from ghl_desktop.core.loop_watch import Block, Frame
    from tests.fixtures.loop_watch import _allowed

    qt = Frame("/venv/site-packages/qasync/__init__.py", 404, "run_forever", "rslt = self.__app.exec()")
    ours = Frame("/repo/ghl_desktop/ui/panels/numbers.py", 90, "set_numbers", "self.model.set_records(numbers)")
    allow = [("innermost:qasync/__init__.py", "Qt's own C++ work")]
    assert _allowed(Block(0.08, 0.08, ((qt,), (qt,))), allow) is not None
    assert _allowed(Block(0.08, 0.08, ((qt,), (qt, ours))), allow) is None  # our code ran in the stall
    assert _allowed(Block(0.08, 0.08, ((qt, ours),)), [("qasync/__init__.py", "any frame")]) is not None


E2E_CHILD = '''
import asyncio, time
import pytest

@pytest.mark.asyncio
async def test_an_e2e_test_that_blocks():  # no marker: tests/e2e/conftest.py puts it on
    await asyncio.sleep(0.03)
    time.sleep(0.05)
    await asyncio.sleep(0.03)

@pytest.mark.asyncio
async def test_an_e2e_test_that_awaits():
    await asyncio.sleep(0.05)
'''


def test_every_e2e_test_runs_under_the_detector(tmp_path: Path) -> None:
    """tests/e2e/conftest.py, as is, in a directory of its own: an unmarked async test there that
    blocks its loop fails; one that only awaits passes."""
    e2e = tmp_path / "e2e"
    e2e.mkdir()
    (e2e / "conftest.py").write_text((ROOT / "tests" / "e2e" / "conftest.py").read_text(encoding="utf-8"))
    (e2e / "test_child.py").write_text(textwrap.dedent(E2E_CHILD))
    run, out = _pytest_in(tmp_path, e2e)
    assert run.returncode == 1, out
    assert "FAILED e2e/test_child.py::test_an_e2e_test_that_blocks" in out, out
    assert "PASSED e2e/test_child.py::test_an_e2e_test_that_awaits" in out, out
    assert "test_child.py:8 in test_an_e2e_test_that_blocks" in out and "time.sleep(0.05)" in out, out
