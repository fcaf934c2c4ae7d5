"""The first-run wizard and checklist (ui/first_run.py), driven by clicks and keys against real servers:
the HighLevel sandbox's token endpoint, the app's own webhook endpoint, a closed port."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QVBoxLayout, QWidget, QWizard

from ghl_desktop.adapters.ghl.oauth import LoopbackReceiver, OAuthOptions
from ghl_desktop.config import Settings, load_settings
from ghl_desktop.sandbox.server import RunningSandbox
from ghl_desktop.services.setup_checks import CLIENT_SECRET_KEY, SetupService, Step
from ghl_desktop.ui.first_run import FirstRunWizard, SetupChecklist, install_first_run
from ghl_desktop.webhooks.endpoint import WebhookServer
from ghl_desktop.webhooks.gate import WebhookGate
from ghl_desktop.webhooks.intake import WebhookIntake
from ghl_desktop.webhooks.verify import SignatureVerifier
from tests.fakes.job_queue import MemoryJobQueue
from tests.fakes.secrets import MemorySecretStore
from tests.webhooks.signing import SigningKeys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(predicate: Callable[[], Any], what: str, within: float = 15.0) -> None:
    """Let the loop run until ``predicate`` holds (a liveness bound, not a speed check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Clip:
    def __init__(self) -> None:
        self.copied: list[str] = []

    def __call__(self, text: str) -> None:
        self.copied.append(text)


class Host(QWidget):
    """Stands in for MainWindow's slot above the panels (``add_top_widget``)."""

    def __init__(self) -> None:
        super().__init__()
        self.top: list[QWidget] = []
        self.setLayout(QVBoxLayout())

    def add_top_widget(self, widget: QWidget) -> None:
        self.top.append(widget)
        self.layout().addWidget(widget)


@pytest_asyncio.fixture
async def endpoint() -> AsyncIterator[str]:
    """The app's real direct-mode webhook endpoint on loopback (the 'tunnel' is loopback here)."""
    keys = SigningKeys()
    gate = WebhookGate(SignatureVerifier.from_values(keys.ed25519_public_pem, keys.rsa_public_pem))
    server = WebhookServer(load_settings(), WebhookIntake(MemoryJobQueue().aio), gate=gate, host="127.0.0.1", port=0)
    url = await server.start()
    try:
        yield url
    finally:
        await server.stop()


def real_settings(home: Path, api_base: str) -> Settings:
    return Settings(home=home, api_base=api_base, oauth_redirect_port=free_port(), webhook_port=free_port())


def next_enabled(wizard: QWizard) -> bool:
    return wizard.button(QWizard.WizardButton.NextButton).isEnabled()


@pytest.mark.asyncio
@pytest.mark.storage_off_loop  # loaded as the app loads it: no keyring call on the loop while the user walks it
async def test_the_wizard_walks_every_step_and_the_checklist_follows(
    qtbot, sandbox: RunningSandbox, endpoint: str, data_home: Path  # type: ignore[no-untyped-def]
) -> None:
    secrets = MemorySecretStore()
    clip = Clip()
    service = await SetupService(real_settings(data_home, sandbox.url), secrets).loaded()
    host = Host()
    qtbot.addWidget(host)
    checklist = install_first_run(host, service, sandbox=False, open_now=False)
    assert isinstance(checklist, SetupChecklist) and host.top == [checklist]
    host.show()
    assert checklist.isVisible() and checklist.title.text() == "Finish setting up HighLevel — 0 of 4 done"
    qtbot.mouseClick(checklist.copy_redirect, Qt.MouseButton.LeftButton)

    wizard = FirstRunWizard(service, clipboard=clip)
    qtbot.addWidget(wizard)
    wizard.check_finished.connect(lambda _s, _ok: checklist.refresh())
    wizard.show()
    page = wizard.credentials
    # 1. credentials: a wrong secret is refused in red and Next stays disabled
    qtbot.keyClicks(page.client_id, sandbox.client_id)
    qtbot.keyClicks(page.client_secret, "not-the-secret")
    assert not next_enabled(wizard)
    qtbot.mouseClick(page.check, Qt.MouseButton.LeftButton)
    await until(lambda: page.result.outcome is not None, "the probe's answer")
    assert page.result.error and "refused the client ID or secret" in page.result.text()
    assert "What to do:" in page.result.text()
    assert not next_enabled(wizard) and secrets.values == {}
    # the right secret (Enter in the field runs the check): accepted, saved to the secret store only
    page.client_secret.clear()
    qtbot.keyClicks(page.client_secret, sandbox.client_secret)
    qtbot.keyClick(page.client_secret, Qt.Key.Key_Return)
    await until(lambda: page.result.outcome is not None and page.result.outcome.ok, "accepted")
    assert not page.result.error and next_enabled(wizard)
    assert secrets.values == {CLIENT_SECRET_KEY: sandbox.client_secret}
    assert sandbox.client_secret not in (data_home / "settings.json").read_text()
    assert checklist.title.text().endswith("1 of 4 done")
    qtbot.mouseClick(wizard.button(QWizard.WizardButton.NextButton), Qt.MouseButton.LeftButton)

    # 2. provider ID: checked as typed
    assert wizard.currentPage() is wizard.provider
    qtbot.keyClicks(wizard.provider.provider_id, "not an id")
    assert not next_enabled(wizard) and wizard.provider.result.error
    wizard.provider.provider_id.clear()
    qtbot.keyClicks(wizard.provider.provider_id, sandbox.provider_id)
    assert next_enabled(wizard)
    qtbot.mouseClick(wizard.button(QWizard.WizardButton.NextButton), Qt.MouseButton.LeftButton)
    assert json.loads((data_home / "settings.json").read_text())["provider_id"] == sandbox.provider_id

    # 3. redirect URI: the listener's own address, copied with one click, confirmed by the user
    assert wizard.currentPage() is wizard.redirect
    receiver = LoopbackReceiver(OAuthOptions.from_settings(service.settings), "s")
    listening = await receiver.start()
    await receiver.close()
    assert wizard.redirect.uri.text() == listening
    qtbot.mouseClick(wizard.redirect.copy, Qt.MouseButton.LeftButton)
    assert clip.copied == [listening]
    qtbot.mouseClick(wizard.redirect.copy_scopes, Qt.MouseButton.LeftButton)
    assert clip.copied[-1] == " ".join(OAuthOptions.from_settings(service.settings).scopes)
    assert "conversations/message.write" in clip.copied[-1]
    qtbot.mouseClick(wizard.redirect.registered, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(wizard.button(QWizard.WizardButton.NextButton), Qt.MouseButton.LeftButton)

    # 4. delivery, direct mode behind a tunnel: the Delivery URL to copy, then a test delivery
    delivery = wizard.delivery
    assert wizard.currentPage() is delivery and delivery.direct_mode.isChecked()
    qtbot.keyClicks(delivery.public_url, endpoint)
    assert delivery.delivery_url.text() == endpoint + "/ghl/provider/webhook"
    qtbot.mouseClick(delivery.copy, Qt.MouseButton.LeftButton)
    assert clip.copied[-1] == endpoint + "/ghl/provider/webhook"
    qtbot.mouseClick(delivery.test, Qt.MouseButton.LeftButton)
    await until(lambda: delivery.result.outcome is not None, "the test delivery")
    assert delivery.result.outcome is not None and delivery.result.outcome.ok, delivery.result.text()
    assert "the tunnel reaches this app" in delivery.result.text()
    qtbot.mouseClick(wizard.button(QWizard.WizardButton.NextButton), Qt.MouseButton.LeftButton)

    # 5. summary, and the checklist disappears once everything is done
    assert wizard.currentPage() is wizard.summary
    assert wizard.summary.lines.text().count("✓") == 4
    qtbot.mouseClick(wizard.button(QWizard.WizardButton.FinishButton), Qt.MouseButton.LeftButton)
    checklist.refresh()
    assert service.status().complete and not checklist.isVisible()
    assert not (set(json.loads((data_home / "setup.json").read_text()).values()) & {sandbox.client_secret})


@pytest.mark.asyncio
async def test_an_unreachable_highlevel_is_a_red_network_error_in_seconds(qtbot, data_home: Path) -> None:  # type: ignore[no-untyped-def]
    service = SetupService(real_settings(data_home, f"http://127.0.0.1:{free_port()}"), MemorySecretStore())
    wizard = FirstRunWizard(service, clipboard=Clip())
    qtbot.addWidget(wizard)
    wizard.show()
    page = wizard.credentials
    qtbot.keyClicks(page.client_id, "client")
    qtbot.keyClicks(page.client_secret, "secret")
    qtbot.mouseClick(page.check, Qt.MouseButton.LeftButton)
    assert not page.check.isEnabled()  # one check at a time
    await until(lambda: page.result.outcome is not None, "the network error")
    assert page.result.error and page.result.text().startswith("Network error: ")
    assert "refused the connection" in page.result.text()
    assert page.check.isEnabled() and not next_enabled(wizard)


def test_sandbox_mode_has_no_first_run(qtbot, data_home: Path) -> None:  # type: ignore[no-untyped-def]
    host = Host()
    qtbot.addWidget(host)
    service = SetupService(real_settings(data_home, "http://127.0.0.1:9"), MemorySecretStore())
    assert install_first_run(host, service, sandbox=True) is None
    assert host.top == []


@pytest.mark.asyncio
async def test_the_very_first_start_opens_the_wizard_and_continue_reopens_it(qtbot, data_home: Path) -> None:  # type: ignore[no-untyped-def]
    host = Host()
    qtbot.addWidget(host)
    service = SetupService(real_settings(data_home, "http://127.0.0.1:9"), MemorySecretStore())
    checklist = install_first_run(host, service, sandbox=False)
    assert checklist is not None
    await until(lambda: checklist.wizard is not None and checklist.wizard.isVisible(), "the wizard")
    wizard = checklist.wizard
    assert wizard is not None
    wizard.reject()
    assert not wizard.isVisible()
    host.show()
    qtbot.mouseClick(checklist.continue_button, Qt.MouseButton.LeftButton)
    assert checklist.wizard is not None and checklist.wizard.isVisible()
    checklist.wizard.reject()
    assert service.progress().dismissed
    # cancelled once: a later start does not push the wizard again, but the checklist stays
    later_start = Host()
    qtbot.addWidget(later_start)
    after_cancel = install_first_run(later_start, service, sandbox=False)
    assert after_cancel is not None and not after_cancel.isHidden()
    await asyncio.sleep(0.1)
    assert after_cancel.wizard is None
    # nor does one with a step done
    service._update(dismissed=False)
    service.confirm_redirect_registered()
    later = Host()
    qtbot.addWidget(later)
    again = install_first_run(later, service, sandbox=False)
    assert again is not None and again.wizard is None and not again.isHidden()
    assert again.rows[Step.REDIRECT_URI].text().startswith("✓")
    assert again.rows[Step.CREDENTIALS].text().startswith("○")


@pytest.mark.asyncio
async def test_a_real_mode_window_shows_the_checklist_and_opens_the_wizard_once(
    qtbot, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    from ghl_desktop.ui.main import run_window
    from ghl_desktop.ui.main_window import MainWindow
    from tests.e2e.harness import eventually_on_loop as eventually

    monkeypatch.setenv("GHL_API_BASE", sandbox.url)
    monkeypatch.setenv("GHL_CLIENT_ID", sandbox.client_id)
    monkeypatch.setenv("GHL_CLIENT_SECRET", sandbox.client_secret)
    monkeypatch.setenv("GHL_WEBHOOK_PORT", str(free_port()))
    monkeypatch.setenv("GHL_OAUTH_REDIRECT_PORT", str(free_port()))
    windows: list[MainWindow] = []

    def keep(window: MainWindow) -> None:
        qtbot.addWidget(window)
        windows.append(window)

    task = asyncio.get_running_loop().create_task(run_window(
        load_settings(), MemorySecretStore(), open_url=lambda _url: True, on_window=keep))
    try:
        await eventually(lambda: windows and windows[0].findChild(SetupChecklist) is not None, 20)
        checklist = windows[0].findChild(SetupChecklist)
        assert checklist is not None and not checklist.isHidden()
        assert checklist.title.text() == "Finish setting up HighLevel — 0 of 4 done"
        # the very first start opens the wizard with the configured client ID filled in
        await eventually(lambda: checklist.wizard is not None and checklist.wizard.isVisible(), 20)
        assert checklist.wizard is not None
        assert checklist.wizard.credentials.client_id.text() == sandbox.client_id
        checklist.wizard.reject()
    finally:
        if windows:
            await asyncio.wait_for(windows[0].wait_shutdown(), 20)
        assert await asyncio.wait_for(task, 20) is None
