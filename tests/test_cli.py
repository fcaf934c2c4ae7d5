"""The command line as a user meets it (subprocesses of the installed entry point)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ghl_desktop import __version__


def _run(*args: str, home: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    env.update({"GHL_DESKTOP_HOME": str(home), "QT_QPA_PLATFORM": "offscreen", **(extra_env or {})})
    return subprocess.run([sys.executable, "-m", "ghl_desktop", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_version(data_home: Path) -> None:
    result = _run("--version", home=data_home)
    assert result.returncode == 0 and result.stdout.strip() == f"ghl-desktop {__version__}"


def test_headless_without_credentials_points_to_sandbox_mode(data_home: Path) -> None:
    result = _run("headless", home=data_home, extra_env={"GHL_DESKTOP_VAULT_PASSPHRASE": "x"})
    assert result.returncode == 2
    assert "no HighLevel credentials" in result.stderr and "--sandbox" in result.stderr


def test_headless_refuses_a_locked_vault_with_a_plain_message(data_home: Path) -> None:
    # no keyring backend in this environment and no passphrase: headless must refuse, saying why
    result = _run("headless", home=data_home, extra_env={
        "GHL_CLIENT_ID": "abc-def", "GHL_CLIENT_SECRET": "s",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"})
    assert result.returncode == 2
    assert "GHL_DESKTOP_VAULT_PASSPHRASE" in result.stderr
    assert not (data_home / "ghl-desktop.db").exists()


def test_unknown_command_is_refused(data_home: Path) -> None:
    result = _run("frobnicate", home=data_home)
    assert result.returncode == 2 and "invalid choice" in result.stderr
