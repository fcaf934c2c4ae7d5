"""`ghl-desktop doctor`: one line per check, fix hints on failures, exit 1 when anything failed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail

from ghl_desktop.adapters.secrets import ScryptParams, VaultSecretStore
from ghl_desktop.config import load_settings
from ghl_desktop.doctor import Status, check_credentials, check_secrets

LINE = re.compile(r"^(ok  |warn|FAIL) (?P<name>[^:]+): (?P<detail>.+)$")
CHECK_NAMES = [
    "Python",
    "Qt platform plugin",
    "neonize library",
    "libmagic",
    "ffmpeg/ffprobe",
    "data dir writable",
    "database migrates",
    "secret store",
    "HighLevel credentials",
]


def storage_available() -> bool:
    try:
        from ghl_desktop.adapters.storage import open_database  # noqa: F401
    except ImportError:
        return False
    return True


def doctor(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, GHL_DESKTOP_HOME=str(home), QT_QPA_PLATFORM="offscreen", **env)
    return subprocess.run(
        [sys.executable, "-m", "ghl_desktop", "doctor"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=180,
        check=False,
    )


def parse(stdout: str) -> dict[str, str]:
    lines = stdout.strip().splitlines()
    out = {}
    for line in lines:
        m = LINE.match(line)
        assert m, f"line does not follow the format: {line!r}"
        out[m["name"]] = line
    assert list(out) == CHECK_NAMES
    return out


def test_doctor_on_a_healthy_machine(data_home: Path) -> None:
    proc = doctor(data_home)
    lines = parse(proc.stdout)
    assert lines["Python"].startswith("ok ")
    assert lines["Qt platform plugin"].startswith("ok   Qt platform plugin: 'offscreen' loads")
    assert lines["neonize library"].startswith("ok   neonize library: neonize-") and "0.5.2" in lines["neonize library"]
    assert lines["data dir writable"] == f"ok   data dir writable: {data_home}"
    assert (
        lines["HighLevel credentials"].startswith("warn")
        and "sandbox mode will be used" in lines["HighLevel credentials"]
    )
    if storage_available():
        assert lines["database migrates"].startswith("ok ")
        assert (data_home / "ghl-desktop.db").exists()
    failed = [line for line in lines.values() if line.startswith("FAIL")]
    assert proc.returncode == (1 if failed else 0), proc.stdout
    if storage_available():
        assert not failed, failed


def test_unwritable_data_dir_fails_with_a_hint(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data dir should be")  # fails even for root, unlike chmod
    proc = doctor(blocker / "home")
    lines = parse(proc.stdout)
    assert proc.returncode == 1
    assert lines["data dir writable"].startswith(f"FAIL data dir writable: {blocker / 'home'}")
    assert "— fix: set GHL_DESKTOP_HOME to a folder you can write" in lines["data dir writable"]
    assert lines["database migrates"].startswith("FAIL")
    assert " — fix: " in lines["database migrates"]


def test_a_qt_platform_that_does_not_load_fails_with_a_hint(data_home: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ghl_desktop.doctor import check_qt; from ghl_desktop.config import "
            "load_settings; print(check_qt(load_settings()).line())",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, QT_QPA_PLATFORM="no-such-platform"),
    )
    line = proc.stdout.strip()
    assert line.startswith("FAIL Qt platform plugin: 'no-such-platform' does not load"), proc.stdout + proc.stderr
    assert "— fix: install Qt's system libraries" in line


def test_credentials_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_credentials(load_settings()).status is Status.WARN
    monkeypatch.setenv("GHL_CLIENT_ID", "client-abc")
    monkeypatch.setenv("GHL_CLIENT_SECRET", "secret-xyz")
    result = check_credentials(load_settings())
    assert result.status is Status.OK
    assert "client-abc" in result.line() and "secret-xyz" not in result.line()


def test_secret_store_line_names_keyring_or_vault(data_home: Path) -> None:
    assert check_secrets(load_settings()).line().startswith("ok   secret store: system keyring")
    keyring.set_keyring(fail.Keyring())  # the autouse fixture restores the previous backend
    result = check_secrets(load_settings())
    assert result.status is Status.WARN and "GHL_DESKTOP_VAULT_PASSPHRASE" in result.line()
    VaultSecretStore(data_home / "secrets.vault", "pp", params=ScryptParams(log2_n=10))
    result = check_secrets(load_settings())
    assert result.status is Status.OK and "encrypted vault" in result.detail
