from __future__ import annotations

import json
from pathlib import Path

import pytest

from ghl_desktop.config import DEFAULT_API_BASE, load_settings, save_settings, update_settings


def test_defaults_and_env(data_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.home == data_home
    assert s.api_base == DEFAULT_API_BASE
    assert s.database_url == f"sqlite:///{data_home / 'ghl-desktop.db'}"
    assert s.webhook_host == "127.0.0.1"
    assert not s.has_ghl_credentials
    monkeypatch.setenv("GHL_CLIENT_ID", "abc-123")
    monkeypatch.setenv("GHL_CLIENT_SECRET", "s3cr3t")
    monkeypatch.setenv("GHL_DESKTOP_DB_URL", "postgresql+psycopg://x@127.0.0.1/db")
    monkeypatch.setenv("GHL_ACCEPT_UNSIGNED_WEBHOOKS", "true")
    s = load_settings()
    assert s.has_ghl_credentials and s.database_url.startswith("postgresql")
    assert s.accept_unsigned_webhooks is True


def test_settings_file_persists_only_non_secrets(data_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = update_settings(load_settings(), client_secret="TOPSECRET", provider_id="p1", webhook_port=9999)
    path = save_settings(s)
    text = path.read_text()
    assert "TOPSECRET" not in text and "client_secret" not in text
    assert json.loads(text)["webhook_port"] == 9999
    again = load_settings()
    assert again.provider_id == "p1" and again.webhook_port == 9999 and again.client_secret is None
    monkeypatch.setenv("GHL_WEBHOOK_PORT", "7000")
    assert load_settings().webhook_port == 7000  # environment wins over the file


def test_a_corrupt_settings_file_falls_back_to_defaults(data_home: Path) -> None:
    (data_home / "settings.json").write_text("{not json")
    assert load_settings().webhook_port == 8787


def test_group_and_call_settings_from_env(data_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.ignore_groups is False and s.reject_calls is False and s.reject_call_text
    monkeypatch.setenv("GHL_DESKTOP_IGNORE_GROUPS", "1")
    monkeypatch.setenv("GHL_DESKTOP_REJECT_CALLS", "yes")
    monkeypatch.setenv("GHL_DESKTOP_REJECT_CALL_TEXT", "Please write instead")
    s = load_settings()
    assert s.ignore_groups is True and s.reject_calls is True
    assert s.reject_call_text == "Please write instead"


def test_group_and_call_settings_reach_the_bridge(data_home: Path) -> None:
    from dataclasses import replace

    from ghl_desktop.runtime import bridge_options
    from ghl_desktop.services.bridge import BridgeOptions

    off = bridge_options(BridgeOptions(), load_settings())
    assert (off.ignore_groups, off.reject_calls) == (False, False)
    on = bridge_options(BridgeOptions(), replace(load_settings(), ignore_groups=True, reject_calls=True,
                                                 reject_call_text="Write to us"))
    assert (on.ignore_groups, on.reject_calls, on.reject_call_text) == (True, True, "Write to us")
