"""AES-GCM sealing of secrets kept in a shared database (fleet mode, issue 14).

The key never lives in the database: it comes from ``GHL_DESKTOP_SECRET_KEY`` (32 bytes, as
url-safe base64 or 64 hex digits) or from a key file (``GHL_DESKTOP_SECRET_KEY_FILE``, same
encodings, or 32 raw bytes). Every sealed value is ``v1:`` + base64(nonce(12) || ciphertext+tag),
with the secret's name bound as associated data so a value copied to another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ghl_desktop.core.errors import ConfigError

ENV_KEY = "GHL_DESKTOP_SECRET_KEY"
ENV_KEY_FILE = "GHL_DESKTOP_SECRET_KEY_FILE"
_PREFIX = "v1:"
_NONCE = 12


class SecretKeyMissing(ConfigError):
    """No usable fleet secret key."""


def _decode_key(raw: bytes, source: str) -> bytes:
    text = raw.strip()
    if len(raw) == 32 and source != ENV_KEY:
        return raw
    candidates: list[bytes] = []
    try:
        candidates.append(bytes.fromhex(text.decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        candidates.append(base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        pass
    for key in candidates:
        if len(key) == 32:
            return key
    raise SecretKeyMissing(
        f"{source} must hold a 32-byte key (64 hex digits or url-safe base64); "
        "generate one with: python -c \"import secrets; print(secrets.token_hex(32))\""
    )


def load_key(env: Mapping[str, str] | None = None) -> bytes:
    env = os.environ if env is None else env
    value = env.get(ENV_KEY, "").strip()
    if value:
        return _decode_key(value.encode("ascii", "replace"), ENV_KEY)
    path = env.get(ENV_KEY_FILE, "").strip()
    if path:
        try:
            raw = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise SecretKeyMissing(f"{ENV_KEY_FILE}={path} cannot be read: {exc}") from exc
        return _decode_key(raw, f"{ENV_KEY_FILE} ({path})")
    raise SecretKeyMissing(
        f"fleet mode (PostgreSQL) keeps tokens encrypted in the database and needs a key: set "
        f"{ENV_KEY} (64 hex digits) or {ENV_KEY_FILE} (path to a key file) on every worker"
    )


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretKeyMissing("the fleet secret key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Sealer:
        return cls(load_key(env))

    def seal(self, name: str, value: str) -> str:
        nonce = os.urandom(_NONCE)
        ct = self._aead.encrypt(nonce, value.encode("utf-8"), name.encode("utf-8"))
        return _PREFIX + base64.urlsafe_b64encode(nonce + ct).decode("ascii")

    def open(self, name: str, sealed: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise ValueError("not a sealed value")
        try:
            blob = base64.urlsafe_b64decode(sealed[len(_PREFIX):].encode("ascii"))
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], name.encode("utf-8"))
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise ValueError(
                f"secret {name!r} does not open with this key (wrong {ENV_KEY}?)"
            ) from exc
        return plain.decode("utf-8")
