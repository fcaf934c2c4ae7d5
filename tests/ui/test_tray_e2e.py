"""The tray, the notices and close-to-tray in the real app (``run_window`` on the in-process sandbox
and simulated WhatsApp network): a blip that heals within the grace period raises nothing, a drop
that lasts does (once), a logout notifies at once and turns the tray icon to "down"; with a tray,
closing the window keeps bridging; the tray's Quit ends ``run_window`` normally (exit code 0)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from PySide6.QtCore import Qt

from ghl_desktop.config import load_settings
from ghl_desktop.sandbox.consent import ConsentClicker
from ghl_desktop.ui.lifecycle import Lifecycle
from ghl_desktop.ui.main import run_window
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.tray import Tray, TrayState
from tests.e2e.harness import FAST_RUNTIME
from tests.e2e.harness import eventually_on_loop as eventually
from tests.fakes.secrets import MemorySecretStore

LINKED = "+15550100088"
GRACE = 1.5  # seconds (GHL_DESKTOP_NOTIFY_GRACE_SECONDS); the default is 60


@asynccontextmanager
async def running_app(qtbot: Any, monkeypatch: pytest.MonkeyPatch,
                      tray: Tray) -> AsyncIterator[tuple[MainWindow, Lifecycle, asyncio.Task[str | None]]]:
    monkeypatch.setenv("GHL_DESKTOP_NOTIFY_GRACE_SECONDS", str(GRACE))
    windows: list[MainWindow] = []
    lifecycles: list[Lifecycle] = []

    def keep(window: MainWindow) -> None:
        qtbot.addWidget(window)
        window.confirm = lambda *_: True  # type: ignore[method-assign]
        windows.append(window)

    task = asyncio.get_running_loop().create_task(run_window(
        load_settings(), MemorySecretStore(), open_url=ConsentClicker(), runtime_options=FAST_RUNTIME,
        on_window=keep, tray=tray, on_lifecycle=lifecycles.append,
    ))
    try:
        await eventually(lambda: task.done() or (windows and windows[0].bridge_ready), 30)
        assert not task.done(), task.result()
        yield windows[0], lifecycles[0], task
    finally:
        if windows and not task.done():
            await asyncio.wait_for(windows[0].wait_shutdown(), 20)
        await asyncio.wait_for(task, 20)


async def post(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    answer = await http.post(url, json=body)
    assert answer.status_code < 300, answer.text


async def connect_and_link(qtbot: Any, window: MainWindow, http: httpx.AsyncClient) -> str:
    url = window.sandbox_url
    assert url
    qtbot.mouseClick(window.locations.connect_button, Qt.MouseButton.LeftButton)
    await eventually(lambda: window.locations.model.rowCount() == 1, 30)
    await post(http, f"{url}/_sandbox/phones", {"phone": LINKED, "name": "Front desk"})
    qtbot.mouseClick(window.numbers.link_button, Qt.MouseButton.LeftButton)
    await eventually(lambda: window.link.qr_view.code is not None, 20)
    await post(http, f"{url}/_sandbox/whatsapp/scan", {"qr": window.link.qr_view.code, "phone": LINKED})
    await eventually(lambda: [n.phone for n in window.cockpit.health.last.numbers if n.health.ok] == [LINKED], 20)
    return url


def notice_titles(lifecycle: Lifecycle) -> list[str]:
    return [s.notice.title for s in lifecycle.notices.shown]


@pytest.mark.asyncio
async def test_drops_notices_and_the_tray_icon_follow_health(qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tray = Tray(show_icon=False)
    async with running_app(qtbot, monkeypatch, tray) as (window, lifecycle, _), \
            httpx.AsyncClient(timeout=30) as http:
        url = await connect_and_link(qtbot, window, http)
        assert tray.state is TrayState.OK and tray.tooltip == "ghl-desktop — 1 number"
        # a disconnect that heals itself within the grace period: no notice at all
        await post(http, f"{url}/_sandbox/whatsapp/{LINKED}/drop", {"kind": "keepalive_lost"})
        await eventually(lambda: tray.state is TrayState.ATTENTION, 10)
        await post(http, f"{url}/_sandbox/whatsapp/{LINKED}/drop", {"kind": "keepalive_restored"})
        await eventually(lambda: tray.state is TrayState.OK, 10)
        await asyncio.sleep(GRACE * 2)
        assert notice_titles(lifecycle) == [] and window.notices_shown == []
        # the phone logs us out: a notice at once, the icon says "down", the menu lists the number
        await post(http, f"{url}/_sandbox/whatsapp/{LINKED}/drop", {"kind": "logout"})
        await eventually(lambda: notice_titles(lifecycle), 10)
        assert notice_titles(lifecycle) == [f"{LINKED} was logged out"]
        assert tray.state is TrayState.DOWN
        assert tray.tooltip == "ghl-desktop — 1 number · 1 down"
        entry = next(t for t in tray.action_texts() if t.startswith(LINKED))
        assert "Logged out" in entry
        # clicking the tray entry opens the window on that row
        window.hide()
        tray.trigger(LINKED)
        assert window.isVisible()
        await asyncio.sleep(GRACE)
        assert len(notice_titles(lifecycle)) == 1  # never twice


@pytest.mark.asyncio
async def test_with_a_tray_closing_keeps_bridging_and_tray_quit_ends_normally(
        qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    tray = Tray(show_icon=True)  # the decision code; a tray host is not needed for it
    async with running_app(qtbot, monkeypatch, tray) as (window, lifecycle, task), \
            httpx.AsyncClient(timeout=30) as http:
        assert tray.available
        window.close()
        await eventually(lambda: not window.isVisible(), 5)
        assert not window.shutdown_done and not window.app.closed
        await eventually(lambda: notice_titles(lifecycle), 10)
        assert notice_titles(lifecycle) == ["ghl-desktop is still running"]
        # still bridging: the webhook endpoint answers, the sandbox location can still be connected
        runtime = window.runtime
        assert runtime is not None
        health = await http.get(f"{runtime.webhooks.url}/healthz")
        assert health.status_code == 200
        await connect_and_link(qtbot, window, http)
        asked: list[int] = []
        lifecycle.confirm = lambda live: asked.append(live) is None  # "Quit anyway?" → yes
        tray.trigger("Quit")
        assert asked == [1]  # one number is live: the question was asked
        assert await asyncio.wait_for(task, 30) is None  # run_gui turns None into exit code 0
        assert window.app.closed
