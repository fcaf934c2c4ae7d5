"""The window as the product, against the REAL sandbox and simulated WhatsApp network in-process:
the same ``run_window`` that ``ghl-desktop`` runs, on a fresh data dir with no credentials (so it
lands in sandbox mode), driven by clicks. The browser is replaced by ConsentClicker (an HTTP client
that clicks a location on the sandbox consent page); phones are the sandbox's simulated phones.

No worker threads (the simulated transport needs none); async tests poll with asyncio.sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from PySide6.QtCore import Qt

from ghl_desktop.adapters.ghl.rate import RateLimitConfig, RateScheduler
from ghl_desktop.config import load_settings
from ghl_desktop.core.models import LocationState, MessageStatus
from ghl_desktop.sandbox.consent import ConsentClicker
from ghl_desktop.services.bridge import MessageLogged
from ghl_desktop.ui.main import run_window
from ghl_desktop.ui.main_window import MainWindow
from tests.e2e.harness import FAST_RUNTIME, bridge_env, eventually
from tests.fakes.secrets import MemorySecretStore

LINKED = "+15550100077"
ALICE = "+4915112345678"


def texts(model: Any, column: int) -> list[str]:
    return [model.index(row, column).data() for row in range(model.rowCount())]


@asynccontextmanager
async def gui(qtbot: Any, opener: Any = None) -> AsyncIterator[MainWindow]:
    """``run_window`` as ``ghl-desktop`` runs it, on the test's empty data dir (no credentials)."""
    windows: list[MainWindow] = []

    def keep(window: MainWindow) -> None:
        qtbot.addWidget(window)
        window.confirm = lambda *_: True  # type: ignore[method-assign]
        window.notices._timer.setInterval(50)
        windows.append(window)

    task = asyncio.get_running_loop().create_task(run_window(
        load_settings(), MemorySecretStore(), open_url=opener or ConsentClicker(), runtime_options=FAST_RUNTIME,
        on_window=keep,
    ))
    try:
        await eventually(lambda: task.done() or (windows and windows[0].bridge_ready), 30)
        assert not task.done(), task.result()
        yield windows[0]
    finally:
        if windows:
            await asyncio.wait_for(windows[0].wait_shutdown(), 20)
        assert await asyncio.wait_for(task, 20) is None


async def sandbox_post(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post(url, json=body)
    assert answer.status_code < 300, answer.text
    return dict(answer.json())


@pytest.mark.asyncio
async def test_fresh_machine_connect_link_message_and_drop(qtbot: Any) -> None:
    async with gui(qtbot) as window, httpx.AsyncClient(timeout=30) as http:
        url = window.sandbox_url
        assert url and url.startswith("http://127.0.0.1:")
        # no credentials on this machine: the window says plainly that it is the sandbox, and where
        assert "Sandbox mode" in window.mode_banner.text() and url in window.mode_banner.text()
        assert window.mode_banner.isVisible()
        assert window.mode_label.text() == f"Sandbox mode · {url}"
        assert window.locations_panel.showing_hint

        # Link before Connect: a clear sentence, nothing created
        qtbot.mouseClick(window.link_button, Qt.MouseButton.LeftButton)
        assert "Connect a HighLevel location first" in window.link_status.text()
        assert window.app.db.sessions.list() == []

        # Connect HighLevel: the consent page is followed, the location row appears
        qtbot.mouseClick(window.connect_button, Qt.MouseButton.LeftButton)
        assert window.connecting and not window.connect_button.isEnabled()
        await eventually(lambda: window.locations_model.rowCount() == 1, 30)
        await eventually(lambda: not window.connecting, 10)
        assert texts(window.locations_model, 2) == ["Connected"]
        assert window.connect_status.text().startswith("Connected: ")
        assert window.connect_button.isEnabled() and not window.cancel_connect_button.isVisible()

        # Link: a QR code appears; the phone scans it through the sandbox; the row shows Connected
        await sandbox_post(http, f"{url}/_sandbox/phones", {"phone": LINKED, "name": "Front desk"})
        qtbot.mouseClick(window.link_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: window.qr_view.code is not None, 20)
        pixmap = window.qr_view.pixmap()
        assert not pixmap.isNull() and pixmap.width() > 100
        assert texts(window.sessions_model, 2) == ["Waiting for QR scan"]
        assert window.row_button(window.sessions_view, 0, "Cancel") is not None
        await sandbox_post(http, f"{url}/_sandbox/whatsapp/scan", {"qr": window.qr_view.code, "phone": LINKED})
        await eventually(lambda: texts(window.sessions_model, 2) == ["Connected"], 20)
        assert window.qr_view.code is None and window.qr_view.pixmap().isNull()
        assert "Linked +15550100077" in window.qr_view.text()
        assert texts(window.sessions_model, 0) == [LINKED]
        assert window.row_button(window.sessions_view, 0, "Log out") is not None
        assert window.notices.shown == []  # linking is not a problem

        # a customer writes: the message shows up in the log, then as sent to HighLevel
        await sandbox_post(http, f"{url}/_sandbox/phones", {"phone": ALICE, "name": "Alice"})
        await sandbox_post(http, f"{url}/_sandbox/phones/{ALICE}/send", {"to": LINKED, "text": "Is Thursday ok?"})
        await eventually(lambda: "Is Thursday ok?" in texts(window.messages_model, 5), 20)
        await eventually(lambda: texts(window.messages_model, 4)[0] == "Sent", 20)
        assert window.shown_label.text() == "1 message"

        # the phone unlinks us: one tray notice saying so, the row says Logged out and offers Link again
        await sandbox_post(http, f"{url}/_sandbox/whatsapp/{LINKED}/drop", {"kind": "logout"})
        await eventually(lambda: texts(window.sessions_model, 2) == ["Logged out — pair again"], 20)
        await eventually(lambda: window.notices.shown, 5)
        assert [(n.title, n.text) for n in window.notices.shown] == [
            ("WhatsApp number logged out", f"{LINKED} was logged out of WhatsApp. Link it again in ghl-desktop.")
        ]
        assert window.row_button(window.sessions_view, 0, "Link again") is not None
        assert window.row_button(window.sessions_view, 0, "Log out") is None
        assert window.tray.available or window.notify("t", "x") is False  # no tray here: a no-op


@pytest.mark.asyncio
async def test_pair_by_phone_number_shows_the_code_and_links(qtbot: Any) -> None:
    async with gui(qtbot) as window, httpx.AsyncClient(timeout=30) as http:
        url = window.sandbox_url
        qtbot.mouseClick(window.connect_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: window.locations_model.rowCount() == 1, 30)
        await sandbox_post(http, f"{url}/_sandbox/phones", {"phone": LINKED, "name": "Front desk"})
        window.pair_phone.setText("12 34")
        qtbot.mouseClick(window.pair_button, Qt.MouseButton.LeftButton)
        assert "not a possible phone number" in window.link_status.text()
        assert window.app.db.sessions.list() == []
        window.pair_phone.setText("+1 555 010 0077")
        qtbot.mouseClick(window.pair_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: window.qr_view.pair_code is not None, 20)
        code = window.qr_view.pair_code
        assert code and code in window.qr_view.text() and "+15550100077" in window.qr_view.text()
        await sandbox_post(http, f"{url}/_sandbox/whatsapp/pair-code", {"phone": LINKED, "code": code})
        await eventually(lambda: texts(window.sessions_model, 2) == ["Connected"], 20)
        assert window.qr_view.pair_code is None and "Linked" in window.qr_view.text()


class NeverApproves:
    """A browser in which nobody clicks anything."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, url: str) -> bool:
        self.opened.append(url)
        return True


@pytest.mark.asyncio
async def test_connect_can_be_cancelled_and_shuts_its_listener(qtbot: Any) -> None:
    browser = NeverApproves()
    async with gui(qtbot, opener=browser) as window:
        qtbot.mouseClick(window.connect_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: "Open the sign-in page" in window.connect_status.text(), 10)
        assert browser.opened and "/oauth/chooselocation" in browser.opened[0]
        receiver = window.runtime.oauth.receiver if window.runtime else None
        assert receiver is not None and receiver.running
        assert window.cancel_connect_button.isVisible()
        qtbot.mouseClick(window.cancel_connect_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: not window.connecting, 10)
        assert window.connect_status.text() == "Cancelled — nothing was connected."
        assert not receiver.running and window.runtime is not None and window.runtime.oauth.receiver is None
        assert window.connect_button.isEnabled() and window.locations_model.rowCount() == 0


@pytest.mark.asyncio
async def test_connect_failure_is_a_sentence_in_the_panel(qtbot: Any) -> None:
    async with gui(qtbot, opener=ConsentClicker(location_id="no-such-location")) as window:
        assert window.runtime is not None
        window.runtime.oauth.options = replace(window.runtime.oauth.options, timeout_seconds=0.3)
        qtbot.mouseClick(window.connect_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: not window.connecting, 10)
        text = window.connect_status.text()
        assert text.startswith("Could not connect HighLevel: ") and window.connect_status.property("error") == "true"
        assert window.locations_model.rowCount() == 0 and window.connect_button.isEnabled()


@pytest.mark.asyncio
async def test_reconnect_action_for_a_location_that_needs_it(qtbot: Any) -> None:
    async with bridge_env() as env:
        window = MainWindow(env.app, env.runtime, sandbox_url=env.url, confirm=lambda *_: True)
        qtbot.addWidget(window)
        window.show()
        try:
            location = env.app.db.locations.list()[0]
            assert window.row_button(window.locations_view, 0, "Reconnect") is None
            env.app.db.locations.set_state(location.id, LocationState.NEEDS_RECONNECT)
            window.notices._timer.setInterval(20)
            window.poll()  # what the poll timer does: no event announces a refused refresh token
            assert texts(window.locations_model, 2) == ["Needs reconnect"]
            button = window.row_button(window.locations_view, 0, "Reconnect")
            assert button is not None
            await eventually(lambda: window.notices.shown, 5)
            assert window.notices.shown[-1].title == "HighLevel needs you to reconnect"
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
            await eventually(lambda: texts(window.locations_model, 2) == ["Connected"], 30)
            assert window.row_button(window.locations_view, 0, "Reconnect") is None
        finally:
            await asyncio.wait_for(window.wait_shutdown(), 20)


@pytest.mark.asyncio
async def test_dead_letter_is_listed_and_retried_from_the_window(qtbot: Any) -> None:
    async with bridge_env() as env:
        window = MainWindow(env.app, env.runtime, sandbox_url=env.url, confirm=lambda *_: True)
        qtbot.addWidget(window)
        window.show()
        try:
            # HighLevel answers only 5xx and the client does not retry internally: the job dies fast
            env.runtime.client.scheduler = RateScheduler(
                RateLimitConfig(max_retries=0, backoff_base_seconds=0.01, backoff_cap_seconds=0.02))
            await sandbox_post(env.http, f"{env.url}/_sandbox/faults", {"error_rate": 1.0})
            await env.customer(ALICE, "Alice")
            wa_id = await env.send(ALICE, text="Did this get lost?")

            def dead_rows() -> int:
                window.refresh_dead()  # what the poll timer does
                return window.dead_model.rowCount()

            await eventually(dead_rows, 30)
            assert window.log_tabs.tabText(1) == "Dead letters (1)"
            assert texts(window.dead_model, 1) == ["WhatsApp → HighLevel"]
            assert "gave up after" in texts(window.dead_model, 4)[0]
            assert window.messages_model.index(0, 5).data() == "Did this get lost?"
            assert window.messages_model.index(0, 0).data(Qt.ItemDataRole.UserRole + 1).status is \
                MessageStatus.RECEIVED

            # the message was marked failed meanwhile: Retry must put it back, or it could never be sent
            row = window.messages_model.index(0, 0).data(Qt.ItemDataRole.UserRole + 1)
            failed = env.app.db.messages.update(row.id, status=MessageStatus.FAILED, error="gave up")
            env.app.bus.publish(MessageLogged(failed))
            assert texts(window.messages_model, 4)[0] == "Failed"

            await sandbox_post(env.http, f"{env.url}/_sandbox/faults", {"error_rate": 0.0})
            job_id = window.dead_model.record(0).id
            button = window.row_button(window.dead_view, 0, "Retry")
            assert button is not None
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
            assert window.dead_status.text() == "1 job queued again."
            assert texts(window.messages_model, 4)[0] == "Received"  # reset_failed, before the runner ran
            await eventually(lambda: dead_rows() == 0, 10)
            await eventually(lambda: texts(window.messages_model, 4)[0] == "Sent", 20)
            posted = [m for m in await env.messages() if m.get("altId") == wa_id]
            assert len(posted) == 1 and posted[0]["body"] == "Did this get lost?"
            assert window.log_tabs.tabText(1) == "Dead letters"
            # retrying a job that is no longer dead does nothing (idempotent)
            assert window.retry_dead_jobs([job_id]) == 0
            assert window.dead_status.text() == "Nothing to retry (already retried?)."
        finally:
            await asyncio.wait_for(window.wait_shutdown(), 20)


@pytest.mark.asyncio
async def test_session_row_actions_log_out_and_remove(qtbot: Any) -> None:
    async with bridge_env() as env:
        window = MainWindow(env.app, env.runtime, sandbox_url=env.url, confirm=lambda *_: True)
        qtbot.addWidget(window)
        window.show()
        try:
            assert texts(window.sessions_model, 2) == ["Connected"]
            log_out = window.row_button(window.sessions_view, 0, "Log out")
            assert log_out is not None
            qtbot.mouseClick(log_out, Qt.MouseButton.LeftButton)
            await eventually(lambda: texts(window.sessions_model, 2) == ["Logged out — pair again"], 20)
            assert texts(window.sessions_model, 3) == ["Logged out from this app"]
            state = await env.state()
            assert all(n["state"] != "connected" for n in state.get("linked_numbers", []))
            remove = window.row_button(window.sessions_view, 0, "Remove")
            assert remove is not None
            qtbot.mouseClick(remove, Qt.MouseButton.LeftButton)
            await eventually(lambda: window.sessions_model.rowCount() == 0, 20)
            assert env.app.db.sessions.list() == [] and window.sessions_panel.showing_hint
        finally:
            await asyncio.wait_for(window.wait_shutdown(), 20)


@pytest.mark.asyncio
async def test_with_credentials_a_busy_port_is_a_banner_not_a_crash(
    qtbot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    monkeypatch.setenv("GHL_CLIENT_ID", "real-client-id")
    monkeypatch.setenv("GHL_CLIENT_SECRET", "real-client-secret")
    monkeypatch.setenv("GHL_WEBHOOK_PORT", str(busy.getsockname()[1]))
    windows: list[MainWindow] = []

    def keep(window: MainWindow) -> None:
        qtbot.addWidget(window)
        windows.append(window)

    task = asyncio.get_running_loop().create_task(run_window(
        load_settings(), MemorySecretStore(), open_url=NeverApproves(), on_window=keep))
    try:
        await eventually(lambda: windows and not windows[0].problem_banner.isHidden(), 20)
        window = windows[0]
        assert window.sandbox_url is None and window.mode_banner.isHidden()
        assert window.mode_label.text() == "HighLevel: credentials configured"
        text = window.problem_banner.text()
        assert text.startswith("The bridge could not start: ") and "Check the ports in Settings" in text
        assert not window.bridge_ready
    finally:
        busy.close()
        if windows:
            await asyncio.wait_for(windows[0].wait_shutdown(), 20)
        assert await asyncio.wait_for(task, 20) is None
