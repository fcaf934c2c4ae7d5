"""How the app lives on the desktop: one instance per data dir, close-to-tray, Quit that asks, the
window's geometry and splitters remembered, start at login, and sandbox secrets without a passphrase.

- **Single instance** (:class:`~ghl_desktop.ui.single_instance.SingleInstance`, a light module of its
  own): a ``QLockFile`` in the data dir decides who is first; a second launch on the same data dir
  tells the first one "show" over a ``QLocalSocket`` and exits 0 — before it unlocks any secret (no
  passphrase prompt) and before it starts any server (no "[Errno 98] address already in use").
  :class:`Lifecycle` raises the window when told.
- **Close to tray** (:class:`Lifecycle`): with a system tray, closing the window hides it and the
  bridge goes on; the first time, a notice says so. Quit (tray or menu) asks when numbers are live.
- **Window state** (:class:`UiState`): geometry and splitter sizes in ``<data dir>/ui-state.json``
  (non-secret UI state), saved when the window hides or quits and restored at start.
- **Start at login** (:func:`apply_start_at_login`): an XDG autostart ``.desktop`` file on Linux
  (``$XDG_CONFIG_HOME/autostart``), a LaunchAgent plist on macOS, the HKCU ``Run`` key on Windows.
- **Sandbox secrets** (:func:`~ghl_desktop.sandbox_mode.sandbox_secret_store`): sandbox mode keeps its
  (sandbox) tokens in ``<data dir>/sandbox/secrets.vault`` under a fixed key — apart from the real
  keyring/vault, and with no passphrase to ask.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import plistlib
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QObject

from ghl_desktop.config import Settings
from ghl_desktop.core.models import SessionState
from ghl_desktop.sandbox_mode import SANDBOX_VAULT_KEY, SandboxSecretStore, sandbox_secret_store
from ghl_desktop.ui.single_instance import HAND_OFF_SECONDS, SingleInstance, instance_name

log = logging.getLogger("ghl.ui.lifecycle")

APP_NAME = "ghl-desktop"


# --- window state ------------------------------------------------------------------------------


class UiState:
    """Non-secret UI state in ``<data dir>/ui-state.json``: geometry, splitter sizes, one-time hints."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "ui-state.json"
        self.values: dict[str, Any] = {}
        try:
            loaded = json.loads(self.path.read_text("utf-8"))
            if isinstance(loaded, dict):
                self.values = loaded
        except (OSError, ValueError):
            self.values = {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.values, indent=2, sort_keys=True), "utf-8")
        tmp.replace(self.path)

    def remember_window(self, window: Any) -> None:
        self.values["geometry"] = base64.b64encode(bytes(window.saveGeometry().data())).decode("ascii")
        self.values["splitters"] = {s.objectName(): list(s.sizes()) for s in window.splitters() if s.objectName()}
        self.save()

    def restore_window(self, window: Any) -> bool:
        """Geometry and splitter sizes as they were; False when nothing was stored."""
        restored = False
        geometry = self.values.get("geometry")
        if isinstance(geometry, str):
            try:
                restored = bool(window.restoreGeometry(QByteArray(base64.b64decode(geometry))))
            except ValueError:
                restored = False
        sizes = self.values.get("splitters")
        if isinstance(sizes, dict):
            for splitter in window.splitters():
                stored = sizes.get(splitter.objectName())
                if isinstance(stored, list) and len(stored) == splitter.count() and all(
                        isinstance(n, int) and n >= 0 for n in stored):
                    splitter.setSizes(stored)
                    restored = True
        return restored

    def once(self, hint: str) -> bool:
        """True the first time ``hint`` is asked for (persisted), False ever after."""
        told = self.values.setdefault("told", [])
        if hint in told:
            return False
        told.append(hint)
        self.save()
        return True


# --- start at login ----------------------------------------------------------------------------


def launch_command() -> list[str]:
    """How to start this app again: the bundle's executable, else ``ghl-desktop`` on PATH, else
    ``python -m ghl_desktop``."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    import shutil

    script = shutil.which(APP_NAME)
    if script:
        return [script]
    return [sys.executable, "-m", "ghl_desktop"]


def xdg_autostart_file(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    config = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(config) / "autostart" / f"{APP_NAME}.desktop"


def xdg_autostart_entry(command: list[str]) -> str:
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        f"Name={APP_NAME}",
        "Comment=Bridge WhatsApp numbers and HighLevel (starts in the tray)",
        f"Exec={shlex.join(command)}",
        f"Icon={APP_NAME}",
        "Terminal=false",
        "X-GNOME-Autostart-enabled=true",
        "",
    ])


def launch_agent_file(home: Path | None = None) -> Path:
    return (home or Path.home()) / "Library" / "LaunchAgents" / "com.ghl-desktop.app.plist"


def launch_agent_plist(command: list[str]) -> bytes:
    return plistlib.dumps({"Label": "com.ghl-desktop.app", "ProgramArguments": command, "RunAtLoad": True,
                           "ProcessType": "Interactive"})


WINDOWS_RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def windows_run_value(command: list[str]) -> str:
    import subprocess

    return subprocess.list2cmdline(command)


@dataclass(frozen=True)
class Autostart:
    """Where start-at-login lives on this platform (for the Settings text and tests)."""

    platform: str
    where: str


def apply_start_at_login(
    enabled: bool,
    *,
    platform: str | None = None,
    command: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    registry: Any = None,
) -> Autostart:
    """Write (or remove) this platform's start-at-login entry; idempotent."""
    plat = platform or sys.platform
    cmd = command or launch_command()
    if plat.startswith("win"):
        winreg = registry
        if winreg is None:
            import winreg  # type: ignore[import-not-found,no-redef,unused-ignore]
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, WINDOWS_RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
            if enabled:
                winreg.SetValueEx(key, APP_NAME, 0, winreg.REG_SZ, windows_run_value(cmd))
            else:
                try:
                    winreg.DeleteValue(key, APP_NAME)
                except FileNotFoundError:
                    pass
        return Autostart("windows", rf"HKCU\{WINDOWS_RUN_KEY}\{APP_NAME}")
    if plat == "darwin":
        path = launch_agent_file(home)
        _write_or_remove(path, launch_agent_plist(cmd) if enabled else None)
        return Autostart("macos", str(path))
    path = xdg_autostart_file(environ)
    _write_or_remove(path, xdg_autostart_entry(cmd).encode("utf-8") if enabled else None)
    return Autostart("linux", str(path))


def _write_or_remove(path: Path, content: bytes | None) -> None:
    if content is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    tmp.replace(path)


def store_setting(home: Path, key: str, value: Any) -> None:
    """Change one non-secret key of ``<data dir>/settings.json`` and nothing else (the running
    settings hold environment and sandbox values that must not be written there)."""
    path = Path(home) / "settings.json"
    try:
        values = json.loads(path.read_text("utf-8"))
        if not isinstance(values, dict):
            values = {}
    except (OSError, ValueError):
        values = {}
    values[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True), "utf-8")
    tmp.replace(path)


# --- sandbox secrets (sandbox_mode.py: shared with headless) ------------------------------------


def starts_in_sandbox(settings: Settings, sandbox_flag: bool) -> bool | None:
    """True: sandbox mode for sure (``--sandbox``, or no client ID); False: real mode for sure (ID and
    secret in the environment); None: it depends on a client secret in the secret store."""
    if sandbox_flag or not settings.client_id:
        return True
    if settings.client_secret:
        return False
    return None


# --- the running window ------------------------------------------------------------------------

_LIVE = frozenset({SessionState.CONNECTED, SessionState.CONNECTING, SessionState.RECONNECTING,
                   SessionState.PHONE_OFFLINE})


def live_numbers(sessions: list[Any]) -> int:
    return sum(1 for s in sessions if getattr(s, "state", None) in _LIVE)


ConfirmQuit = Callable[[int], bool]


def ask_quit(parent: Any) -> ConfirmQuit:
    def ask(live: int) -> bool:
        from PySide6.QtWidgets import QMessageBox

        numbers = f"{live} WhatsApp number{'s are' if live != 1 else ' is'}"
        answer = QMessageBox.question(
            parent, "Quit ghl-desktop?",
            f"{numbers} bridging right now. After Quit, messages wait (on the phones and in HighLevel) "
            "until ghl-desktop runs again.\n\nQuit anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    return ask


class Lifecycle(QObject):
    """Wires the window to the tray, the notice center, the health monitor and the UI state."""

    def __init__(
        self,
        window: Any,
        tray: Any,
        notices: Any,
        ui_state: UiState,
        *,
        confirm: ConfirmQuit | None = None,
        instance: SingleInstance | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.window = window
        self.tray = tray
        self.notices = notices
        self.ui_state = ui_state
        self.confirm: ConfirmQuit = confirm or ask_quit(window)
        self.instance = instance
        window.close_to_tray = lambda: bool(self.tray.available)
        window.confirm_quit = self.confirm_quit
        window.notice_sink = notices.add
        window.hidden_to_tray.connect(self._hidden)
        window.shutdown_finished.connect(self._finished)
        tray.reveal_requested.connect(lambda sid, lid: window.reveal(session_id=sid, location_id=lid))
        tray.pause_requested.connect(self._pause)
        tray.resume_requested.connect(self._resume)
        settings = getattr(getattr(window, "app", None), "settings", None)
        self.home: Path | None = getattr(settings, "home", None)
        tray.set_start_at_login(bool(getattr(settings, "start_at_login", False)))
        tray.start_at_login_toggled.connect(self.set_start_at_login)
        #: the last start-at-login entry written or removed (None: untouched)
        self.autostart: Autostart | None = None
        window.bridge.health_changed.connect(tray.apply_health)
        if instance is not None:
            instance.activated.connect(lambda: window.reveal())
        health = self._health()
        if health is not None:
            tray.apply_health(health.last)

    def _health(self) -> Any:
        return getattr(getattr(self.window, "cockpit", None), "health", None)

    def restore(self) -> bool:
        return self.ui_state.restore_window(self.window)

    def confirm_quit(self) -> bool:
        """Asked before Quit (tray or menu): only when numbers are live."""
        # the numbers the window shows (kept current by the session events): no database read here
        live = live_numbers(self.window.numbers.model.records())
        if live and not self.confirm(live):
            return False
        self._remember()
        return True

    def _remember(self) -> None:
        try:
            self.ui_state.remember_window(self.window)
        except OSError:
            log.warning("could not save the window's size and position", exc_info=True)

    def _hidden(self) -> None:
        self._remember()
        if self.ui_state.once("closed-to-tray"):
            self.notices.say("closed-to-tray", "ghl-desktop is still running",
                             "Bridging goes on in the background. Open the window from the tray icon; "
                             "Quit in its menu stops ghl-desktop.")

    def set_start_at_login(self, enabled: bool) -> None:
        """The tray's check box: write/remove the login entry and keep the choice in settings.json."""
        try:
            self.autostart = apply_start_at_login(enabled)
            if self.home is not None:
                store_setting(self.home, "start_at_login", enabled)
            log.info("start at login %s: %s", "on" if enabled else "off", self.autostart.where)
        except OSError as exc:
            log.warning("could not change start at login: %s", exc)
            self.tray.set_start_at_login(not enabled)

    def _pause(self) -> None:
        health = self._health()
        if health is not None:
            health.pause()

    def _resume(self) -> None:
        health = self._health()
        if health is not None:
            health.resume()

    def _finished(self) -> None:
        self.notices.stop()
        self.tray.hide()
        if self.instance is not None:
            self.instance.release()


__all__ = [
    "HAND_OFF_SECONDS",
    "SANDBOX_VAULT_KEY",
    "Autostart",
    "Lifecycle",
    "SandboxSecretStore",
    "SingleInstance",
    "UiState",
    "apply_start_at_login",
    "instance_name",
    "launch_agent_plist",
    "launch_command",
    "live_numbers",
    "sandbox_secret_store",
    "starts_in_sandbox",
    "store_setting",
    "xdg_autostart_entry",
    "xdg_autostart_file",
]
