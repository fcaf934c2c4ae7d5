"""NoticeCenter: health notices go to the platform service (else the tray balloon), bursts are shown
together (one summary beyond MAX_SEPARATE), a click reveals the row. The D-Bus path itself is in
test_desktop_notifications.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ghl_desktop.services.health import HealthLevel, NoticeRequested
from ghl_desktop.ui.notify import MAX_SEPARATE, NoticeCenter


def notice(i: int, level: HealthLevel = HealthLevel.NEEDS_YOU) -> NoticeRequested:
    return NoticeRequested(f"session:s{i}:logged_out", f"+1555010000{i} was logged out", f"text {i}", level,
                           f"s{i}", "loc-1")


class Service:
    """Stands in for DesktopNotifications at its boundary (send → "service" / "none")."""

    def __init__(self, answer: str = "service") -> None:
        self.answer = answer
        self.sent: list[tuple[str, str, bool]] = []
        self.clicks: list[Callable[[], Any]] = []

    async def send(self, title: str, text: str, *, critical: bool = False,
                   on_clicked: Callable[[], Any] | None = None) -> str:
        self.sent.append((title, text, critical))
        if on_clicked is not None:
            self.clicks.append(on_clicked)
        return self.answer


@pytest.mark.asyncio
async def test_a_burst_of_few_notices_shows_each(qapp: object) -> None:
    service = Service()
    center = NoticeCenter(service)
    for i in range(MAX_SEPARATE):
        center.add(notice(i))
    assert service.sent == []  # collected until the burst window ends
    center.flush()
    await center.drain()
    assert [t for t, _, _ in service.sent] == [notice(i).title for i in range(MAX_SEPARATE)]
    assert all(critical for _, _, critical in service.sent)
    assert [s.channel for s in center.shown] == ["service"] * MAX_SEPARATE


@pytest.mark.asyncio
async def test_a_big_burst_becomes_one_summary(qapp: object) -> None:
    service = Service()
    center = NoticeCenter(service)
    for i in range(5):
        center.add(notice(i, HealthLevel.DEGRADED if i else HealthLevel.NEEDS_YOU))
    center.flush()
    await center.drain()
    [(title, text, critical)] = service.sent
    assert title == "5 problems need attention" and critical
    assert text.splitlines() == [f"• {notice(i).title}" for i in range(5)]


@pytest.mark.asyncio
async def test_the_burst_window_flushes_by_itself(qtbot, qapp: object) -> None:  # type: ignore[no-untyped-def]
    service = Service()
    center = NoticeCenter(service, window_ms=50)
    center.add(notice(1))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if center.shown:
            break
    assert [s.notice for s in center.shown] == [notice(1)]


@pytest.mark.asyncio
async def test_no_service_falls_back_to_the_balloon_and_clicks_reveal(qapp: object) -> None:
    balloons: list[tuple[str, str, bool]] = []
    revealed: list[tuple[str | None, str | None]] = []
    service = Service(answer="none")
    center = NoticeCenter(service, balloon=lambda *a: balloons.append(a) is None,
                          reveal=lambda s, loc: revealed.append((s, loc)))
    center.add(notice(7, HealthLevel.DEGRADED))
    center.flush()
    await center.drain()
    assert balloons == [(notice(7).title, "text 7", True)]
    assert [s.channel for s in center.shown] == ["balloon"]
    service.clicks[0]()
    assert revealed == [("s7", "loc-1")]


@pytest.mark.asyncio
async def test_without_service_or_tray_the_notice_is_still_recorded(qapp: object) -> None:
    center = NoticeCenter(None, balloon=lambda *a: False)
    center.say("tray", "ghl-desktop is still running", "Bridging goes on in the tray.")
    await center.drain()
    [shown] = center.shown
    assert shown.channel == "none" and shown.notice.title == "ghl-desktop is still running"
    center.stop()
    center.add(notice(1))
    center.flush()
    await center.drain()
    assert len(center.shown) == 1  # stopped: nothing more


def test_a_session_bus_is_needed_on_linux_only() -> None:
    from ghl_desktop.ui.notifications import session_bus_reachable

    assert not session_bus_reachable({}, "linux")
    assert session_bus_reachable({"DBUS_SESSION_BUS_ADDRESS": "unix:path=/x"}, "linux")
    assert session_bus_reachable({"DISPLAY": ":0"}, "linux")
    assert session_bus_reachable({}, "win32") and session_bus_reachable({}, "darwin")
