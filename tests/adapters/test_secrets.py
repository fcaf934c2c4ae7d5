"""Secret stores: the keyring when it works, else the encrypted vault; never plaintext on disk."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import chainer, fail, null

from ghl_desktop.adapters.secrets import (
    PASSPHRASE_ENV,
    KeyringSecretStore,
    ScryptParams,
    VaultSecretStore,
    open_secret_store,
    probe_keyring,
    vault_path,
)
from ghl_desktop.config import load_settings
from ghl_desktop.core.errors import SecretStoreError, VaultLocked, WrongPassphrase
from ghl_desktop.core.ports import SecretStore

FAST = ScryptParams(log2_n=10, r=8, p=1)  # cheap KDF for tests; the format stores the parameters
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsb2MxIn0.c2lnbmF0dXJlLXZhbHVl"


class BrokenKeyring(KeyringBackend):
    """A backend that claims to work but raises like a locked/absent daemon does.

    Priority 0 keeps keyring's own discovery (and the chainer) from ever picking it."""

    priority = 0  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.InitError("Failed to create the collection: Prompt dismissed")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.InitError("Failed to create the collection: Prompt dismissed")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.InitError("Failed to create the collection: Prompt dismissed")


def test_keyring_store_round_trip_in_service_ghl_desktop() -> None:
    store: SecretStore = KeyringSecretStore()
    store.set("location:loc1:access_token", TOKEN)
    assert store.get("location:loc1:access_token") == TOKEN
    assert keyring.get_password("ghl-desktop", "location:loc1:access_token") == TOKEN
    store.delete("location:loc1:access_token")
    assert store.get("location:loc1:access_token") is None
    store.delete("location:loc1:access_token")  # deleting twice is fine


def test_keyring_errors_become_secret_store_errors() -> None:
    store = KeyringSecretStore(BrokenKeyring())
    with pytest.raises(SecretStoreError, match="could not store"):
        store.set("app:client_secret", "s3cret")
    with pytest.raises(SecretStoreError, match="could not read"):
        store.get("app:client_secret")


@pytest.mark.parametrize(
    "backend",
    [fail.Keyring(), null.Keyring(), chainer.ChainerBackend(), BrokenKeyring()],
    ids=["fail", "null", "empty-chainer", "init-error"],
)
def test_unusable_keyrings_are_detected(backend: KeyringBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(backend, chainer.ChainerBackend):
        monkeypatch.setattr(chainer.ChainerBackend, "backends", [])
    probe = probe_keyring(backend)
    assert not probe.usable
    assert probe.reason


def test_open_secret_store_uses_a_working_keyring_and_leaves_no_probe_entry() -> None:
    store = open_secret_store(load_settings())
    assert isinstance(store, KeyringSecretStore)
    backend = keyring.get_keyring()
    assert getattr(backend, "store", {}) == {}  # the probe entry was deleted again
    assert "MemoryKeyring" in store.description


def test_without_keyring_and_passphrase_start_is_refused_with_the_env_var_named(data_home: Path) -> None:
    with pytest.raises(VaultLocked) as err:
        open_secret_store(load_settings(), backend=fail.Keyring())
    assert PASSPHRASE_ENV in str(err.value)
    assert "encrypted vault" in str(err.value)
    assert not (data_home / "secrets.vault").exists()


def test_without_keyring_the_env_passphrase_opens_the_vault(data_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    settings = load_settings()
    store = open_secret_store(settings, backend=fail.Keyring(), params=FAST)
    assert isinstance(store, VaultSecretStore)
    assert store.path == vault_path(settings) == data_home / "secrets.vault"
    assert "encrypted vault" in store.description
    store.set("app:client_secret", "shh-client-secret")
    again = open_secret_store(settings, backend=null.Keyring())
    assert again.get("app:client_secret") == "shh-client-secret"


def test_vault_round_trip_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "v" / "secrets.vault"
    store = VaultSecretStore(path, "pass phrase", params=FAST)
    store.set("location:L1:refresh_token", TOKEN)
    store.set("app:client_secret", "cs-123")
    store.delete("app:client_secret")
    reopened = VaultSecretStore(path, "pass phrase")
    assert reopened.get("location:L1:refresh_token") == TOKEN
    assert reopened.get("app:client_secret") is None
    assert reopened.keys() == ["location:L1:refresh_token"]


def test_vault_file_is_private_and_never_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "vault" / "secrets.vault"
    store = VaultSecretStore(path, "pass phrase", params=FAST)
    store.set("location:L1:access_token", TOKEN)
    store.set("app:client_secret", "very-secret-client-value")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    blob = path.read_bytes()
    for needle in (TOKEN.encode(), b"very-secret-client-value", b"access_token", b"client_secret", b"pass phrase"):
        assert needle not in blob
    assert [p.name for p in path.parent.iterdir()] == ["secrets.vault"]  # no temp file left behind


def test_each_write_uses_a_fresh_nonce(tmp_path: Path) -> None:
    path = tmp_path / "secrets.vault"
    store = VaultSecretStore(path, "pp", params=FAST)
    store.set("k", "v1")
    first = path.read_bytes()
    store.set("k", "v2")
    store.set("k", "v1")
    assert path.read_bytes() != first  # same content, different ciphertext


def test_wrong_passphrase_is_refused_and_the_vault_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "secrets.vault"
    VaultSecretStore(path, "right", params=FAST).set("k", "v")
    before = path.read_bytes()
    with pytest.raises(WrongPassphrase):
        VaultSecretStore(path, "wrong")
    assert path.read_bytes() == before
    assert VaultSecretStore(path, "right").get("k") == "v"


def test_tampered_vault_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "secrets.vault"
    VaultSecretStore(path, "right", params=FAST).set("k", "v")
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(WrongPassphrase):
        VaultSecretStore(path, "right")


def test_a_file_that_is_not_a_vault_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "secrets.vault"
    path.write_text('{"app:client_secret": "plaintext"}')
    with pytest.raises(SecretStoreError, match="not a ghl-desktop vault"):
        VaultSecretStore(path, "anything")
    assert path.read_text() == '{"app:client_secret": "plaintext"}'  # nothing lost


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VaultLocked):
        VaultSecretStore(tmp_path / "secrets.vault", "")
    assert not (tmp_path / "secrets.vault").exists()


def test_a_failed_write_keeps_the_previous_vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vault" / "secrets.vault"
    store = VaultSecretStore(path, "pp", params=FAST)
    store.set("k", "old")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(SecretStoreError, match="cannot write"):
        store.set("k", "new")
    monkeypatch.undo()
    assert store.get("k") == "old"
    assert VaultSecretStore(path, "pp").get("k") == "old"
    assert [p.name for p in path.parent.iterdir()] == ["secrets.vault"]


@pytest.mark.secret_service
def test_real_secret_service_round_trip() -> None:
    """Runs inside scripts/run-tests.sh (dbus-run-session + unlocked gnome-keyring)."""
    if os.environ.get("GHL_TEST_SECRET_SERVICE") != "1":
        if os.environ.get("CI"):
            pytest.fail("CI is set but no Secret Service test environment (GHL_TEST_SECRET_SERVICE=1) is present")
        pytest.skip("needs a real Secret Service: run via scripts/run-tests.sh (GHL_TEST_SECRET_SERVICE=1)")
    from keyring.backends import SecretService

    store = open_secret_store(load_settings())
    assert isinstance(store, KeyringSecretStore)
    real = [
        b
        for b in ([store.backend] if not isinstance(store.backend, chainer.ChainerBackend) else store.backend.backends)
    ]
    assert any(isinstance(b, SecretService.Keyring) for b in real), store.backend
    assert "Secret Service" in store.description
    key = "location:ci-test:access_token"
    store.set(key, TOKEN)
    try:
        assert SecretService.Keyring().get_password("ghl-desktop", key) == TOKEN
        assert store.get(key) == TOKEN
    finally:
        store.delete(key)
    assert store.get(key) is None
