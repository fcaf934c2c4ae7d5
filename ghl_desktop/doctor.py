"""``ghl-desktop doctor``: check this machine, one line per check, a fix hint for each failure.

Output format (stable, scripts may grep it)::

    ok   <check>: <detail>
    warn <check>: <detail> — <what it means>
    FAIL <check>: <detail> — fix: <hint>

Exit code 1 when any check FAILed; warnings (no HighLevel credentials, no ffmpeg, vault instead of
keyring, HighLevel unreachable, no notification service or tray) do not fail. Checks that could crash
or hang the process (loading Qt's platform plugin, loading neonize's Go library, asking Qt for a
system tray) run in a subprocess with a timeout.

The HighLevel checks are the first-run wizard's (``ghl_desktop/services/setup_checks.py``): the
credentials are probed at the token endpoint with a deliberately invalid code (short timeout), the
provider ID's shape is checked, and the redirect URI to register is printed from the one place the
OAuth flow takes it from. The notification service is looked up on the D-Bus session bus
(``NameHasOwner("org.freedesktop.Notifications")``, then ``GetServerInformation`` for its name) with
jeepney — the pure-Python D-Bus library keyring already installs on Linux — and a 2-second timeout.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

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
    if kind == "tray":
        from PySide6.QtWidgets import QApplication, QSystemTrayIcon

        qapp = QApplication(sys.argv[:1])
        print(f"{qapp.platformName()} {'yes' if QSystemTrayIcon.isSystemTrayAvailable() else 'no'}")
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


#: below this much free space in the data dir, storing messages soon fails ("disk full")
MIN_FREE_BYTES = 100 * 1024 * 1024


def check_disk_space(settings: Settings) -> CheckResult:
    """Free space where the database and logs live (issue 10.8: a full disk stops message storage)."""
    import shutil

    name = "disk space"
    path = settings.home if settings.home.exists() else settings.home.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return _warn(name, f"{path}: {exc.strerror or exc}")
    shown = f"{free / (1024 * 1024):.0f} MB free in {path}"
    if free < MIN_FREE_BYTES:
        return _fail(name, f"disk full or nearly: {shown}",
                     "free some disk space; messages that cannot be stored wait (unacknowledged) until then")
    return _ok(name, shown)


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


def _stored_client_secret(settings: Settings) -> tuple[str | None, str]:
    """The client secret from the environment, else from the secret store (keyring, or the vault when
    its passphrase is in the environment); the second value says where it came from."""
    if settings.client_secret:
        return settings.client_secret, "GHL_CLIENT_SECRET"
    if not settings.client_id:
        return None, ""
    from ghl_desktop.adapters.secrets import open_secret_store
    from ghl_desktop.services.setup_checks import CLIENT_SECRET_KEY

    try:
        store = open_secret_store(settings)
        value = store.get(CLIENT_SECRET_KEY)
    except Exception as exc:  # VaultLocked, WrongPassphrase, a keyring error
        return None, f"the secret store cannot be read ({exc})"
    return value, store.description if value else ""


def _run_async(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when the caller runs an event loop."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="doctor-probe")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_credentials(settings: Settings) -> CheckResult:
    """Configured, and accepted by HighLevel's token endpoint (the first-run wizard's probe)."""
    name = "HighLevel credentials"
    secret, where = _stored_client_secret(settings)
    if not (settings.client_id and secret):
        missing = [var for var, value in (("GHL_CLIENT_ID", settings.client_id), ("GHL_CLIENT_SECRET", secret))
                   if not value]
        why = f" ({where})" if where and not secret else ""
        return _warn(
            name,
            f"{' and '.join(missing)} not set{why}",
            "sandbox mode will be used; set them (or run the window's setup) to connect real HighLevel accounts",
        )
    from ghl_desktop.services.setup_checks import Outcome, probe_credentials, registered_redirect_uri

    outcome = _run_async(probe_credentials(settings.api_base, settings.client_id or "", secret,
                                           redirect_uri=registered_redirect_uri(settings)))
    if outcome.outcome is Outcome.OK:
        return _ok(name, f"client id {settings.client_id} accepted by {settings.api_base} (token-endpoint probe)")
    if outcome.outcome is Outcome.UNREACHABLE:
        return _warn(name, f"client id {settings.client_id} could not be checked: {outcome.message}", outcome.hint)
    return _fail(name, f"client id {settings.client_id}: {outcome.message}", outcome.hint)


def check_provider_id(settings: Settings) -> CheckResult:
    name = "provider ID"
    from ghl_desktop.services.setup_checks import check_provider_id as shape

    if not settings.client_id:
        return _ok(name, "not needed in sandbox mode (the sandbox has its own)") if not settings.provider_id \
            else _ok(name, f"{settings.provider_id} (not checked: no client id)")
    outcome = shape(settings.provider_id)
    if outcome.ok:
        return _ok(name, f"{settings.provider_id.strip() if settings.provider_id else ''} (shape only: HighLevel "
                   "confirms it with the first inbound message)")
    return _fail(name, outcome.message.rstrip("."), outcome.hint + " and set GHL_PROVIDER_ID (or the window's setup)")


def check_redirect_uri(settings: Settings) -> CheckResult:
    name = "redirect URI"
    from ghl_desktop.services.setup_checks import SetupProgress, registered_redirect_uri

    uri = registered_redirect_uri(settings)
    progress = SetupProgress.load(settings.home / "setup.json")
    if progress.redirect_registered == uri:
        return _ok(name, f"{uri} (confirmed registered in the setup)")
    if progress.redirect_registered:
        return _warn(name, f"{uri}, but the setup confirmed {progress.redirect_registered}",
                     "the redirect port changed: register the new address in the marketplace app")
    return _ok(name, f"{uri} — register exactly this in the marketplace app (Advanced Settings → Auth)")


def _is_our_endpoint(host: str, port: int) -> bool:
    """Does a running ghl-desktop answer on this port? (its webhook endpoint's /healthz)"""
    import httpx

    shown = f"[{host}]" if ":" in host else host
    try:
        answer = httpx.get(f"http://{shown}:{port}/healthz", timeout=2.0)
        return answer.status_code == 200 and answer.json() == {"ok": True}
    except (httpx.HTTPError, ValueError):
        return False


def check_ports_free(settings: Settings) -> CheckResult:
    name = "OAuth/webhook ports free"
    from ghl_desktop.services.setup_checks import check_ports

    results = check_ports(settings)
    busy = [c for c in results if not c.free]
    listing = ", ".join(f"{c.what} {c.host}:{c.port}" for c in results)
    if not busy:
        return _ok(name, f"{listing} free")
    ours = [c for c in busy if c.what == "webhook endpoint" and _is_our_endpoint(c.host, c.port)]
    others = [c for c in busy if c not in ours]
    if not others:
        return _warn(name, f"{ours[0].host}:{ours[0].port} is in use by a running ghl-desktop",
                     "fine while the app runs; quit it first if you want to start another")
    text = ", ".join(f"{c.what} {c.host}:{c.port} ({c.detail})" for c in others)
    return _fail(
        name,
        f"in use: {text}",
        "close the program using it (`ss -ltnp` shows which), or choose another port: "
        "GHL_OAUTH_REDIRECT_PORT (then register the new redirect URI) / GHL_WEBHOOK_PORT (then point the "
        "tunnel at it)",
    )


NOTIFICATIONS_NAME = "org.freedesktop.Notifications"
DBUS_TIMEOUT = 2.0


def notification_service() -> tuple[bool | None, str]:
    """Linux: is ``org.freedesktop.Notifications`` owned on the session bus? ``(None, why)`` when the
    bus itself cannot be asked."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") and not Path(f"/run/user/{os.getuid()}/bus").exists():
        return None, "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)"
    try:
        from jeepney import DBusAddress, new_method_call
        from jeepney.bus_messages import message_bus
        from jeepney.io.blocking import open_dbus_connection
    except ImportError:
        return None, "jeepney is not installed, the session bus cannot be asked"
    try:
        conn = open_dbus_connection(bus="SESSION")
    except Exception as exc:
        return None, f"the D-Bus session bus does not answer ({exc})"
    try:
        owned = bool(conn.send_and_get_reply(message_bus.NameHasOwner(NOTIFICATIONS_NAME),
                                             timeout=DBUS_TIMEOUT).body[0])
        if not owned:
            names = conn.send_and_get_reply(message_bus.ListActivatableNames(), timeout=DBUS_TIMEOUT).body[0]
            if NOTIFICATIONS_NAME in names:
                return True, f"{NOTIFICATIONS_NAME} is D-Bus activatable (starts on the first notice)"
            return False, f"nothing owns {NOTIFICATIONS_NAME} on the session bus"
        address = DBusAddress("/org/freedesktop/Notifications", bus_name=NOTIFICATIONS_NAME,
                              interface=NOTIFICATIONS_NAME)
        try:
            info = conn.send_and_get_reply(new_method_call(address, "GetServerInformation"),
                                           timeout=DBUS_TIMEOUT).body
            who = f"{info[0]} {info[2]}".strip() if len(info) >= 3 else "a notification daemon"
        except Exception:
            who = "a notification daemon"
        return True, f"{NOTIFICATIONS_NAME} is provided by {who}"
    except Exception as exc:
        return None, f"asking the session bus failed ({exc})"
    finally:
        conn.close()


def _system_tray() -> tuple[bool | None, str]:
    env = dict(os.environ)
    has_display = bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")) or sys.platform in ("win32", "darwin")
    if not env.get("QT_QPA_PLATFORM") and not has_display:
        return False, "no display, so no system tray"
    try:
        proc = _run_probe("tray", env=env)
    except subprocess.TimeoutExpired:
        return None, "asking Qt for a system tray hung"
    if proc.returncode != 0:
        return None, f"Qt could not start to look for a tray: {_last_line(proc.stderr)}"
    platform_name, _, available = _last_line(proc.stdout).rpartition(" ")
    if available == "yes":
        return True, "a system tray is available"
    return False, f"no system tray on the '{platform_name}' platform"


def check_notifications(settings: Settings) -> CheckResult:
    name = "notification service / tray"
    if sys.platform.startswith("linux"):
        service_ok, service_text = notification_service()
    else:
        service_ok, service_text = True, "the platform's notification center is used"
    tray_ok, tray_text = _system_tray()
    detail = f"{service_text}; {tray_text}"
    if service_ok and tray_ok:
        return _ok(name, detail)
    hints = []
    if not service_ok:
        hints.append("notices fall back to tray balloons that vanish: run a notification daemon (your desktop's, "
                     "or dunst / xfce4-notifyd) on the session bus")
    if not tray_ok:
        hints.append("without a tray, closing the window quits the app: use a desktop with a system tray "
                     "(GNOME needs the AppIndicator extension)")
    return _warn(name, detail, "; ".join(hints))


CHECKS: tuple[Callable[[Settings], CheckResult], ...] = (
    check_python,
    check_qt,
    check_neonize,
    check_libmagic,
    check_ffmpeg,
    check_data_dir,
    check_disk_space,
    check_database,
    check_secrets,
    check_credentials,
    check_provider_id,
    check_redirect_uri,
    check_ports_free,
    check_notifications,
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
