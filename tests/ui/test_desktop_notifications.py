"""Notices reach the desktop's notification service over D-Bus (org.freedesktop.Notifications'
Notify method), a click on one opens the window on the affected row, and without a service the tray
balloon takes over.

- a recorder service that owns the name on a private bus checks the exact Notify call and clicks;
- a REAL notification daemon (dunst, on a private X display and bus) receives the notice and keeps it
  in its history (``dunstctl history``).
"""

# no ``from __future__ import annotations``: dbus-fast reads the D-Bus signatures from the annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, method, signal

from ghl_desktop.services.health import HealthLevel, NoticeRequested
from ghl_desktop.ui.notifications import DesktopNotifications
from ghl_desktop.ui.notify import NoticeCenter
from tests.ui.dbus_session import need, private_display, private_session_bus, wait_for

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"

LOGGED_OUT = NoticeRequested("session:s1:logged_out", "+15550100001 was logged out",
                             "+15550100001 was logged out of WhatsApp on the phone. Press Link again in ghl-desktop.",
                             HealthLevel.NEEDS_YOU, "s1", "loc-1")


class Recorder(ServiceInterface):  # type: ignore[misc]
    """A minimal org.freedesktop.Notifications server that remembers every Notify call."""

    def __init__(self) -> None:
        super().__init__(NAME)
        self.calls: list[dict[str, object]] = []

    @method()
    def Notify(self, app_name: "s", replaces_id: "u", app_icon: "s", summary: "s", body: "s",  # type: ignore[valid-type]  # noqa: F821
               actions: "as", hints: "a{sv}", expire_timeout: "i") -> "u":  # type: ignore[valid-type]  # noqa: F821, F722
        self.calls.append({"app_name": app_name, "summary": summary, "body": body, "actions": list(actions),
                           "urgency": hints["urgency"].value if "urgency" in hints else None})
        return len(self.calls)

    @method()
    def GetCapabilities(self) -> "as":  # type: ignore[valid-type]  # noqa: F722
        return ["actions", "body"]

    @method()
    def GetServerInformation(self) -> "ssss":  # type: ignore[valid-type]  # noqa: F821
        return ["recorder", "ghl-desktop tests", "1", "1.2"]

    @method()
    def CloseNotification(self, notification_id: "u") -> None:  # type: ignore[valid-type]  # noqa: F821
        return None

    @signal()
    def ActionInvoked(self, notification_id: int, action_key: str) -> "us":  # type: ignore[valid-type]  # noqa: F821
        return [notification_id, action_key]

    @signal()
    def NotificationClosed(self, notification_id: int, reason: int) -> "uu":  # type: ignore[valid-type]  # noqa: F821
        return [notification_id, reason]


@pytest.fixture
def session_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with private_session_bus(tmp_path / "bus") as address:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield address


async def wait_until(check: object, seconds: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if callable(check) and check():
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.asyncio
async def test_a_notice_is_sent_with_notify_and_a_click_reveals_its_row(session_bus: str, qapp: object) -> None:
    bus = await MessageBus().connect()
    recorder = Recorder()
    bus.export(PATH, recorder)
    await bus.request_name(NAME)
    balloons: list[tuple[str, str, bool]] = []
    revealed: list[tuple[str | None, str | None]] = []
    notifications = DesktopNotifications()
    center = NoticeCenter(notifications, balloon=lambda *a: balloons.append(a) is None,
                          reveal=lambda s, loc: revealed.append((s, loc)))
    try:
        center.add(LOGGED_OUT)
        center.flush()
        await center.drain()
        [call] = recorder.calls
        assert call["app_name"] == "ghl-desktop"
        assert (call["summary"], call["body"]) == (LOGGED_OUT.title, LOGGED_OUT.text)
        assert "default" in call["actions"]  # clickable
        assert call["urgency"] == 2  # needs you: critical, stays until dismissed
        assert [s.channel for s in center.shown] == ["service"] and balloons == []
        # the user clicks the notification: the daemon sends ActionInvoked(id, "default")
        recorder.ActionInvoked(1, "default")
        assert await wait_until(lambda: revealed == [("s1", "loc-1")])
    finally:
        await notifications.close()
        bus.disconnect()


@pytest.mark.asyncio
async def test_without_a_notification_service_the_tray_balloon_takes_over(session_bus: str, qapp: object) -> None:
    balloons: list[tuple[str, str, bool]] = []
    notifications = DesktopNotifications()
    center = NoticeCenter(notifications, balloon=lambda *a: balloons.append(a) is None)
    try:
        center.add(LOGGED_OUT)
        center.flush()
        await center.drain()
        assert [s.channel for s in center.shown] == ["balloon"]
        assert balloons == [(LOGGED_OUT.title, LOGGED_OUT.text, True)]
    finally:
        await notifications.close()


def dunstctl(env: dict[str, str], *args: str) -> str:
    return subprocess.run([need("dunstctl"), *args], env=env, capture_output=True, text=True, timeout=10,
                          check=True).stdout


@pytest.mark.asyncio
async def test_a_real_notification_daemon_receives_the_notice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              qapp: object) -> None:
    dunst = need("dunst")
    need("dunstctl")
    with private_display() as display, private_session_bus(tmp_path / "bus") as address:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        env = {**os.environ, "DISPLAY": display, "DBUS_SESSION_BUS_ADDRESS": address, "HOME": str(tmp_path)}
        config = tmp_path / "dunstrc"
        config.write_text("[global]\n    history_length = 20\n", "utf-8")
        daemon = subprocess.Popen([dunst, "-config", str(config)], env=env,  # noqa: ASYNC220 (a daemon)
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        notifications = DesktopNotifications()
        try:
            def dunst_is_up() -> bool:
                try:
                    dunstctl(env, "count")
                    return True
                except subprocess.CalledProcessError:
                    return False

            assert await asyncio.to_thread(wait_for, dunst_is_up, 15), "dunst did not take the bus name"
            revealed: list[tuple[str | None, str | None]] = []
            center = NoticeCenter(notifications, balloon=lambda *a: False,
                                  reveal=lambda s, loc: revealed.append((s, loc)))
            center.add(LOGGED_OUT)
            center.flush()
            await center.drain()
            assert [s.channel for s in center.shown] == ["service"]
            assert "Currently displayed: 1" in " ".join(dunstctl(env, "count").split())
            # a click on it (dunst's "do action" on the shown notification) opens the row
            await asyncio.to_thread(dunstctl, env, "action", "0")
            assert await wait_until(lambda: revealed == [("s1", "loc-1")])
            await asyncio.to_thread(dunstctl, env, "close-all")
            history = json.loads(await asyncio.to_thread(dunstctl, env, "history"))
            summaries = [entry["summary"]["data"] for entry in history["data"][0]]
            bodies = [entry["body"]["data"] for entry in history["data"][0]]
            apps = [entry["appname"]["data"] for entry in history["data"][0]]
            assert summaries == [LOGGED_OUT.title] and bodies == [LOGGED_OUT.text] and apps == ["ghl-desktop"]
        finally:
            await notifications.close()
            daemon.terminate()
            daemon.wait(10)
