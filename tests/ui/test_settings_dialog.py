"""The settings dialog persists the non-secret settings and sends the secrets ONLY to the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from ghl_desktop.config import load_settings
from ghl_desktop.ui.main import with_stored_client_secret
from ghl_desktop.ui.main_window import MainWindow
from ghl_desktop.ui.settings_dialog import SettingsDialog
from tests.fakes.secrets import MemorySecretStore

CLIENT_SECRET = "cs-9f8e7d6c5b4a-secret"
RELAY_TOKEN = "rt-0123456789abcdef-token"


def test_settings_persist_and_secrets_stay_out_of_the_file(window: MainWindow, qtbot, data_home: Path,  # type: ignore[no-untyped-def]
                                                           secrets: MemorySecretStore) -> None:
    dialog = window.open_settings()
    assert isinstance(dialog, SettingsDialog) and dialog.isVisible()
    assert dialog.client_secret.placeholderText() == "not set"
    dialog.client_id.setText("my-client-id")
    dialog.client_secret.setText(CLIENT_SECRET)
    dialog.webhook_host.setText("127.0.0.1")
    dialog.webhook_port.setValue(9911)
    dialog.oauth_port.setValue(53999)
    dialog.accept_unsigned.setChecked(True)
    dialog.relay_url.setText("https://relay.example.com")
    dialog.relay_token.setText(RELAY_TOKEN)
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()

    stored = (data_home / "settings.json").read_text("utf-8")
    assert CLIENT_SECRET not in stored and RELAY_TOKEN not in stored
    data = json.loads(stored)
    assert "client_secret" not in data
    assert data["webhook_port"] == 9911 and data["oauth_redirect_port"] == 53999
    assert data["accept_unsigned_webhooks"] is True and data["relay_url"] == "https://relay.example.com"
    assert data["client_id"] == "my-client-id"
    assert secrets.get("app:client_secret") == CLIENT_SECRET
    assert secrets.get("relay:token") == RELAY_TOKEN
    assert "Restart ghl-desktop" in window.locations.connect_status.text()

    loaded = load_settings()
    assert (loaded.webhook_port, loaded.oauth_redirect_port, loaded.relay_url) == (
        9911, 53999, "https://relay.example.com")
    assert loaded.client_secret is None  # not from the file...
    merged = with_stored_client_secret(loaded, secrets)
    assert merged.client_secret == CLIENT_SECRET and merged.has_ghl_credentials  # ...but from the store

    # opening it again shows that secrets are stored without showing them; empty keeps them
    again = window.open_settings()
    assert isinstance(again, SettingsDialog)
    assert again.client_secret.text() == "" and again.client_secret.placeholderText().startswith("stored")
    assert again.webhook_port.value() == 9911
    qtbot.mouseClick(again.save_button, Qt.MouseButton.LeftButton)
    assert secrets.get("app:client_secret") == CLIENT_SECRET and secrets.get("relay:token") == RELAY_TOKEN


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("relay_url", "relay.example.com", "The relay URL must look like"),
        ("webhook_host", "  ", "Enter the address"),
        ("webhook_port", 53682, "must differ"),
    ],
)
def test_bad_input_is_refused_with_a_sentence_and_nothing_is_saved(
    qtbot, data_home: Path, secrets: MemorySecretStore, field: str, value: object, problem: str  # type: ignore[no-untyped-def]
) -> None:
    dialog = SettingsDialog(data_home, secrets)
    qtbot.addWidget(dialog)
    dialog.relay_token.setText(RELAY_TOKEN)
    widget = getattr(dialog, field)
    widget.setValue(value) if isinstance(value, int) else widget.setText(value)
    dialog.accept()
    assert not dialog.error.isHidden() and problem in dialog.error.text()
    assert not (data_home / "settings.json").exists()
    assert secrets.get("relay:token") is None


def test_environment_overrides_are_named(qtbot, data_home: Path, secrets: MemorySecretStore,  # type: ignore[no-untyped-def]
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_WEBHOOK_PORT", "9000")
    dialog = SettingsDialog(data_home, secrets)
    qtbot.addWidget(dialog)
    assert "GHL_WEBHOOK_PORT" in dialog.env_note.text()
    assert dialog.webhook_port.value() == 8787  # the saved value is edited, not the environment's
    dialog.accept()
    assert json.loads((data_home / "settings.json").read_text())["webhook_port"] == 8787


def test_every_settings_control_has_an_accessible_name(window: MainWindow) -> None:
    from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QLineEdit, QWidget

    dialog = window.open_settings()
    try:
        missing = [f"{type(w).__name__} {w.objectName()!r}" for w in dialog.findChildren(QWidget)
                   if isinstance(w, (QAbstractButton, QLineEdit, QAbstractSpinBox)) and w.isVisibleTo(dialog)
                   and not w.accessibleName() and not isinstance(w.parentWidget(), QAbstractSpinBox)]
        assert missing == []
        assert dialog.client_id.accessibleName() == "HighLevel client ID"  # type: ignore[attr-defined]
    finally:
        dialog.close()
