"""Where tokens and the client secret live: the OS keyring, or a passphrase-protected vault file.

Secrets never go to the database, the settings file or the logs. On a desktop with a working keyring
(GNOME Keyring / KWallet through the Secret Service, macOS Keychain, Windows Credential Manager) the
keyring holds them. When no keyring backend is usable (a bare server, a minimal container) the secrets
go to ``secrets.vault`` in the data dir: one file, encrypted as a whole with AES-256-GCM under a key
derived from the user's passphrase with scrypt. The vault is never written in clear, not even
temporarily: every change re-encrypts the whole content to a temp file (mode 0600) that atomically
replaces the old one.

Key names (agreed between rooms): ``location:<id>:access_token``, ``location:<id>:refresh_token``,
``company:<id>:access_token``, ``company:<id>:refresh_token``, ``app:client_secret``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as _random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keyring
import keyring.errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from keyring.backend import KeyringBackend

from ghl_desktop.config import Settings
from ghl_desktop.core.errors import SecretStoreError, VaultLocked, WrongPassphrase

log = logging.getLogger("ghl.secrets")

SERVICE = "ghl-desktop"
VAULT_FILE_NAME = "secrets.vault"
PASSPHRASE_ENV = "GHL_DESKTOP_VAULT_PASSPHRASE"
_PROBE_KEY = "ghl-desktop-probe"

#: The message a headless start shows when the vault is needed and no passphrase was given.
VAULT_PASSPHRASE_REQUIRED = (
    "No usable system keyring was found, so ghl-desktop keeps its secrets in an encrypted vault file "
    "({path}). Set the environment variable " + PASSPHRASE_ENV + " to the vault passphrase "
    "(a new vault is created with it if none exists yet); ghl-desktop will not start without it."
)


# --- keyring ------------------------------------------------------------------------------------

_BACKEND_NAMES = {
    "SecretService": "GNOME Keyring / KWallet (Secret Service)",
    "kwallet": "KDE Wallet",
    "macOS": "macOS Keychain",
    "Windows": "Windows Credential Manager",
    "libsecret": "GNOME Keyring (libsecret)",
}


def _backends_of(backend: KeyringBackend) -> list[KeyringBackend]:
    """The real backends behind a chainer (or the backend itself)."""
    from keyring.backends import chainer

    if isinstance(backend, chainer.ChainerBackend):
        return list(backend.backends)
    return [backend]


def describe_backend(backend: KeyringBackend) -> str:
    """Plain words for the user about a keyring backend ("macOS Keychain", ...)."""
    parts = []
    for real in _backends_of(backend):
        module = type(real).__module__.rsplit(".", 1)[-1]
        parts.append(_BACKEND_NAMES.get(module, f"system keyring ({type(real).__module__}.{type(real).__name__})"))
    return " + ".join(parts) if parts else "no keyring"


@dataclass(frozen=True, slots=True)
class KeyringProbe:
    """The result of trying the keyring once: usable or not, and why."""

    usable: bool
    backend: KeyringBackend
    description: str
    reason: str = ""


def probe_keyring(backend: KeyringBackend | None = None) -> KeyringProbe:
    """Decide whether a keyring backend really works: store, read back and delete a test entry.

    keyring picks a backend by priority, which on a headless box is ``fail.Keyring`` (raises on every
    call) or, when configured so, ``null.Keyring`` (silently drops writes); a chainer with no backends
    behaves like ``fail``. Only a round trip tells them apart from a working one."""
    from keyring.backends import chainer, fail, null

    kr = backend if backend is not None else keyring.get_keyring()
    desc = describe_backend(kr)
    if isinstance(kr, fail.Keyring | null.Keyring):
        return KeyringProbe(False, kr, desc, f"keyring backend {type(kr).__module__} cannot store secrets")
    if isinstance(kr, chainer.ChainerBackend) and not kr.backends:
        return KeyringProbe(False, kr, desc, "no keyring backend is available")
    value = _random.token_hex(8)
    try:
        kr.set_password(SERVICE, _PROBE_KEY, value)
        read = kr.get_password(SERVICE, _PROBE_KEY)
        kr.delete_password(SERVICE, _PROBE_KEY)
    except (keyring.errors.KeyringError, OSError) as exc:
        return KeyringProbe(False, kr, desc, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # D-Bus/jeepney errors are not KeyringErrors
        return KeyringProbe(False, kr, desc, f"{type(exc).__name__}: {exc}")
    if read != value:
        return KeyringProbe(False, kr, desc, "the keyring did not return what was stored")
    return KeyringProbe(True, kr, desc)


class KeyringSecretStore:
    """SecretStore on the OS keyring (service name ``ghl-desktop``, username = key)."""

    def __init__(self, backend: KeyringBackend | None = None, service: str = SERVICE) -> None:
        self.backend = backend if backend is not None else keyring.get_keyring()
        self.service = service

    @property
    def description(self) -> str:
        return describe_backend(self.backend)

    def get(self, key: str) -> str | None:
        try:
            return self.backend.get_password(self.service, key)
        except keyring.errors.KeyringError as exc:
            raise SecretStoreError(f"could not read {key!r} from the keyring: {exc}") from exc

    def set(self, key: str, value: str) -> None:
        try:
            self.backend.set_password(self.service, key, value)
        except keyring.errors.KeyringError as exc:
            raise SecretStoreError(f"could not store {key!r} in the keyring: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.backend.delete_password(self.service, key)
        except keyring.errors.PasswordDeleteError:
            return  # already absent: deleting is idempotent
        except keyring.errors.KeyringError as exc:
            raise SecretStoreError(f"could not delete {key!r} from the keyring: {exc}") from exc


# --- vault --------------------------------------------------------------------------------------

_MAGIC = b"GHLVAULT1\n"
_HEADER = struct.Struct(">BII16s12s")  # log2(n), r, p, salt, nonce
_SALT_LEN = 16
_NONCE_LEN = 12


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost. The default (n=2**15, r=8) takes about 0.1 s and 32 MB; tests pass a cheaper one."""

    log2_n: int = 15
    r: int = 8
    p: int = 1


class VaultSecretStore:
    """SecretStore in one passphrase-protected file: scrypt-derived key, AES-256-GCM, atomic rewrite.

    The file is ``magic | log2(n) r p | salt | nonce | AES-GCM(json)`` with the magic and header as
    associated data, so a tampered header fails like a wrong passphrase would. The salt is random per
    vault, the nonce random per write."""

    def __init__(self, path: Path, passphrase: str, *, params: ScryptParams | None = None) -> None:
        if not passphrase:
            raise VaultLocked("the vault passphrase must not be empty")
        self.path = Path(path)
        self._values: dict[str, str]
        if self.path.exists():
            self._salt, self._params, self._values, self._key = self._open(passphrase)
        else:
            self._params = params or ScryptParams()
            self._salt = os.urandom(_SALT_LEN)
            self._key = _derive(passphrase, self._salt, self._params)
            self._values = {}
            self._write()
            log.info("created a new encrypted vault at %s", self.path)

    @property
    def description(self) -> str:
        return f"encrypted vault file {self.path.name} (no system keyring)"

    def get(self, key: str) -> str | None:
        return self._values.get(key)

    def set(self, key: str, value: str) -> None:
        if self._values.get(key) == value:
            return
        updated = dict(self._values)
        updated[key] = value
        self._write(updated)
        self._values = updated

    def delete(self, key: str) -> None:
        if key not in self._values:
            return
        updated = dict(self._values)
        del updated[key]
        self._write(updated)
        self._values = updated

    def keys(self) -> list[str]:
        return sorted(self._values)

    # -- file format --

    def _open(self, passphrase: str) -> tuple[bytes, ScryptParams, dict[str, str], bytes]:
        try:
            blob = self.path.read_bytes()
        except OSError as exc:
            raise SecretStoreError(f"cannot read the vault file {self.path}: {exc}") from exc
        head_len = len(_MAGIC) + _HEADER.size
        if not blob.startswith(_MAGIC) or len(blob) < head_len + 16:
            raise SecretStoreError(f"{self.path} is not a ghl-desktop vault file (or it is damaged)")
        log2_n, r, p, salt, nonce = _HEADER.unpack_from(blob, len(_MAGIC))
        if not (10 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
            raise SecretStoreError(f"{self.path} has an invalid vault header (damaged file?)")
        params = ScryptParams(log2_n, r, p)
        key = _derive(passphrase, salt, params)
        try:
            plain = AESGCM(key).decrypt(nonce, blob[head_len:], blob[:head_len])
        except InvalidTag:
            raise WrongPassphrase(f"the passphrase does not open the vault {self.path}") from None
        try:
            data: Any = json.loads(plain.decode("utf-8"))
        except ValueError as exc:
            raise SecretStoreError(f"the vault {self.path} decrypted but its content is damaged") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise SecretStoreError(f"the vault {self.path} decrypted but its content is damaged")
        return salt, params, dict(data), key

    def _write(self, values: dict[str, str] | None = None) -> None:
        content = self._values if values is None else values
        nonce = os.urandom(_NONCE_LEN)
        header = _MAGIC + _HEADER.pack(self._params.log2_n, self._params.r, self._params.p, self._salt, nonce)
        sealed = AESGCM(self._key).encrypt(nonce, json.dumps(content, sort_keys=True).encode("utf-8"), header)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{_random.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(header + sealed)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)  # in case the umask or the filesystem widened it
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SecretStoreError(f"cannot write the vault file {self.path}: {exc}") from exc
        _fsync_dir(self.path.parent)


def _derive(passphrase: str, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=2**params.log2_n, r=params.r, p=params.p)
    return kdf.derive(passphrase.encode("utf-8"))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- choosing ----------------------------------------------------------------------------------


def vault_path(settings: Settings) -> Path:
    return settings.home / VAULT_FILE_NAME


def open_secret_store(
    settings: Settings,
    passphrase: str | None = None,
    *,
    backend: KeyringBackend | None = None,
    environ: dict[str, str] | None = None,
    params: ScryptParams | None = None,
) -> KeyringSecretStore | VaultSecretStore:
    """The keyring when a usable backend exists, else the vault in the data dir.

    The vault passphrase is ``passphrase`` (the GUI's dialog) or ``GHL_DESKTOP_VAULT_PASSPHRASE``
    (headless). Without either, :class:`VaultLocked` is raised with a message saying exactly what to
    set; a passphrase that does not open an existing vault raises :class:`WrongPassphrase`."""
    probe = probe_keyring(backend)
    if probe.usable:
        log.info("secrets are kept in %s", probe.description)
        return KeyringSecretStore(probe.backend)
    env = os.environ if environ is None else environ
    path = vault_path(settings)
    phrase = passphrase or env.get(PASSPHRASE_ENV) or None
    if not phrase:
        raise VaultLocked(VAULT_PASSPHRASE_REQUIRED.format(path=path), detail=probe.reason)
    log.info("no usable keyring (%s); secrets are kept in the encrypted vault %s", probe.reason, path)
    return VaultSecretStore(path, phrase, params=params)


__all__ = [
    "PASSPHRASE_ENV",
    "SERVICE",
    "KeyringProbe",
    "KeyringSecretStore",
    "ScryptParams",
    "VaultSecretStore",
    "describe_backend",
    "open_secret_store",
    "probe_keyring",
    "vault_path",
]
