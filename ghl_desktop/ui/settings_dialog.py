"""The settings dialog: the non-secret settings go to ``settings.json``, the two secrets to the
SecretStore only.

Why the split: ``settings.json`` is a plain file next to the database; the HighLevel client secret
and the relay token are credentials and belong in the keyring (or the encrypted vault). The secret
fields never show a stored value — they say whether one is stored, and an empty field keeps it.

The dialog edits what is saved in the data dir (file over defaults), not the running values: an
environment variable or sandbox mode may override a setting for this run, and the dialog says so.
Changes apply at the next start (the running bridge keeps its listeners), which the dialog also says.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.config import ENV_MAP, Settings, load_settings, save_settings
from ghl_desktop.core.ports import SecretStore
from ghl_desktop.ui.widgets import StatusLabel

CLIENT_SECRET_KEY = "app:client_secret"
RELAY_TOKEN_KEY = "relay:token"


def saved_settings(home: Path) -> Settings:
    """The settings as stored in ``home`` (file over defaults), without environment overrides."""
    return load_settings({"GHL_DESKTOP_HOME": str(home)})


class SettingsDialog(QDialog):
    def __init__(self, home: Path, secrets: SecretStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.home = home
        self.secrets = secrets
        self.base = saved_settings(home)
        self.saved: Settings | None = None
        self.setWindowTitle("ghl-desktop settings")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        intro = QLabel(
            f"Saved in <code>{self.base.settings_file}</code>. The client secret and the relay token go "
            f"to the secret store ({secrets.description}), never to that file. "
            "Changes apply the next time ghl-desktop starts."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)

        form = QFormLayout()
        self.client_id = QLineEdit(self.base.client_id or "")
        self.client_id.setPlaceholderText("from your HighLevel marketplace app (empty: sandbox mode)")
        form.addRow("HighLevel client ID:", self.client_id)
        self.client_secret = QLineEdit()
        self.client_secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.client_secret.setPlaceholderText(self._secret_hint(CLIENT_SECRET_KEY))
        form.addRow("HighLevel client secret:", self.client_secret)
        self.provider_id = QLineEdit(self.base.provider_id or "")
        self.provider_id.setPlaceholderText("conversation provider ID of the app")
        form.addRow("Conversation provider ID:", self.provider_id)
        self.oauth_port = self._port(self.base.oauth_redirect_port)
        form.addRow("OAuth redirect port:", self.oauth_port)
        self.webhook_host = QLineEdit(self.base.webhook_host)
        form.addRow("Webhook listen address:", self.webhook_host)
        self.webhook_port = self._port(self.base.webhook_port)
        form.addRow("Webhook port:", self.webhook_port)
        self.accept_unsigned = QCheckBox("Accept webhooks without a signature (testing only)")
        self.accept_unsigned.setChecked(self.base.accept_unsigned_webhooks)
        form.addRow("", self.accept_unsigned)
        self.relay_url = QLineEdit(self.base.relay_url or "")
        self.relay_url.setPlaceholderText("https://your-relay.example.com (empty: direct webhooks)")
        form.addRow("Relay URL:", self.relay_url)
        self.relay_token = QLineEdit()
        self.relay_token.setEchoMode(QLineEdit.EchoMode.Password)
        self.relay_token.setPlaceholderText(self._secret_hint(RELAY_TOKEN_KEY))
        form.addRow("Relay token:", self.relay_token)
        layout.addLayout(form)
        for row in range(form.rowCount()):  # every field is named by its label (screen readers)
            label_item = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
            field_item = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
            field = field_item.widget() if field_item is not None else None
            label = label_item.widget() if label_item is not None else None
            if field is not None:
                text = label.text() if isinstance(label, QLabel) else ""
                field.setAccessibleName(text.rstrip(":") or str(getattr(field, "text", lambda: "")()))

        overridden = sorted(var for name, var in ENV_MAP.items()
                            if os.environ.get(var) and name in self._edited_fields())
        self.env_note = QLabel(
            "Set in the environment, which wins over these values: " + ", ".join(overridden) if overridden else ""
        )
        self.env_note.setWordWrap(True)
        self.env_note.setVisible(bool(overridden))
        layout.addWidget(self.env_note)
        self.error = StatusLabel("settingsError")
        self.error.setAccessibleName("Settings problem")
        self.error.setWordWrap(True)
        self.error.setVisible(False)
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setAccessibleName("Save settings")
        buttons.button(QDialogButtonBox.StandardButton.Cancel).setAccessibleName("Cancel")
        layout.addWidget(buttons)

    @staticmethod
    def _edited_fields() -> set[str]:
        return {"client_id", "client_secret", "provider_id", "oauth_redirect_port", "webhook_host", "webhook_port",
                "accept_unsigned_webhooks", "relay_url"}

    @staticmethod
    def _port(value: int) -> QSpinBox:
        box = QSpinBox()
        box.setRange(1, 65535)
        box.setValue(value)
        return box

    def _secret_hint(self, key: str) -> str:
        try:
            stored = self.secrets.get(key) is not None
        except Exception:
            stored = False
        return "stored — leave empty to keep it" if stored else "not set"

    def problem(self) -> str | None:
        relay = self.relay_url.text().strip()
        if relay:
            parsed = urlparse(relay)
            if parsed.scheme not in ("http", "https", "ws", "wss") or not parsed.netloc:
                return "The relay URL must look like https://relay.example.com"
        if not self.webhook_host.text().strip():
            return "Enter the address the webhook endpoint listens on (127.0.0.1 unless told otherwise)."
        if self.oauth_port.value() == self.webhook_port.value():
            return "The OAuth redirect port and the webhook port must differ."
        return None

    def accept(self) -> None:
        problem = self.problem()
        if problem:
            self.error.say(problem, error=True)
            return
        try:
            self.save()
        except Exception as exc:  # a full disk, a locked keyring: say it, keep the dialog open
            self.error.say(f"Could not save: {exc}", error=True)
            return
        super().accept()

    def save(self) -> Settings:
        """Secrets first (so a failing keyring saves nothing), then settings.json."""
        for box, key in ((self.client_secret, CLIENT_SECRET_KEY), (self.relay_token, RELAY_TOKEN_KEY)):
            value = box.text().strip()
            if value:
                self.secrets.set(key, value)
                box.clear()
        updated = replace(
            self.base,
            client_id=self.client_id.text().strip() or None,
            client_secret=None,
            provider_id=self.provider_id.text().strip() or None,
            oauth_redirect_port=self.oauth_port.value(),
            webhook_host=self.webhook_host.text().strip(),
            webhook_port=self.webhook_port.value(),
            accept_unsigned_webhooks=self.accept_unsigned.isChecked(),
            relay_url=self.relay_url.text().strip() or None,
        )
        save_settings(updated)
        self.saved = updated
        return updated


__all__ = ["CLIENT_SECRET_KEY", "RELAY_TOKEN_KEY", "SettingsDialog", "saved_settings"]
