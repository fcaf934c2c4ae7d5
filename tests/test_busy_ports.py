"""Issue 10.10: a busy webhook port (direct mode) or relay port ends the program with a readable
message and exit code 2 — not a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          env={**base, "QT_QPA_PLATFORM": "offscreen", **env})


def test_headless_with_a_busy_webhook_port_exits_2_with_a_message(data_home: Path, busy_port: int) -> None:
    result = _run("ghl_desktop", "headless", env={
        "GHL_DESKTOP_HOME": str(data_home), "GHL_DESKTOP_VAULT_PASSPHRASE": "x",
        "GHL_CLIENT_ID": "abc-def", "GHL_CLIENT_SECRET": "s", "GHL_WEBHOOK_PORT": str(busy_port)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{busy_port}" in result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_relay_with_a_busy_port_exits_2_with_a_message(tmp_path: Path, busy_port: int) -> None:
    result = _run("ghl_desktop.relay", "serve", "--port", str(busy_port), "--db-url",
                  f"sqlite:///{tmp_path / 'relay.db'}", env={})
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{busy_port}" in result.stderr
    assert "Traceback" not in result.stderr
