"""The GUI asks for the vault passphrase only when there is no keyring, and keeps asking on a wrong one."""

from __future__ import annotations

from pathlib import Path

import keyring
from keyring.backends import fail

from ghl_desktop.adapters.secrets import KeyringSecretStore, VaultSecretStore
from ghl_desktop.config import load_settings
from ghl_desktop.ui.passphrase import PassphraseDialog, unlock_secret_store


def test_no_question_when_the_keyring_works() -> None:
    asked: list[object] = []
    store = unlock_secret_store(load_settings(), lambda *a: asked.append(a) or "x")
    assert isinstance(store, KeyringSecretStore) and asked == []


def test_new_vault_then_wrong_then_right_passphrase(data_home: Path) -> None:
    keyring.set_keyring(fail.Keyring())
    asked: list[tuple[Path, bool, str | None]] = []

    def ask(path: Path, new: bool, error: str | None) -> str | None:
        asked.append((path, new, error))
        return "first passphrase"

    store = unlock_secret_store(load_settings(), ask)
    assert isinstance(store, VaultSecretStore)
    store.set("app:client_secret", "cs")
    assert asked == [(data_home / "secrets.vault", True, None)]

    answers = iter(["wrong one", "first passphrase"])
    asked.clear()

    def ask_again(path: Path, new: bool, error: str | None) -> str | None:
        asked.append((path, new, error))
        return next(answers)

    reopened = unlock_secret_store(load_settings(), ask_again)
    assert reopened is not None and reopened.get("app:client_secret") == "cs"
    assert [new for _, new, _ in asked] == [False, False]
    assert asked[0][2] is None and "does not open the vault" in (asked[1][2] or "")


def test_cancel_opens_nothing(data_home: Path) -> None:
    keyring.set_keyring(fail.Keyring())
    assert unlock_secret_store(load_settings(), lambda *a: None) is None
    assert not (data_home / "secrets.vault").exists()


def test_dialog_checks_the_repeat_for_a_new_vault(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dialog = PassphraseDialog(tmp_path / "secrets.vault", new=True)
    qtbot.addWidget(dialog)
    assert dialog.confirm is not None
    qtbot.keyClicks(dialog.passphrase, "correct horse")
    qtbot.keyClicks(dialog.confirm, "correct hose")
    dialog.accept()
    assert dialog.result() != PassphraseDialog.DialogCode.Accepted
    assert dialog.error.text() == "The two passphrases differ."
    dialog.confirm.setText("correct horse")
    dialog.accept()
    assert dialog.result() == PassphraseDialog.DialogCode.Accepted
    assert dialog.value() == "correct horse"


def test_dialog_for_an_existing_vault_shows_the_previous_error(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dialog = PassphraseDialog(tmp_path / "secrets.vault", new=False, error="the passphrase does not open the vault")
    qtbot.addWidget(dialog)
    assert dialog.confirm is None
    assert not dialog.error.isHidden() and "does not open" in dialog.error.text()
    assert dialog.ok_button.text() == "Unlock"
