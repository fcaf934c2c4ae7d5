"""First run in real mode: a short wizard and a checklist that stays above the panels until complete.

Sandbox mode has neither (its app credentials are the sandbox's own). The steps, their checks and
where answers are kept live in :mod:`ghl_desktop.services.setup_checks` (Qt-free, shared with
``ghl-desktop doctor``); these widgets only show them and call that service:

- :class:`FirstRunWizard` — client ID + secret (checked by the token-endpoint probe before Next is
  allowed), provider ID, the redirect URI to register (Copy), the delivery path (relay, or direct
  behind a tunnel) with a test delivery, and a summary.
- :class:`SetupChecklist` — one line per step, ✓ when done, "Continue setup…" opens the wizard, the
  redirect URI has its own Copy button; it hides itself once every step is done.
- :func:`install_first_run` — what the window calls: nothing in sandbox mode; otherwise the checklist
  via ``window.add_top_widget`` and, on the very first start, the wizard.

Signals: ``FirstRunWizard.check_finished(str step, bool ok)`` after every check (tests and the
checklist listen); ``SetupChecklist.open_wizard_requested()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from ghl_desktop.services.setup_checks import (
    APP_WEBHOOK_PATH,
    PROVIDER_WEBHOOK_PATH,
    CheckOutcome,
    Outcome,
    SetupService,
    SetupStatus,
    Step,
    check_provider_id,
)

log = logging.getLogger("ghl.ui.first_run")

#: reads/writes the clipboard (tests pass their own; the default is the system clipboard)
Clipboard = Callable[[str], None]


def system_clipboard(text: str) -> None:
    QGuiApplication.clipboard().setText(text)


class _Tasks:
    """The running checks: kept until done, cancelled when the wizard closes."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_event_loop().create_task(coro, name=f"first-run-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("first-run check %s crashed", task.get_name(), exc_info=task.exception())

    @property
    def running(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


def _bad_color(palette: QPalette) -> str:
    """A red readable on the window background, light or dark."""
    window = palette.color(QPalette.ColorRole.Window)
    return "#ff8a80" if window.lightness() < 128 else "#b3261e"


def _good_color(palette: QPalette) -> str:
    window = palette.color(QPalette.ColorRole.Window)
    return "#5fd3a3" if window.lightness() < 128 else "#0b6b50"


class ResultLabel(QLabel):
    """One check's answer: the sentence, then what to do; red when it failed, green when it passed."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self.setAccessibleName(name)
        self.setWordWrap(True)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.outcome: CheckOutcome | None = None
        self.error = False

    def show_outcome(self, outcome: CheckOutcome | None, busy: str = "") -> None:
        self.outcome = outcome
        if outcome is None:
            self.error = False
            self.setText(busy)
        else:
            self.error = not outcome.ok
            todo = f"\nWhat to do: {outcome.hint}." if outcome.hint and not outcome.ok else ""
            self.setText(outcome.message + todo)
        self.setAccessibleDescription(self.text())
        self._recolor()

    def _recolor(self) -> None:
        pal = QPalette(self.palette())
        app = QGuiApplication.palette()
        if self.outcome is None:
            color = app.color(QPalette.ColorRole.WindowText)
        else:
            color = QColor(_bad_color(app) if self.error else _good_color(app))
        pal.setColor(QPalette.ColorRole.WindowText, color)
        self.setPalette(pal)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.ApplicationPaletteChange:
            self._recolor()


def _copy_row(field_name: str, value: str, clipboard: Clipboard, what: str) -> tuple[QWidget, QLineEdit, QPushButton]:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    box = QLineEdit(value)
    box.setObjectName(field_name)
    box.setReadOnly(True)
    box.setCursorPosition(0)  # show the start of a long value
    box.setAccessibleName(what)
    button = QPushButton("Copy")
    button.setObjectName(field_name + "Copy")
    button.setAccessibleName(f"Copy the {what}")
    button.clicked.connect(lambda: clipboard(box.text()))
    layout.addWidget(box, 1)
    layout.addWidget(button)
    return row, box, button


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
    label.setOpenExternalLinks(False)
    return label


class _CredentialsPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.w = wizard
        service = wizard.service
        self.setTitle("Your HighLevel marketplace app")
        self.setSubTitle("The client ID and secret from the app's Advanced Settings → Auth. The secret goes "
                         f"only to the secret store — {service.secrets.description} — never to a file.")
        outer = QVBoxLayout(self)
        form = QFormLayout()
        outer.addLayout(form)
        self.client_id = QLineEdit(service.settings.client_id or "")
        self.client_id.setObjectName("clientId")
        self.client_id.setAccessibleName("Client ID")
        self.client_id.setPlaceholderText("e.g. 65f0c1a2b3c4d5e6f7a8b9c0-lx1abcd2")
        self.client_secret = QLineEdit()
        self.client_secret.setObjectName("clientSecret")
        self.client_secret.setAccessibleName("Client secret")
        self.client_secret.setEchoMode(QLineEdit.EchoMode.Password)
        self._stored_secret = service.client_secret()
        self.client_secret.setPlaceholderText("stored — leave empty to keep it" if self._stored_secret else "")
        self.check = QPushButton("Check with HighLevel")
        self.check.setObjectName("checkCredentials")
        self.check.setAccessibleName("Check the client ID and secret with HighLevel")
        self.result = ResultLabel("credentialsResult")
        form.addRow("Client ID", self.client_id)
        form.addRow("Client secret", self.client_secret)
        buttons = QHBoxLayout()
        buttons.addWidget(self.check)
        buttons.addStretch(1)
        outer.addLayout(buttons)
        outer.addWidget(self.result)
        outer.addStretch(1)
        self._verified_for: tuple[str, str] | None = None
        if service.status().step(Step.CREDENTIALS).done and self._stored_secret:
            self._verified_for = (self.client_id.text().strip(), "")
            self.result.show_outcome(CheckOutcome(Outcome.OK, "Checked before: HighLevel accepted them."))
        self.check.clicked.connect(self._start_check)
        self.client_id.textChanged.connect(self._edited)
        self.client_secret.textChanged.connect(self._edited)
        self.client_secret.returnPressed.connect(self._start_check)

    def _values(self) -> tuple[str, str]:
        return self.client_id.text().strip(), self.client_secret.text().strip()

    def _edited(self) -> None:
        self.result.show_outcome(None)
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self._verified_for is not None and self._verified_for == self._values()

    def _start_check(self) -> None:
        client_id, secret = self._values()
        typed_secret = secret or self._stored_secret or ""
        self.check.setEnabled(False)
        self.result.show_outcome(None, "Asking HighLevel…")
        self.w.tasks.spawn(self._run(client_id, secret, typed_secret), "credentials")

    async def _run(self, client_id: str, secret_field: str, secret: str) -> None:
        try:
            outcome = await self.w.service.verify_and_save_credentials(client_id, secret)
        finally:
            self.check.setEnabled(True)
        self.result.show_outcome(outcome)
        if outcome.ok:
            self._verified_for = (client_id, secret_field)
        self.completeChanged.emit()
        self.w.check_finished.emit(Step.CREDENTIALS.value, outcome.ok)


class _ProviderPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.w = wizard
        self.setTitle("Conversation provider")
        self.setSubTitle("In the marketplace app: Modules → Conversation Providers. Copy the provider's ID "
                         "(HighLevel shows it next to the provider's name).")
        outer = QVBoxLayout(self)
        form = QFormLayout()
        outer.addLayout(form)
        self.provider_id = QLineEdit(wizard.service.settings.provider_id or "")
        self.provider_id.setObjectName("providerId")
        self.provider_id.setAccessibleName("Conversation provider ID")
        self.result = ResultLabel("providerResult")
        form.addRow("Provider ID", self.provider_id)
        outer.addWidget(self.result)
        outer.addStretch(1)
        self.provider_id.textChanged.connect(self._edited)
        self._edited()

    def _edited(self) -> None:
        text = self.provider_id.text()
        self.result.show_outcome(check_provider_id(text) if text.strip() else None)
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return check_provider_id(self.provider_id.text()).ok

    def validatePage(self) -> bool:
        outcome = self.w.service.save_provider_id(self.provider_id.text())
        self.result.show_outcome(outcome)
        self.w.check_finished.emit(Step.PROVIDER_ID.value, outcome.ok)
        return outcome.ok


class _RedirectPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.w = wizard
        service = wizard.service
        self.setTitle("Redirect URI")
        self.setSubTitle("Add exactly this address under the app's Advanced Settings → Auth → Redirect URLs. "
                         "HighLevel sends the sign-in back to it; any other spelling is refused.")
        layout = QVBoxLayout(self)
        row, self.uri, self.copy = _copy_row("redirectUri", service.redirect_uri, wizard.clipboard, "redirect URI")
        layout.addWidget(row)
        layout.addWidget(_hint(f"The port ({service.settings.oauth_redirect_port}) is the setting "
                               "<code>GHL_OAUTH_REDIRECT_PORT</code>; changing it means registering the new "
                               "address too."))
        layout.addWidget(QLabel("Scopes the app must have (Advanced Settings → Auth → Scopes), exactly these:"))
        scopes_row, self.scopes, self.copy_scopes = _copy_row("appScopes", service.scopes, wizard.clipboard,
                                                              "scopes")
        layout.addWidget(scopes_row)
        self.registered = QCheckBox("I added this redirect URI (and these scopes) to the marketplace app")
        self.registered.setObjectName("redirectRegistered")
        self.registered.setAccessibleName(self.registered.text())
        self.registered.setChecked(service.status().step(Step.REDIRECT_URI).done)
        layout.addWidget(self.registered)
        layout.addStretch(1)

    def validatePage(self) -> bool:
        self.w.service.confirm_redirect_registered(self.registered.isChecked())
        self.w.check_finished.emit(Step.REDIRECT_URI.value, self.registered.isChecked())
        return True


class _DeliveryPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.w = wizard
        service = wizard.service
        settings = service.settings
        self.setTitle("Where HighLevel delivers replies")
        self.setSubTitle("HighLevel posts every agent reply to the provider's Delivery URL. Use a relay you "
                         "deploy once (for a desktop behind a router), or your own tunnel to this computer.")
        layout = QVBoxLayout(self)
        self.relay_mode = QRadioButton("Relay (ghl-relay)")
        self.relay_mode.setObjectName("relayMode")
        self.direct_mode = QRadioButton("Direct, behind my own tunnel")
        self.direct_mode.setObjectName("directMode")
        group = QButtonGroup(self)
        group.addButton(self.relay_mode)
        group.addButton(self.direct_mode)
        modes = QHBoxLayout()
        modes.addWidget(self.relay_mode)
        modes.addWidget(self.direct_mode)
        modes.addStretch(1)
        layout.addLayout(modes)

        self.relay_box = QWidget()
        relay_form = QFormLayout(self.relay_box)
        relay_form.setContentsMargins(0, 0, 0, 0)
        self.relay_url = QLineEdit(settings.relay_url or "")
        self.relay_url.setObjectName("relayUrl")
        self.relay_url.setAccessibleName("Relay address")
        self.relay_url.setPlaceholderText("https://relay.example.com")
        self.relay_token = QLineEdit()
        self.relay_token.setObjectName("relayToken")
        self.relay_token.setAccessibleName("Relay token")
        self.relay_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.relay_token.setPlaceholderText("stored — leave empty to keep it" if service.relay_token()
                                            else "from `ghl-relay token create --name this-pc`")
        relay_form.addRow("Relay address", self.relay_url)
        relay_form.addRow("Relay token", self.relay_token)
        layout.addWidget(self.relay_box)

        self.direct_box = QWidget()
        direct_form = QFormLayout(self.direct_box)
        direct_form.setContentsMargins(0, 0, 0, 0)
        self.public_url = QLineEdit(service.progress().delivery_url or "")
        self.public_url.setObjectName("publicUrl")
        self.public_url.setAccessibleName("Tunnel's public address")
        self.public_url.setPlaceholderText("https://my-tunnel.example.com")
        direct_form.addRow("Tunnel address", self.public_url)
        direct_form.addRow(_hint(f"Point the tunnel at <code>http://{settings.webhook_host}:"
                                 f"{settings.webhook_port}</code> on this computer (the app's webhook endpoint)."))
        layout.addWidget(self.direct_box)

        row, self.delivery_url, self.copy = _copy_row("deliveryUrl", "", wizard.clipboard, "Delivery URL")
        layout.addWidget(QLabel("Delivery URL to enter in the conversation provider:"))
        layout.addWidget(row)
        self.app_webhook = QLabel()
        self.app_webhook.setObjectName("appWebhookUrl")
        self.app_webhook.setWordWrap(True)
        self.app_webhook.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.app_webhook)
        self.test = QPushButton("Send a test delivery")
        self.test.setObjectName("testDelivery")
        self.test.setAccessibleName("Send a test delivery through this path")
        self.result = ResultLabel("deliveryResult")
        test_row = QHBoxLayout()
        test_row.addWidget(self.test)
        test_row.addStretch(1)
        layout.addLayout(test_row)
        layout.addWidget(self.result)
        layout.addStretch(1)

        (self.relay_mode if settings.relay_url else self.direct_mode).setChecked(True)
        for box in (self.relay_url, self.public_url):
            box.textChanged.connect(self._update)
        self.relay_mode.toggled.connect(self._update)
        self.test.clicked.connect(self._start_test)
        self._passed_for: str | None = None
        if service.status().step(Step.DELIVERY).done:
            self._passed_for = self._target()
        self._update()

    def _target(self) -> str:
        box = self.relay_url if self.relay_mode.isChecked() else self.public_url
        return box.text().strip().rstrip("/")

    def _update(self) -> None:
        relay = self.relay_mode.isChecked()
        self.relay_box.setVisible(relay)
        self.direct_box.setVisible(not relay)
        base = self._target()
        if base.endswith(PROVIDER_WEBHOOK_PATH):
            base = base[: -len(PROVIDER_WEBHOOK_PATH)]
        self.delivery_url.setText(base + PROVIDER_WEBHOOK_PATH if base else "")
        self.app_webhook.setText(f"App webhook URL (install/uninstall events): {base}{APP_WEBHOOK_PATH}"
                                 if base else "")
        if self._passed_for != self._target():
            self.result.show_outcome(None)
        self.completeChanged.emit()

    def _save(self) -> asyncio.Task[Any] | None:
        """The answers to settings.json now; the relay token to the secret store on a task (off the
        loop), which :meth:`_run` waits for before it tests with it."""
        if self.relay_mode.isChecked():
            self.w.service.save_relay_url(self.relay_url.text())
            token = self.relay_token.text().strip()
            return self.w.tasks.spawn(self.w.service.store_relay_token(token), "relay-token") if token else None
        self.w.service.save_direct(self.public_url.text())
        return None

    def _start_test(self) -> None:
        saving = self._save()
        self.test.setEnabled(False)
        self.result.show_outcome(None, "Sending a test delivery…")
        self.w.tasks.spawn(self._run(self._target(), saving), "delivery")

    async def _run(self, target: str, saving: asyncio.Task[Any] | None = None) -> None:
        try:
            if saving is not None:
                await saving
            outcome = await self.w.service.check_delivery()
        finally:
            self.test.setEnabled(True)
        self.result.show_outcome(outcome)
        self._passed_for = target if outcome.ok else None
        self.w.check_finished.emit(Step.DELIVERY.value, outcome.ok)

    def validatePage(self) -> bool:
        if self._target():
            self._save()
        return True


class _SummaryPage(QWizardPage):
    def __init__(self, wizard: FirstRunWizard) -> None:
        super().__init__()
        self.w = wizard
        self.setTitle("Summary")
        layout = QVBoxLayout(self)
        self.lines = QLabel()
        self.lines.setObjectName("summary")
        self.lines.setWordWrap(True)
        self.lines.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.lines)
        layout.addWidget(_hint("Steps still open stay in the checklist at the top of the window. A new client ID "
                               "or delivery mode applies at the next start of ghl-desktop."))
        layout.addStretch(1)

    def initializePage(self) -> None:
        status = self.w.service.status()
        self.lines.setText("\n".join(f"{'✓' if s.done else '○'}  {s.title}" for s in status.steps))


class FirstRunWizard(QWizard):
    """Set up a real HighLevel app: credentials, provider, redirect URI, delivery. Signals: check_finished."""

    check_finished = Signal(str, bool)

    def __init__(self, service: SetupService, parent: QWidget | None = None, *,
                 clipboard: Clipboard = system_clipboard) -> None:
        super().__init__(parent)
        self.service = service
        self.clipboard = clipboard
        self.tasks = _Tasks()
        self.setObjectName("firstRunWizard")
        self.setWindowTitle("Set up ghl-desktop")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setMinimumSize(620, 460)
        self.credentials = _CredentialsPage(self)
        self.provider = _ProviderPage(self)
        self.redirect = _RedirectPage(self)
        self.delivery = _DeliveryPage(self)
        self.summary = _SummaryPage(self)
        for page in (self.credentials, self.provider, self.redirect, self.delivery, self.summary):
            self.addPage(page)
        self.finished.connect(lambda _result: self.tasks.cancel_all())


class SetupChecklist(QFrame):
    """Above the panels until every first-run step is done. Signals: open_wizard_requested."""

    open_wizard_requested = Signal()

    def __init__(self, service: SetupService, parent: QWidget | None = None, *,
                 clipboard: Clipboard = system_clipboard) -> None:
        super().__init__(parent)
        self.service = service
        self.clipboard = clipboard
        self.setObjectName("setupChecklist")
        self.setAccessibleName("Setup checklist")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(4)
        head = QHBoxLayout()
        self.title = QLabel()
        self.title.setObjectName("setupChecklistTitle")
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.continue_button = QPushButton("Continue setup…")
        self.continue_button.setObjectName("continueSetup")
        self.continue_button.setAccessibleName("Continue setting up HighLevel")
        self.continue_button.clicked.connect(self.open_wizard_requested.emit)
        head.addWidget(self.title, 1)
        head.addWidget(self.continue_button)
        layout.addLayout(head)
        self.wizard: FirstRunWizard | None = None  # set by install_first_run once opened
        self.rows: dict[Step, QLabel] = {}
        for step in Step:
            line = QHBoxLayout()
            label = QLabel()
            label.setObjectName(f"setupStep_{step.value}")
            label.setWordWrap(True)
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            line.addWidget(label, 1)
            if step is Step.REDIRECT_URI:
                self.copy_redirect = QPushButton("Copy")
                self.copy_redirect.setObjectName("copyRedirectUri")
                self.copy_redirect.setAccessibleName("Copy the redirect URI")
                self.copy_redirect.clicked.connect(lambda: self.clipboard(self.service.redirect_uri))
                line.addWidget(self.copy_redirect)
            layout.addLayout(line)
            self.rows[step] = label
        self.refresh()

    def refresh(self) -> SetupStatus:
        status = self.service.status()
        total = len(status.steps)
        self.title.setText(f"Finish setting up HighLevel — {status.done_count} of {total} done")
        for item in status.steps:
            label = self.rows[item.step]
            label.setText(f"{'✓' if item.done else '○'}  {item.title}: {item.detail}")
            label.setAccessibleName(f"{item.title}: {'done' if item.done else 'to do'}")
        self.setVisible(not status.complete)
        return status


class _Window(Protocol):
    def add_top_widget(self, widget: QWidget) -> None: ...


def install_first_run(window: _Window, service: SetupService, *, sandbox: bool, parent: QWidget | None = None,
                      open_now: bool | None = None) -> SetupChecklist | None:
    """Real mode: put the checklist above the panels and, on the very first start (no step done yet),
    open the wizard. Sandbox mode: nothing. Returns the checklist (None in sandbox mode)."""
    if sandbox:
        return None
    checklist = SetupChecklist(service)
    window.add_top_widget(checklist)

    def open_wizard() -> None:
        wizard = checklist.wizard
        if wizard is None or not wizard.isVisible():
            wizard = FirstRunWizard(service, parent)
            wizard.check_finished.connect(lambda _step, _ok: checklist.refresh())
            wizard.finished.connect(lambda _result: checklist.refresh())
            wizard.rejected.connect(service.dismiss)  # cancelled: the next start does not push it again
            checklist.wizard = wizard
        wizard.show()
        wizard.raise_()
        wizard.activateWindow()

    checklist.open_wizard_requested.connect(open_wizard)
    status = checklist.refresh()
    first_time = status.done_count == 0 and not service.progress().dismissed
    if (first_time if open_now is None else open_now) and not status.complete:
        QTimer.singleShot(0, open_wizard)
    return checklist


__all__ = ["FirstRunWizard", "ResultLabel", "SetupChecklist", "install_first_run", "system_clipboard"]
