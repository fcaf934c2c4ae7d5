"""A real X screenshot of the main window under Xvfb, saved for a human to look at.

The PNGs land in ``$GHL_TEST_ARTIFACTS`` (default ``test-artifacts/``). Skipped when Xvfb is not
installed, except under CI (env ``CI`` set), where a missing Xvfb is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageStat

ROOT = Path(__file__).resolve().parents[2]


def _free_display() -> int:
    for number in range(90, 190):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number between :90 and :189")


@pytest.fixture
def xvfb() -> Iterator[str]:
    if shutil.which("Xvfb") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but Xvfb is not installed (apt-get install xvfb)")
        pytest.skip("Xvfb is not installed")
    display = f":{_free_display()}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
            if proc.poll() is not None:
                pytest.fail(f"Xvfb exited with {proc.returncode}")
            if time.monotonic() > deadline:
                pytest.fail("Xvfb did not come up")
            time.sleep(0.05)
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def artifacts_dir() -> Path:
    path = Path(os.environ.get("GHL_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def assert_not_blank(path: Path) -> None:
    assert path.exists(), path
    with Image.open(path) as image:
        stat = ImageStat.Stat(image.convert("L"))
        assert image.width >= 900 and image.height >= 600, image.size
        assert stat.var[0] > 100, f"{path} looks blank (variance {stat.var[0]:.1f})"
        assert len(image.convert("L").getcolors(65536) or []) > 20, f"{path} has almost no distinct colours"


def render(script: str, out: Path, display: str, home: Path, *stale: str) -> str:
    """Run a render script on the virtual screen; returns its stdout (fails the test on a bad exit)."""
    for name in stale:
        (out / name).unlink(missing_ok=True)
    env = dict(
        os.environ,
        DISPLAY=display,
        QT_QPA_PLATFORM="xcb",
        GHL_DESKTOP_HOME=str(home),
        GHL_DESKTOP_VAULT_PASSPHRASE="screenshot-vault-passphrase",
    )
    proc = subprocess.run(
        [sys.executable, "-m", script, str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_main_window_screenshot_under_xvfb(xvfb: str, data_home: Path) -> None:
    out = artifacts_dir()
    stdout = render("tests.ui.render_main_window", out, xvfb, data_home,
                    "main-window.png", "main-window-x11.png", "main-window-empty.png")
    assert "status: Secrets: " in stdout
    assert "2 locations · 2 numbers" in stdout
    assert_not_blank(out / "main-window.png")
    assert_not_blank(out / "main-window-empty.png")
    if shutil.which("import"):
        assert_not_blank(out / "main-window-x11.png")


def test_sandbox_window_screenshot_under_xvfb(xvfb: str, data_home: Path) -> None:
    """The product on a fresh machine: sandbox mode, a linked number, a QR code, a few messages."""
    out = artifacts_dir()
    stdout = render("tests.ui.render_sandbox_window", out, xvfb, data_home,
                    "sandbox-window.png", "sandbox-window-x11.png")
    assert "state: 1 location(s); +15550100001:connected -:waiting_for_scan; 4 messages; banner=True" in stdout
    assert_not_blank(out / "sandbox-window.png")
    if shutil.which("import"):
        assert_not_blank(out / "sandbox-window-x11.png")
