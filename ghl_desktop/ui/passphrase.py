"""Asking for the vault passphrase when the machine has no usable keyring.

The dialog says plainly why it appears (no keyring → an encrypted file holds the secrets) and where
that file is. For a new vault it asks twice; for an existing one it shows the previous error
("the passphrase does not open the vault") and asks again. Cancelling stops the start: nothing is
opened or created.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from ghl_desktop.adapters.secrets import open_secret_store, vault_path
from ghl_desktop.config import Settings
from ghl_desktop.core.errors import VaultLocked, WrongPassphrase
from ghl_desktop.core.ports import SecretStore

#: (vault path, vault is new, previous error or None) -> passphrase, or None when the user cancelled
AskPassphrase = Callable[[Path, bool, str | None], str | None]


class PassphraseDialog(QDialog):
    def __init__(self, path: Path, new: bool, error: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.new = new
        self.setWindowTitle("Create a vault passphrase" if new else "Unlock the secrets vault")
        self.setMinimumWidth(460)
        layout = QVBoxLayout(self)
        if new:
            text = (
                f"No system keyring is available on this computer, so ghl-desktop will keep your "
                f"HighLevel sign-ins in an encrypted file:<br><code>{path}</code><br><br>"
                f"Choose a passphrase. You will need it each time the app starts; it cannot be "
                f"recovered."
            )
        else:
            text = (
                f"No system keyring is available, so your HighLevel sign-ins are kept in the "
                f"encrypted file<br><code>{path}</code><br><br>Enter its passphrase."
            )
        intro = QLabel(text, self)
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.passphrase = QLineEdit(self)
        self.passphrase.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("Passphrase:", self.passphrase)
        self.confirm: QLineEdit | None = None
        if new:
            self.confirm = QLineEdit(self)
            self.confirm.setEchoMode(QLineEdit.EchoMode.Password)
            form.addRow("Repeat:", self.confirm)
        layout.addLayout(form)
        self.error = QLabel(error or "", self)
        self.error.setStyleSheet("color: #c62828;")
        self.error.setWordWrap(True)
        self.error.setVisible(bool(error))
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Create vault" if new else "Unlock")
        layout.addWidget(buttons)

    def accept(self) -> None:
        problem = self.problem()
        if problem:
            self.error.setText(problem)
            self.error.setVisible(True)
            return
        super().accept()

    def problem(self) -> str | None:
        if not self.passphrase.text():
            return "Enter a passphrase."
        if self.confirm is not None:
            if len(self.passphrase.text()) < 8:
                return "Use at least 8 characters."
            if self.confirm.text() != self.passphrase.text():
                return "The two passphrases differ."
        return None

    def value(self) -> str:
        return self.passphrase.text()


def ask_with_dialog(parent: QWidget | None = None) -> AskPassphrase:
    def ask(path: Path, new: bool, error: str | None) -> str | None:
        dialog = PassphraseDialog(path, new, error, parent)
        return dialog.value() if dialog.exec() == QDialog.DialogCode.Accepted else None

    return ask


def unlock_secret_store(settings: Settings, ask: AskPassphrase) -> SecretStore | None:
    """The keyring if usable; else the vault, asking until the passphrase opens it (None: cancelled)."""
    try:
        return open_secret_store(settings)
    except VaultLocked:
        pass
    path = vault_path(settings)
    error: str | None = None
    while True:
        phrase = ask(path, not path.exists(), error)
        if phrase is None:
            return None
        try:
            return open_secret_store(settings, phrase)
        except (WrongPassphrase, VaultLocked) as exc:
            error = str(exc)


__all__ = ["AskPassphrase", "PassphraseDialog", "ask_with_dialog", "unlock_secret_store"]
