"""Signature verification for HighLevel webhooks.

HighLevel signs the raw body bytes and sends the base64 signature in ``x-ghl-signature`` (Ed25519,
current) and/or ``x-wh-signature`` (RSA-SHA256 PKCS#1 v1.5, legacy, deprecated 2026-07-01). Like the
official SDK we look at ``x-ghl-signature`` first and only fall back to ``x-wh-signature`` when the
first is absent; a header that is present but does not verify is a refusal, never a fallback.

Unsigned deliveries exist in the wild (HighLevel issue #224), so accepting them is a setting, off by
default. The built-in keys are HighLevel's published ones (``keys/*.pem``); the sandbox and tests
configure their own through the settings / ``GHL_WEBHOOK_*_PUBLIC_KEY`` (PEM text or a file path).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ghl_desktop.core.errors import BadSignature, ConfigError

if TYPE_CHECKING:
    from ghl_desktop.config import Settings

log = logging.getLogger("ghl.webhooks")

ED25519_HEADER = "x-ghl-signature"
RSA_HEADER = "x-wh-signature"

#: a base64 Ed25519 signature is 88 chars, RSA-4096 is 684; anything much longer is garbage
_MAX_SIGNATURE_CHARS = 2048


class SignatureScheme(StrEnum):
    """Which check let a delivery in (logged, and kept with the event for audits)."""

    ED25519 = "ed25519"  # x-ghl-signature
    RSA = "rsa-sha256"  # x-wh-signature
    UNSIGNED = "unsigned"  # no signature header, accepted because the setting allows it
    RELAY = "relay"  # verified by our relay, which then streamed it over the authenticated WebSocket


def builtin_key_pem(name: str) -> bytes:
    """HighLevel's published public key, ``name`` is ``ed25519`` or ``rsa``."""
    return resources.files("ghl_desktop.webhooks.keys").joinpath(f"highlevel_{name}.pem").read_bytes()


def _pem_bytes(value: str) -> bytes:
    """A setting holds either the PEM text itself or the path of a PEM file."""
    text = value.strip()
    if "-----BEGIN" in text:
        # env vars often carry the PEM with literal "\n" sequences
        return text.replace("\\n", "\n").encode("ascii", "replace")
    path = Path(text).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"webhook public key: {text!r} is neither PEM text nor a readable file",
                          detail=str(exc)) from exc


def load_ed25519_key(value: str | None) -> Ed25519PublicKey:
    """The configured Ed25519 key, or HighLevel's built-in one when ``value`` is empty."""
    pem = _pem_bytes(value) if value else builtin_key_pem("ed25519")
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError("webhook Ed25519 public key is not a valid PEM public key", detail=str(exc)) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError("webhook Ed25519 public key: the PEM holds a different key type "
                          f"({type(key).__name__})")
    return key


def load_rsa_key(value: str | None) -> RSAPublicKey:
    """The configured RSA key, or HighLevel's built-in one when ``value`` is empty."""
    pem = _pem_bytes(value) if value else builtin_key_pem("rsa")
    try:
        key = load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError("webhook RSA public key is not a valid PEM public key", detail=str(exc)) from exc
    if not isinstance(key, RSAPublicKey):
        raise ConfigError(f"webhook RSA public key: the PEM holds a different key type ({type(key).__name__})")
    return key


def _decode_signature(raw: str) -> bytes:
    value = raw.strip()
    if not value or len(value) > _MAX_SIGNATURE_CHARS:
        raise BadSignature("signature header is empty or too long")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadSignature("signature header is not base64") from exc


@dataclass(frozen=True)
class SignatureVerifier:
    """Checks one delivery's signature headers against the raw body."""

    ed25519_key: Ed25519PublicKey
    rsa_key: RSAPublicKey
    accept_unsigned: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SignatureVerifier:
        return cls(
            ed25519_key=load_ed25519_key(settings.webhook_ed25519_public_key),
            rsa_key=load_rsa_key(settings.webhook_rsa_public_key),
            accept_unsigned=settings.accept_unsigned_webhooks,
        )

    @classmethod
    def from_values(cls, ed25519_public_key: str | None = None, rsa_public_key: str | None = None,
                    accept_unsigned: bool = False) -> SignatureVerifier:
        return cls(load_ed25519_key(ed25519_public_key), load_rsa_key(rsa_public_key), accept_unsigned)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> SignatureScheme:
        """Return the scheme that verified ``body``; raise :class:`BadSignature` otherwise.

        ``headers`` must be case-insensitive (aiohttp's CIMultiDict) or use lower-case names."""
        ghl = headers.get(ED25519_HEADER)
        if ghl is not None:
            try:
                self.ed25519_key.verify(_decode_signature(ghl), body)
            except InvalidSignature as exc:
                raise BadSignature("x-ghl-signature does not match the body") from exc
            return SignatureScheme.ED25519
        wh = headers.get(RSA_HEADER)
        if wh is not None:
            try:
                self.rsa_key.verify(_decode_signature(wh), body, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature as exc:
                raise BadSignature("x-wh-signature does not match the body") from exc
            return SignatureScheme.RSA
        if self.accept_unsigned:
            return SignatureScheme.UNSIGNED
        raise BadSignature("unsigned delivery refused (no x-ghl-signature or x-wh-signature header)")


__all__ = [
    "ED25519_HEADER",
    "RSA_HEADER",
    "SignatureScheme",
    "SignatureVerifier",
    "builtin_key_pem",
    "load_ed25519_key",
    "load_rsa_key",
]
