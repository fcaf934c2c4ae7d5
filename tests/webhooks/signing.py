"""Test keys and HighLevel-shaped bodies: sign exactly like HighLevel does (raw body, base64)."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

_ids = itertools.count(1)


def _public_pem(key: Any) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass
class SigningKeys:
    ed25519: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)
    rsa: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    @property
    def ed25519_public_pem(self) -> str:
        return _public_pem(self.ed25519)

    @property
    def rsa_public_pem(self) -> str:
        return _public_pem(self.rsa)

    def sign_ed25519(self, body: bytes) -> str:
        return base64.b64encode(self.ed25519.sign(body)).decode("ascii")

    def sign_rsa(self, body: bytes) -> str:
        return base64.b64encode(self.rsa.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")

    def headers(self, body: bytes, scheme: str = "ed25519") -> dict[str, str]:
        base = {"Content-Type": "application/json"}
        if scheme == "ed25519":
            base["x-ghl-signature"] = self.sign_ed25519(body)
        elif scheme == "rsa":
            base["x-wh-signature"] = self.sign_rsa(body)
        return base


def uid(prefix: str = "id") -> str:
    """A HighLevel-looking 20-char id, unique within the test run."""
    return f"{prefix}{next(_ids):020d}"[-20:]


def outbound_message(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contactId": "GKBhT6BfwY9mjzXAU3sq",
        "locationId": "GKAWb4yu7A4LSc0skQ6g",
        "messageId": uid("m"),
        "type": "SMS",
        "phone": "+15864603685",
        "message": "text to send",
        "attachments": ["https://example.com/a.png"],
        "userId": "GK56r6wdJDrkUPd0xsmx",
        "conversationProviderId": "681630446243877ebda60373",
    }
    body.update(overrides)
    return body


def install_event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "INSTALL",
        "appId": "ve9EPM428h8vShlRW1KT",
        "versionId": "ve9EPM428h8vShlRW1KU",
        "installType": "Location",
        "locationId": "otg8dTQqGLh3Q6iQI55w",
        "companyId": "otg8dTQqGLh3Q6iQI55x",
        "userId": "GK56r6wdJDrkUPd0xsmx",
        "trial": {"onTrial": True, "trialDuration": 10, "trialStartDate": "2025-01-28T14:35:00Z"},
        "isWhitelabelCompany": False,
        "whitelabelDetails": {},
        "companyName": "Acme Agency",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "webhookId": uid("w"),
    }
    body.update(overrides)
    return body


def dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode("utf-8")
