"""``ghl-desktop doctor``: check this machine, one line per check, a fix hint for each failure.

Output format (stable, scripts may grep it)::

    ok   <check>: <detail>
    warn <check>: <detail> — <what it means>
    FAIL <check>: <detail> — fix: <hint>

Exit code 1 when any check FAILed; warnings (no HighLevel credentials, no ffmpeg, vault instead of
keyring) do not fail. Checks that could crash or hang the process (loading Qt's platform plugin,
loading neonize's Go library) run in a subprocess with a timeout.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ghl_desktop.config import Settings, load_settings

SUBPROCESS_TIMEOUT = 60.0
MIN_PYTHON = (3, 11)


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    hint: str = ""

    def line(self) -> str:
        head = f"{self.status.value:<4} {self.name}: {self.detail}"
        if self.status is Status.FAIL:
            return f"{head} — fix: {self.hint}" if self.hint else head
        if self.status is Status.WARN and self.hint:
            return f"{head} — {self.hint}"
        return head


def _ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, Status.OK, detail)


def _warn(name: str, detail: str, hint: str = "") -> CheckResult:
    return CheckResult(name, Status.WARN, detail, hint)


def _fail(name: str, detail: str, hint: str) -> CheckResult:
    return CheckResult(name, Status.FAIL, detail, hint)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


PROBE_ENV = "GHL_DESKTOP_DOCTOR_PROBE"
PROBE_ARG_ENV = "GHL_DESKTOP_DOCTOR_PROBE_ARG"


def _self_command() -> list[str]:
    """This program's own ``doctor`` command: ``python -m ghl_desktop doctor``, or the bundled
    executable in a PyInstaller build (where ``sys.executable -c`` is not a Python interpreter)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "doctor"]
    return [sys.executable, "-m", "ghl_desktop", "doctor"]


def _run_probe(kind: str, arg: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one risky probe in a child process (a missing library aborts a process, it does not raise)."""
    child_env = dict(os.environ if env is None else env)
    child_env[PROBE_ENV] = kind
    child_env[PROBE_ARG_ENV] = arg
    child_env["GHL_DESKTOP_NO_REEXEC"] = "1"
    return subprocess.run(
        _self_command(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=child_env, check=False
    )


def _probe_main(kind: str, arg: str) -> int:
    """The child side of :func:`_run_probe`: print one result line, exit 0 on success."""
    if kind == "qt":
        from PySide6.QtGui import QGuiApplication

        app = QGuiApplication(sys.argv[:1])
        print(app.platformName())
        return 0
    if kind == "neonize":
        import ctypes

        lib = ctypes.CDLL(arg)
        lib.GetVersion.restype = ctypes.c_char_p
        print(lib.GetVersion().decode())
        return 0
    print(f"unknown doctor probe {kind!r}", file=sys.stderr)
    return 2


# --- checks -------------------------------------------------------------------------------------


def check_python(settings: Settings) -> CheckResult:
    version = platform.python_version()
    if sys.version_info < MIN_PYTHON:
        return _fail("Python", f"{version} is too old", "install Python 3.11 or newer and recreate .venv")
    return _ok("Python", f"{version} ({sys.executable})")


def check_qt(settings: Settings) -> CheckResult:
    """Create a QGuiApplication in a child: a missing xcb library aborts the process, not raises."""
    name = "Qt platform plugin"
    if importlib.util.find_spec("PySide6") is None:
        return _fail(name, "PySide6 is not installed", "run `make run` (or pip install -e .) to install it")
    env = dict(os.environ)
    requested = env.get("QT_QPA_PLATFORM", "")
    has_display = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")) or sys.platform in ("win32", "darwin")
    if not requested and not has_display:
        env["QT_QPA_PLATFORM"] = requested = "offscreen"
    try:
        proc = _run_probe("qt", env=env)
    except subprocess.TimeoutExpired:
        return _fail(
            name,
            f"creating a QGuiApplication hung for {SUBPROCESS_TIMEOUT:.0f} s",
            "check DISPLAY / WAYLAND_DISPLAY point at a running display",
        )
    if proc.returncode == 0:
        loaded = _last_line(proc.stdout)
        note = (
            " (no display: only headless rendering is possible)" if requested == "offscreen" and not has_display else ""
        )
        return _ok(name, f"'{loaded}' loads{note}")
    reason = _last_line(proc.stderr)
    return _fail(
        name,
        f"'{requested or 'default'}' does not load: {reason}",
        "install Qt's system libraries (`make sysdeps`; on Debian: libxcb-cursor0 libxcb-icccm4 "
        "libxcb-keysyms1 libxkbcommon-x11-0 libegl1 libgl1); `QT_DEBUG_PLUGINS=1 ghl-desktop` shows the "
        "missing library",
    )


def neonize_library_path() -> tuple[Path | None, str]:
    """The Go library neonize will load, found WITHOUT importing neonize (its import may download)."""
    spec = importlib.util.find_spec("neonize")
    if spec is None or not spec.submodule_search_locations:
        return None, ""
    folder = Path(next(iter(spec.submodule_search_locations)))
    system = platform.system().lower()
    arch = {"aarch64": "arm64", "x86_64": "amd64"}.get(platform.machine().lower(), platform.machine().lower())
    ext = {"windows": "dll", "darwin": "dylib"}.get(system, "so")
    version = ""
    download = folder / "download.py"
    if download.exists():
        for line in download.read_text("utf-8", errors="replace").splitlines():
            if line.startswith("__GONEONIZE_VERSION__"):
                version = line.split("=", 1)[1].strip().strip("\"'")
                break
    return folder / f"neonize-{system}-{arch}.{ext}", version


def check_neonize(settings: Settings) -> CheckResult:
    name = "neonize library"
    path, expected = neonize_library_path()
    if path is None:
        return _fail(name, "the neonize package is not installed", "reinstall the app (pip install -e .)")
    if not path.exists():
        return _fail(
            name,
            f"{path.name} is missing next to the neonize package",
            "reinstall neonize==0.5.2 from its wheel (it ships the library); the app never downloads it at run time",
        )
    try:
        proc = _run_probe("neonize", str(path))
    except subprocess.TimeoutExpired:
        return _fail(name, f"loading {path.name} hung", "reinstall neonize==0.5.2")
    if proc.returncode != 0:
        return _fail(
            name,
            f"{path.name} does not load: {_last_line(proc.stderr)}",
            "reinstall neonize==0.5.2 for this platform (manylinux x86-64/aarch64, macOS 12+, Windows)",
        )
    loaded = _last_line(proc.stdout)
    if expected and loaded != expected:
        return _fail(
            name,
            f"{path.name} is version {loaded}, the Python package expects {expected}",
            "reinstall neonize==0.5.2 so library and package match",
        )
    return _ok(name, f"{path.name} {loaded} loads")


def check_libmagic(settings: Settings) -> CheckResult:
    name = "libmagic"
    try:
        import magic

        mime = magic.from_buffer(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", mime=True)
    except Exception as exc:  # ImportError, or the shared library / its database is missing
        return _fail(
            name,
            f"python-magic cannot use libmagic: {exc}",
            "install libmagic (Debian: apt-get install libmagic1; macOS: brew install libmagic)",
        )
    if mime != "application/pdf":
        return _fail(name, f"libmagic answers {mime!r} for a PDF", "reinstall libmagic and its database")
    return _ok(name, "file types are detected")


def check_ffmpeg(settings: Settings) -> CheckResult:
    name = "ffmpeg/ffprobe"
    found = {tool: shutil.which(tool) for tool in ("ffmpeg", "ffprobe")}
    missing = [tool for tool, where in found.items() if not where]
    if missing:
        return _warn(
            name,
            f"{', '.join(missing)} not on PATH",
            "voice notes and videos are passed on unconverted (Debian: apt-get install ffmpeg)",
        )
    return _ok(name, f"{found['ffmpeg']}, {found['ffprobe']}")


def check_data_dir(settings: Settings) -> CheckResult:
    name = "data dir writable"
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-", delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
    except OSError as exc:
        return _fail(
            name,
            f"{home}: {exc.strerror or exc}",
            "set GHL_DESKTOP_HOME to a folder you can write, or fix the permissions of this one",
        )
    return _ok(name, str(home))


def check_database(settings: Settings) -> CheckResult:
    name = "database migrates"
    url = settings.database_url
    shown = url.split("@")[-1] if "@" in url else url  # never print a password from a URL
    try:
        from ghl_desktop.adapters.storage import open_database
    except ImportError as exc:
        return _fail(name, f"the storage module is not available: {exc}", "reinstall the app")
    try:
        db = open_database(url, migrate=True)
    except Exception as exc:
        return _fail(
            name,
            f"{shown}: {type(exc).__name__}: {exc}",
            "check GHL_DESKTOP_DB_URL (or that the data dir is writable); a newer database than "
            "this app needs a newer app",
        )
    try:
        summary = db.check()
    except Exception as exc:
        return _fail(name, f"{shown}: {exc}", "start the app once, or check GHL_DESKTOP_DB_URL")
    finally:
        db.close()
    return _ok(name, f"{shown} ({summary})")


def check_secrets(settings: Settings) -> CheckResult:
    name = "secret store"
    from ghl_desktop.adapters.secrets import PASSPHRASE_ENV, probe_keyring, vault_path

    probe = probe_keyring()
    if probe.usable:
        return _ok(name, f"{probe.description} is usable")
    vault = vault_path(settings)
    if vault.exists():
        return _ok(name, f"no usable keyring ({probe.reason}); the encrypted vault {vault} is in use")
    return _warn(
        name,
        f"no usable keyring ({probe.reason})",
        f"secrets will go to an encrypted vault file {vault}; the window asks for its passphrase, "
        f"headless runs need {PASSPHRASE_ENV}",
    )


def check_credentials(settings: Settings) -> CheckResult:
    name = "HighLevel credentials"
    if settings.has_ghl_credentials:
        return _ok(name, f"client id {settings.client_id} and a client secret are configured")
    missing = [
        var
        for var, value in (("GHL_CLIENT_ID", settings.client_id), ("GHL_CLIENT_SECRET", settings.client_secret))
        if not value
    ]
    return _warn(
        name,
        f"{' and '.join(missing)} not set",
        "sandbox mode will be used; set them to connect real HighLevel accounts",
    )


CHECKS: tuple[Callable[[Settings], CheckResult], ...] = (
    check_python,
    check_qt,
    check_neonize,
    check_libmagic,
    check_ffmpeg,
    check_data_dir,
    check_database,
    check_secrets,
    check_credentials,
)


def run_checks(settings: Settings) -> list[CheckResult]:
    results = []
    for check in CHECKS:
        try:
            results.append(check(settings))
        except Exception as exc:  # a check must never take the doctor down
            label = check.__name__.removeprefix("check_")
            results.append(
                _fail(
                    label,
                    f"the check itself crashed: {type(exc).__name__}: {exc}",
                    "report this as a bug with the line above",
                )
            )
    return results


def run_doctor() -> int:
    """Print one line per check; 1 if any failed."""
    probe = os.environ.get(PROBE_ENV)
    if probe:
        return _probe_main(probe, os.environ.get(PROBE_ARG_ENV, ""))
    try:
        settings = load_settings()
    except Exception as exc:
        print(f"FAIL settings: {exc} — fix: correct the environment variable or settings.json it names")
        return 1
    failed = False
    for result in run_checks(settings):
        print(result.line(), flush=True)
        failed = failed or result.status is Status.FAIL
    return 1 if failed else 0


__all__ = ["CHECKS", "CheckResult", "Status", "run_checks", "run_doctor"]
