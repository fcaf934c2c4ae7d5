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
from ghl_desktop.ui.panels.link import EXPIRED_TEXT
from ghl_desktop.ui.widgets import link_targets
from tests.e2e.harness import FAST_RUNTIME, bridge_env
from tests.e2e.harness import eventually_on_loop as eventually
from tests.fakes.secrets import MemorySecretStore

#: the whole app's window on the app's own wiring: no SQL and no secret-store call on the loop thread
pytestmark = pytest.mark.storage_off_loop

LINKED = "+15550100077"
ALICE = "+4915112345678"


def texts(model: Any, column: int) -> list[str]:
    return [model.index(row, column).data() for row in range(model.rowCount())]


def on_loop(check: Any) -> Any:
    """A check that reads widgets, run by ``eventually`` on the loop thread (not on a worker thread:
    the message log model schedules its page reads on the loop)."""
    async def run() -> Any:
        return check()

    return run


def log_texts(window: MainWindow, header: str = "Text") -> list[str]:
    """A column of the message log as shown, whichever log panel the window has."""
    from PySide6.QtWidgets import QTableView

    for view in window.log_tabs.findChildren(QTableView):
        model = view.model()
        headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
        if header in headers and "Direction" in headers:
            column = headers.index(header)
            return [model.index(row, column).data() for row in range(model.rowCount())]
    raise AssertionError(f"no message table with a {header!r} column")


@asynccontextmanager
async def gui(qtbot: Any, opener: Any = None) -> AsyncIterator[MainWindow]:
    """``run_window`` as ``ghl-desktop`` runs it, on the test's empty data dir (no credentials)."""
    windows: list[MainWindow] = []

    def keep(window: MainWindow) -> None:
        qtbot.addWidget(window)
        window.confirm = lambda *_: True  # type: ignore[method-assign]
        window.numbers.confirm = window.confirm
        windows.append(window)

    task = asyncio.get_running_loop().create_task(run_window(
        load_settings(), MemorySecretStore(), open_url=opener or ConsentClicker(), runtime_options=FAST_RUNTIME,
        on_window=keep,
    ))
    try:
        await eventually(lambda: task.done() or (windows and windows[0].bridge_ready), 30)
        assert not task.done(), task.result()
        await asyncio.wait_for(windows[0].wait_idle(), 30)  # the reads started by bridge_ready, off the loop
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
        assert window.locations.empty.showing_hint

        # Link before Connect: a clear sentence, nothing created
        qtbot.mouseClick(window.numbers.link_button, Qt.MouseButton.LeftButton)
        assert "Connect a HighLevel location first" in window.link.status.text()
        assert window.app.db.sessions.list() == []

        # Connect HighLevel: the consent page is followed, the location row appears
        qtbot.mouseClick(window.locations.connect_button, Qt.MouseButton.LeftButton)
        assert window.locations.connecting and not window.locations.connect_button.isEnabled()
        await eventually(lambda: window.locations.model.rowCount() == 1, 30)
        await eventually(lambda: not window.locations.connecting, 10)
        assert texts(window.locations.model, 2) == ["Connected"]
        assert window.locations.connect_status.text().startswith("Connected: ")
        assert window.locations.connect_button.isEnabled() and not window.locations.cancel_connect_button.isVisible()

        # Link: a QR code appears; the phone scans it through the sandbox; the row shows Connected
        await sandbox_post(http, f"{url}/_sandbox/phones", {"phone": LINKED, "name": "Front desk"})
        qtbot.mouseClick(window.numbers.link_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: window.link.qr_view.code is not None, 20)
        pixmap = window.link.qr_view.pixmap()
        assert not pixmap.isNull() and pixmap.width() > 100
        assert texts(window.numbers.model, 2) == ["Waiting for QR scan"]
        assert "Cancel linking" in window.numbers.view.action_names(0)
        assert window.link.phase == "qr" and "valid for" in window.link.countdown.text()
        assert "20 seconds" not in window.link.steps.text() + window.link.status.text()
        await sandbox_post(http, f"{url}/_sandbox/whatsapp/scan", {"qr": window.link.qr_view.code, "phone": LINKED})
        await eventually(lambda: texts(window.numbers.model, 2) == ["Connected"], 20)
        assert window.link.qr_view.code is None and window.link.qr_view.pixmap().isNull()
        assert "Linked +15550100077" in window.link.qr_view.text()
        assert texts(window.numbers.model, 0) == [LINKED]
        assert "Log out" in window.numbers.view.action_names(0)
        assert window.link.phase == "linked"
        assert window.notices_shown == []  # linking is not a problem

        # a customer writes: the message shows up in the log, then as sent to HighLevel
        await sandbox_post(http, f"{url}/_sandbox/phones", {"phone": ALICE, "name": "Alice"})
        await sandbox_post(http, f"{url}/_sandbox/phones/{ALICE}/send", {"to": LINKED, "text": "Is Thursday ok?"})
        await eventually(on_loop(lambda: "Is Thursday ok?" in log_texts(window)), 20)
        await eventually(on_loop(lambda: log_texts(window, "Status")[0] == "Sent"), 20)

        # the phone unlinks us: one tray notice saying so, the row says Logged out and offers Link again
        await sandbox_post(http, f"{url}/_sandbox/whatsapp/{LINKED}/drop", {"kind": "logout"})
        await eventually(lambda: texts(window.numbers.model, 2) == ["Logged out — pair again"], 20)
        await eventually(lambda: window.notices_shown, 5)
        assert len(window.notices_shown) == 1 and LINKED in window.notices_shown[0].text
        assert "Link again" in window.numbers.view.action_names(0)
        assert "Log out" not in window.numbers.view.action_names(0)
        # the linking panel no longer claims the number is linked
        assert "✓ Linked" not in window.link.qr_view.text() and window.link.phase == "idle"
        assert "no longer linked" in window.link.qr_view.text()
        assert window.tray.available or window.notify("t", "x") is False  # no tray here: a no-op


@pytest.mark.asyncio
async def test_pair_by_phone_number_shows_the_code_and_links(qtbot: Any) -> None:
    async with gui(qtbot) as window, httpx.AsyncClient(timeout=30) as http:
        url = window.sandbox_url
        qtbot.mouseClick(window.locations.connect_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: window.locations.model.rowCount() == 1, 30)
        await sandbox_post(http, f"{url}/_sandbox/phones", {"phone": LINKED, "name": "Front desk"})
        window.link.pair_phone.setText("12 34")
        qtbot.mouseClick(window.link.pair_button, Qt.MouseButton.LeftButton)
        assert "not a possible phone number" in window.link.status.text()
        assert window.app.db.sessions.list() == []
        window.link.pair_phone.setText("+1 555 010 0077")
        qtbot.mouseClick(window.link.pair_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: window.link.phase == "pair_code", 20)
        shown = window.link.pair_code.text()
        code = shown.replace("-", "")
        assert len(code) == 8 and "+15550100077" in window.link.pair_where.text()
        assert window.link.pair_phone.text() == ""  # used: cleared
        await sandbox_post(http, f"{url}/_sandbox/whatsapp/pair-code", {"phone": LINKED, "code": code})
        await eventually(lambda: texts(window.numbers.model, 2) == ["Connected"], 20)
        assert window.link.phase == "linked" and "✓ Linked" in window.link.qr_view.text()
        assert window.link.pair_box.isHidden()


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
        qtbot.mouseClick(window.locations.connect_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: "Open the sign-in page" in window.locations.connect_status.text(), 10)
        assert browser.opened and "/oauth/chooselocation" in browser.opened[0]
        # the link the label emits on a click is the sign-in URL itself: no HTML escapes in the href
        targets = link_targets(window.locations.connect_status.text())
        assert targets == [browser.opened[0]] and "&amp;" not in targets[0] and "&" in targets[0]
        receiver = window.runtime.oauth.receiver if window.runtime else None
        assert receiver is not None and receiver.running
        assert window.locations.cancel_connect_button.isVisible()
        qtbot.mouseClick(window.locations.cancel_connect_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: not window.locations.connecting, 10)
        assert window.locations.connect_status.text() == "Cancelled — nothing was connected."
        assert not receiver.running and window.runtime is not None and window.runtime.oauth.receiver is None
        assert window.locations.connect_button.isEnabled() and window.locations.model.rowCount() == 0


@pytest.mark.asyncio
async def test_connect_failure_is_a_sentence_in_the_panel(qtbot: Any) -> None:
    async with gui(qtbot, opener=ConsentClicker(location_id="no-such-location")) as window:
        assert window.runtime is not None
        window.runtime.oauth.options = replace(window.runtime.oauth.options, timeout_seconds=0.3)
        qtbot.mouseClick(window.locations.connect_button, Qt.MouseButton.LeftButton)
        await eventually(lambda: not window.locations.connecting, 10)
        text = window.locations.connect_status.text()
        assert text.startswith("Could not connect HighLevel: ") and window.locations.connect_status.error
        assert window.locations.model.rowCount() == 0 and window.locations.connect_button.isEnabled()


@pytest.mark.asyncio
async def test_reconnect_action_for_a_location_that_needs_it(qtbot: Any) -> None:
    async with bridge_env() as env:
        window = MainWindow(env.app, env.runtime, sandbox_url=env.url, confirm=lambda *_: True)
        qtbot.addWidget(window)
        window.show()
        try:
            await asyncio.wait_for(window.wait_idle(), 30)  # the rows, read off the loop
            location = env.app.db.locations.list()[0]
            assert "Reconnect" not in window.locations.view.action_names(0)
            env.app.db.locations.set_state(location.id, LocationState.NEEDS_RECONNECT)
            window.poll()  # what the poll timer does: no event announces a refused refresh token
            await asyncio.wait_for(window.wait_idle(), 30)
            assert texts(window.locations.model, 2) == ["Needs reconnect"]
            assert "Reconnect" in window.locations.view.action_names(0)
            number = texts(window.numbers.model, 2)
            assert number == ["Bridging stalled"]  # its number is not a green "Connected"
            assert "Reconnect location" in window.numbers.view.action_names(0)
            await eventually(lambda: window.notices_shown, 5)
            assert "reconnect" in window.notices_shown[-1].title.lower()
            assert window.locations.view.trigger(0, "Reconnect")
            await eventually(lambda: texts(window.locations.model, 2) == ["Connected"], 30)
            assert "Reconnect" not in window.locations.view.action_names(0)
            window.poll()
            await asyncio.wait_for(window.wait_idle(), 30)
            assert texts(window.numbers.model, 2) == ["Connected"]
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

            dead = window.dead_panel
            assert dead is not None

            async def dead_rows() -> int:  # on the loop (a widget), awaited by eventually
                await dead.refresh()  # what its poll timer does (the read runs off the loop)
                return int(dead.model.rowCount())

            await eventually(dead_rows, 30)
            assert window.log_tabs.tabText(1) == "Dead letters (1)"
            await eventually(on_loop(lambda: "Did this get lost?" in log_texts(window)), 10)
            stored = env.app.db.messages.recent(1)[0]
            assert stored.body == "Did this get lost?" and stored.status is MessageStatus.RECEIVED

            # the message was marked failed meanwhile: Retry must put it back, or it could never be sent
            failed = env.app.db.messages.update(stored.id or 0, status=MessageStatus.FAILED, error="gave up")
            env.app.bus.publish(MessageLogged(failed))
            await sandbox_post(env.http, f"{env.url}/_sandbox/faults", {"error_rate": 0.0})
            dead.view.setFocus()
            dead.view.selectRow(0)
            qtbot.mouseClick(dead.retry_button, Qt.MouseButton.LeftButton)
            await asyncio.wait_for(dead.wait_idle(), 30)  # the retry runs off the loop
            assert dead.status.text()
            async def no_dead_rows() -> bool:
                return await dead_rows() == 0

            await eventually(no_dead_rows, 10)
            await eventually(lambda: env.app.db.messages.get(stored.id or 0).status is MessageStatus.SENT, 20)
            posted = [m for m in await env.messages() if m.get("altId") == wa_id]
            assert len(posted) == 1 and posted[0]["body"] == "Did this get lost?"
            await eventually(lambda: window.log_tabs.tabText(1) == "Dead letters", 5)
        finally:
            await asyncio.wait_for(window.wait_shutdown(), 20)


@pytest.mark.asyncio
async def test_session_row_actions_log_out_and_remove(qtbot: Any) -> None:
    async with bridge_env() as env:
        window = MainWindow(env.app, env.runtime, sandbox_url=env.url, confirm=lambda *_: True)
        qtbot.addWidget(window)
        window.show()
        try:
            await asyncio.wait_for(window.wait_idle(), 30)  # the rows, read off the loop
            assert texts(window.numbers.model, 2) == ["Connected"]
            assert window.numbers.view.trigger(0, "Log out")
            await eventually(lambda: texts(window.numbers.model, 2) == ["Logged out — pair again"], 20)
            assert texts(window.numbers.model, 3) == ["Logged out from this app"]
            state = await env.state()
            assert all(n["state"] != "connected" for n in state.get("linked_numbers", []))
            assert window.numbers.view.trigger(0, "Remove")
            await eventually(lambda: window.numbers.model.rowCount() == 0, 20)
            assert env.app.db.sessions.list() == [] and window.numbers.empty.showing_hint
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


@pytest.mark.asyncio
async def test_an_expired_code_offers_a_new_one_that_the_phone_can_scan(qtbot: Any) -> None:
    from tests.e2e.harness import FAST_RUNTIME

    # every code of this linking attempt runs out after 1 s (WhatsApp's are 60 s, then 20 s)
    options = replace(FAST_RUNTIME, sessions=replace(FAST_RUNTIME.sessions, qr_timeout=1.0))
    async with bridge_env(runtime_options=options) as env:
        window = MainWindow(env.app, env.runtime, sandbox_url=env.url, confirm=lambda *_: True)
        qtbot.addWidget(window)
        window.show()
        try:
            await asyncio.wait_for(window.wait_idle(), 30)  # the locations, read off the loop
            qtbot.mouseClick(window.numbers.link_button, Qt.MouseButton.LeftButton)
            await eventually(lambda: window.link.qr_view.code is not None, 20)
            first = window.link.qr_view.code
            assert "valid for 60 s" in window.link.countdown.text()  # the sandbox's first code: 60 s
            await eventually(lambda: window.link.phase == "expired", 20)
            assert window.link.renew_button.isVisible() and window.link.renew_button.text() == EXPIRED_TEXT
            assert not window.link.status.error  # not a red "Failed"
            sid = window.link.session_id
            qtbot.mouseClick(window.link.renew_button, Qt.MouseButton.LeftButton)
            await eventually(lambda: window.link.phase == "qr" and window.link.qr_view.code not in (None, first), 20)
            assert window.link.session_id == sid  # the same number, a fresh code
            phone = "+15550100088"
            await sandbox_post(env.http, f"{env.url}/_sandbox/phones", {"phone": phone, "name": "Second desk"})
            await sandbox_post(env.http, f"{env.url}/_sandbox/whatsapp/scan",
                               {"qr": window.link.qr_view.code, "phone": phone})
            await eventually(lambda: window.link.phase == "linked", 20)
        finally:
            await asyncio.wait_for(window.wait_shutdown(), 20)


@pytest.mark.asyncio
async def test_real_mode_connect_with_highlevel_unreachable_says_so_at_once(qtbot: Any) -> None:
    import socket

    from ghl_desktop.app import App
    from ghl_desktop.runtime import BridgeRuntime

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: like a machine whose network cannot reach HighLevel
    settings = replace(load_settings(), client_id="real-id", client_secret="real-secret",
                       api_base=f"http://127.0.0.1:{port}", marketplace_base=f"http://127.0.0.1:{port}",
                       oauth_redirect_port=0)
    app = App(settings, secrets=MemorySecretStore(), console_log=False)
    browser = NeverApproves()
    runtime = BridgeRuntime(app, transport_factory=lambda *_: None, open_url=browser)  # type: ignore[arg-type,return-value]
    window = MainWindow(app, runtime)
    qtbot.addWidget(window)
    window.show()
    try:
        qtbot.mouseClick(window.locations.connect_button, Qt.MouseButton.LeftButton)
        # the old window waited for the browser (300 s) before saying anything
        await eventually(lambda: not window.locations.connecting, 30)
        status = window.locations.connect_status
        assert status.error and "cannot be reached" in status.text() and "internet connection" in status.text()
        assert browser.opened == []  # no sign-in page was opened for a network that is down
        assert window.locations.connect_button.isEnabled()
    finally:
        await asyncio.wait_for(window.wait_shutdown(), 20)
