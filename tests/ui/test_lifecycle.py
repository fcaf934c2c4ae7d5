"""The app's life on the desktop: one instance per data dir (two real processes), close to tray,
Quit that asks when numbers are live, geometry and splitters remembered, start at login, and sandbox
mode without any passphrase."""

from __future__ import annotations

import asyncio
import os
import plistlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.core.models import Location, SessionState, WhatsAppSession
from ghl_desktop.ui.lifecycle import (
    SANDBOX_VAULT_KEY,
    Lifecycle,
    SandboxSecretStore,
    SingleInstance,
    UiState,
    apply_start_at_login,
    instance_name,
    launch_agent_plist,
    live_numbers,
    windows_run_value,
    xdg_autostart_entry,
)
from ghl_desktop.ui.main import open_secrets
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.notify import NoticeCenter
from ghl_desktop.ui.tray import Tray

# --- helpers -----------------------------------------------------------------------------------


class Answers:
    """What the Quit question is answered (records how many live numbers it was asked about)."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[int] = []

    def __call__(self, live: int) -> bool:
        self.asked.append(live)
        return self.answer


def host_window(qtbot: Any, app: App, *, tray_shown: bool) -> tuple[MainWindow, Tray, NoticeCenter, Lifecycle]:
    tray = Tray(show_icon=tray_shown)
    window = MainWindow(app, tray=tray)
    qtbot.addWidget(window)
    notices = NoticeCenter(None, balloon=lambda *a: False, parent=window)
    lifecycle = Lifecycle(window, tray, notices, UiState(app.settings.home), confirm=Answers(True), parent=window)
    # the window's first reads (off the loop thread) land before the test acts, as they do long before a user can
    asyncio.get_event_loop().run_until_complete(asyncio.wait_for(window.wait_idle(), 30))
    return window, tray, notices, lifecycle


def shut(qloop: asyncio.AbstractEventLoop, window: MainWindow) -> None:
    if not window.shutdown_done:
        qloop.run_until_complete(asyncio.wait_for(window.wait_shutdown(), 30))


def shutting_down(window: MainWindow) -> bool:
    """The full shutdown was started (by close() or Quit), not just a hide."""
    return window._shutdown_task is not None or window.shutdown_done


def add_live_number(app: App) -> None:
    app.db.locations.upsert(Location(id="L1", name="Dental Co"))
    app.db.sessions.create(WhatsAppSession(id="s1", location_id="L1", state=SessionState.CONNECTED,
                                           store_path="/tmp/s1", phone="+15550100001"))


# --- close to tray, Quit --------------------------------------------------------------------------


def test_with_a_tray_closing_hides_the_window_and_says_so_once(qtbot, qloop, app: App) -> None:  # type: ignore[no-untyped-def]
    window, tray, notices, _ = host_window(qtbot, app, tray_shown=True)
    assert tray.available
    window.show()
    qtbot.waitExposed(window)
    with qtbot.waitSignal(window.hidden_to_tray):
        window.close()
    assert not window.isVisible() and not window.shutdown_done and not app.closed
    [said] = notices.shown
    assert said.notice.title == "ghl-desktop is still running"
    window.reveal()
    assert window.isVisible()
    with qtbot.waitSignal(window.hidden_to_tray):
        window.close()
    assert len(notices.shown) == 1  # once
    shut(qloop, window)


def test_without_a_tray_closing_quits(qtbot, qloop, app: App) -> None:  # type: ignore[no-untyped-def]
    window, tray, _, _ = host_window(qtbot, app, tray_shown=False)
    assert not tray.available
    window.show()
    window.close()
    assert shutting_down(window)
    shut(qloop, window)
    assert app.closed


def test_quit_asks_when_numbers_are_live_and_a_no_keeps_running(qtbot, qloop, app: App) -> None:  # type: ignore[no-untyped-def]
    add_live_number(app)
    window, tray, _, lifecycle = host_window(qtbot, app, tray_shown=True)
    answers = Answers(False)
    lifecycle.confirm = answers
    window.show()
    tray.trigger("Quit")
    assert answers.asked == [1] and not shutting_down(window) and not app.closed
    answers.answer = True
    tray.trigger("Quit")
    assert answers.asked == [1, 1] and shutting_down(window)
    shut(qloop, window)
    assert app.closed


def test_the_menus_quit_asks_too(qtbot, qloop, app: App) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtGui import QAction

    add_live_number(app)
    window, _, _, lifecycle = host_window(qtbot, app, tray_shown=True)
    answers = Answers(False)
    lifecycle.confirm = answers
    [quit_action] = [a for a in window.findChildren(QAction) if a.text().replace("&", "") == "Quit"]
    quit_action.trigger()
    assert answers.asked == [1] and not shutting_down(window)
    answers.answer = True
    quit_action.trigger()
    assert shutting_down(window)
    shut(qloop, window)


def test_quit_does_not_ask_when_nothing_is_live(qtbot, qloop, app: App) -> None:  # type: ignore[no-untyped-def]
    window, tray, _, lifecycle = host_window(qtbot, app, tray_shown=True)
    answers = Answers(False)
    lifecycle.confirm = answers
    tray.trigger("Quit")
    assert answers.asked == [] and shutting_down(window)
    shut(qloop, window)


def test_live_numbers_counts_the_states_that_bridge() -> None:
    def s(state: SessionState) -> WhatsAppSession:
        return WhatsAppSession(id=str(state), location_id="L", state=state, store_path="x")

    assert live_numbers([s(SessionState.CONNECTED), s(SessionState.RECONNECTING), s(SessionState.LOGGED_OUT),
                         s(SessionState.WAITING_FOR_SCAN)]) == 2


def test_tray_entries_reveal_and_pause_reaches_the_monitor(qtbot, qloop, app: App) -> None:  # type: ignore[no-untyped-def]
    add_live_number(app)
    app.db.sessions.set_state("s1", SessionState.LOGGED_OUT)
    window, tray, _, _ = host_window(qtbot, app, tray_shown=False)
    tray.apply_health(window.cockpit.health.snapshot)
    window.hide()
    tray.trigger("+15550100001")
    assert window.isVisible()
    tray.trigger("Pause bridging")
    assert window.cockpit.health.paused and tray.paused
    assert "paused" in tray.tooltip
    tray.trigger("Resume bridging")
    assert not window.cockpit.health.paused
    shut(qloop, window)


# --- geometry -------------------------------------------------------------------------------------


def test_geometry_and_splitters_are_restored(qtbot, qloop, app: App) -> None:  # type: ignore[no-untyped-def]
    window, _, _, _ = host_window(qtbot, app, tray_shown=True)
    window.show()
    qtbot.waitExposed(window)
    window.resize(1024, 660)  # fits the offscreen screen: restoreGeometry keeps a window on screen
    QApplication.processEvents()
    first = window.splitters()[0]
    total = sum(first.sizes())
    first.setSizes([total // 4, total - total // 4])
    wanted_sizes = {s.objectName(): s.sizes() for s in window.splitters()}
    with qtbot.waitSignal(window.hidden_to_tray):
        window.close()  # remembered when hidden
    stored = UiState(app.settings.home)
    assert set(stored.values["splitters"]) == set(wanted_sizes)
    again, _, _, lifecycle2 = host_window(qtbot, app, tray_shown=True)
    assert again.size().height() != 660  # a new window starts at its default size…
    assert lifecycle2.restore()
    again.show()
    qtbot.waitExposed(again)
    QApplication.processEvents()
    assert (again.width(), again.height()) == (1024, 660)  # …and is put back as it was
    assert {s.objectName(): s.sizes() for s in again.splitters()}[first.objectName()] == wanted_sizes[
        first.objectName()]
    shut(qloop, again)
    shut(qloop, window)


def test_a_damaged_state_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ui-state.json").write_text("{not json", "utf-8")
    assert UiState(tmp_path).values == {}


# --- start at login -------------------------------------------------------------------------------


def test_linux_autostart_file_is_written_and_removed(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "HOME": str(tmp_path)}
    where = apply_start_at_login(True, platform="linux", command=["/opt/ghl desktop/ghl-desktop"], environ=env)
    path = tmp_path / "cfg" / "autostart" / "ghl-desktop.desktop"
    assert where.where == str(path)
    text = path.read_text("utf-8")
    assert text.startswith("[Desktop Entry]\n") and "Type=Application\n" in text
    assert "Exec='/opt/ghl desktop/ghl-desktop'\n" in text  # quoted: the path has a space
    assert "X-GNOME-Autostart-enabled=true" in text
    apply_start_at_login(True, platform="linux", command=["ghl-desktop"], environ=env)  # idempotent
    assert "Exec=ghl-desktop\n" in path.read_text("utf-8")
    apply_start_at_login(False, platform="linux", environ=env)
    assert not path.exists()
    apply_start_at_login(False, platform="linux", environ=env)  # removing twice is fine


def test_linux_autostart_defaults_to_home_config(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    apply_start_at_login(True, platform="linux", command=["ghl-desktop"], environ=env)
    assert (tmp_path / ".config" / "autostart" / "ghl-desktop.desktop").exists()


def test_macos_launch_agent_plist(tmp_path: Path) -> None:
    where = apply_start_at_login(True, platform="darwin", command=["/Applications/ghl-desktop.app/Contents/MacOS/x"],
                                 home=tmp_path)
    path = tmp_path / "Library" / "LaunchAgents" / "com.ghl-desktop.app.plist"
    assert where.where == str(path)
    plist = plistlib.loads(path.read_bytes())
    assert plist == plistlib.loads(launch_agent_plist(["/Applications/ghl-desktop.app/Contents/MacOS/x"]))
    assert plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == ["/Applications/ghl-desktop.app/Contents/MacOS/x"]
    apply_start_at_login(False, platform="darwin", home=tmp_path)
    assert not path.exists()


def test_windows_run_value_quotes_the_path() -> None:
    assert windows_run_value([r"C:\Program Files\ghl-desktop\ghl-desktop.exe"]) == (
        r'"C:\Program Files\ghl-desktop\ghl-desktop.exe"')
    assert xdg_autostart_entry(["a", "b c"]).count("Exec=a 'b c'") == 1


def test_the_tray_check_box_writes_the_login_entry_and_the_setting(qtbot, qloop, app: App, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    entry = tmp_path / "xdg" / "autostart" / "ghl-desktop.desktop"
    (app.settings.home / "settings.json").write_text('{"webhook_port": 9999}', "utf-8")
    window, tray, _, lifecycle = host_window(qtbot, app, tray_shown=False)
    assert not tray.start_at_login
    tray.trigger("Start at login")
    assert tray.start_at_login and entry.exists() and "Exec=" in entry.read_text("utf-8")
    stored = load_settings()
    assert stored.start_at_login is True and stored.webhook_port == 9999  # the other keys are kept
    assert lifecycle.autostart is not None and lifecycle.autostart.where == str(entry)
    tray.trigger("Start at login")
    assert not entry.exists() and load_settings().start_at_login is False
    shut(qloop, window)


def test_the_start_at_login_setting_has_an_environment_variable(tmp_path: Path) -> None:
    env = {"GHL_DESKTOP_HOME": str(tmp_path)}
    assert load_settings(env).start_at_login is False
    assert load_settings({**env, "GHL_DESKTOP_START_AT_LOGIN": "1"}).start_at_login is True


# --- sandbox secrets --------------------------------------------------------------------------


def test_sandbox_mode_never_asks_for_a_passphrase(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import keyring
    from keyring.backends.fail import Keyring as NoKeyring

    def no_dialog(path: Path, new: bool, error: str | None) -> str | None:
        raise AssertionError("sandbox mode asked for a passphrase")

    keyring.set_keyring(NoKeyring())
    settings = load_settings()
    for flag in (True, False):  # --sandbox, or no credentials at all
        secrets, sandbox = open_secrets(settings, flag, ask=no_dialog)
        assert sandbox is True and isinstance(secrets, SandboxSecretStore)
    secrets.set("oauth:loc", "sandbox-token")
    assert (settings.home / "sandbox" / "secrets.vault").exists()
    assert not (settings.home / "secrets.vault").exists()  # the real vault is not touched
    assert b"sandbox-token" not in (settings.home / "sandbox" / "secrets.vault").read_bytes()
    again, _ = open_secrets(settings, True, ask=no_dialog)
    assert again is not None and again.get("oauth:loc") == "sandbox-token"
    assert SANDBOX_VAULT_KEY  # a fixed key: no one is asked


# --- single instance: two real processes ----------------------------------------------------------


def test_instance_names_follow_the_data_dir(tmp_path: Path) -> None:
    assert instance_name(tmp_path / "a") == instance_name(tmp_path / "a" / ".." / "a")
    assert instance_name(tmp_path / "a") != instance_name(tmp_path / "b")


def test_a_second_instance_in_process_hands_off(qtbot, qapp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = SingleInstance(tmp_path)
    assert first.acquire()
    try:
        second = SingleInstance(tmp_path)
        assert not second.acquire()
        # the second launch's side runs in a process of its own (as a real second launch does)
        code = ("import sys; from pathlib import Path; from PySide6.QtCore import QCoreApplication; "
                "app = QCoreApplication([]); from ghl_desktop.ui.lifecycle import SingleInstance; "
                "sys.exit(0 if SingleInstance.hand_off(Path(sys.argv[1])) else 3)")
        with qtbot.waitSignal(first.activated, timeout=30000):
            client = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
        qtbot.waitUntil(lambda: client.poll() is not None, timeout=30000)
        assert client.returncode == 0 and first.activations == 1
        assert SingleInstance(tmp_path / "other").acquire()  # another data dir is another instance
    finally:
        first.release()
    assert SingleInstance(tmp_path).acquire()  # released: the next start is first again


def _gui_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GHL_", "PYTEST"))}
    env.update({
        "GHL_DESKTOP_HOME": str(home),
        "QT_QPA_PLATFORM": "offscreen",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",  # no usable keyring at all
        "GHL_DESKTOP_LOG_LEVEL": "INFO",
    })
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    return env


def _log_text(home: Path) -> str:
    path = home / "logs" / "ghl-desktop.log"
    return path.read_text("utf-8", errors="replace") if path.exists() else ""


def _wait_log(home: Path, needle: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if needle in _log_text(home):
            return
        if proc.poll() is not None:
            raise AssertionError(f"ghl-desktop exited ({proc.returncode}) before {needle!r}:\n{_log_text(home)}")
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} in the log:\n{_log_text(home)[-3000:]}")


@pytest.fixture
def first_instance(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    home = tmp_path / "data"
    # no --sandbox: no credentials on this machine make it sandbox mode (and the log must say so)
    proc = subprocess.Popen([sys.executable, "-m", "ghl_desktop"], env=_gui_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        yield proc, home
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_second_launch_raises_the_first_and_exits_0_without_a_passphrase(
        first_instance: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, home = first_instance
    # sandbox mode on a machine without a keyring: the window opens, no passphrase dialog (which
    # would block an offscreen process forever)
    _wait_log(home, "bridge running", proc)
    assert "starting (sandbox=True" in _log_text(home) and "sandbox=False" not in _log_text(home)
    # the second launch looks like real mode (a client ID, secret only in the vault): unlocking would
    # ask for a passphrase; it must hand off before that
    env = {**_gui_env(home), "GHL_CLIENT_ID": "real-client-id"}
    started = time.monotonic()
    second = subprocess.run([sys.executable, "-m", "ghl_desktop"], env=env, capture_output=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    assert second.returncode == 0, second.stderr.decode(errors="replace")
    assert b"already running" in second.stdout
    _wait_log(home, "a second launch asked for the window", proc, seconds=10)
    assert "address already in use" not in _log_text(home)
    assert proc.poll() is None  # the first one runs on
    print(f"second launch handed off and exited in {took:.2f} s")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    # the lock is free again: a new start on this data dir is the first one
    assert SingleInstance.hand_off(home, seconds=0.5) is False
