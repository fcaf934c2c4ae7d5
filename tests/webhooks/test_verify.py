"""Signature checks: HighLevel's two schemes, our key configuration, the unsigned setting."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ghl_desktop.config import Settings, load_settings
from ghl_desktop.core.errors import BadSignature, ConfigError
from ghl_desktop.webhooks.verify import (
    SignatureScheme,
    SignatureVerifier,
    builtin_key_pem,
    load_ed25519_key,
    load_rsa_key,
)
from tests.webhooks.signing import SigningKeys, dump, outbound_message


@pytest.fixture
def verifier(signing_keys: SigningKeys) -> SignatureVerifier:
    return SignatureVerifier.from_values(signing_keys.ed25519_public_pem, signing_keys.rsa_public_pem)


@pytest.fixture
def other_keys() -> SigningKeys:
    return SigningKeys()


def test_builtin_highlevel_keys_load() -> None:
    ed = load_ed25519_key(None)
    rsa = load_rsa_key(None)
    assert isinstance(ed, Ed25519PublicKey)
    assert isinstance(rsa, RSAPublicKey)
    assert rsa.key_size == 4096
    assert b"MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=" in builtin_key_pem("ed25519")
    default = SignatureVerifier.from_settings(Settings())
    assert default.accept_unsigned is False
    # the defaults really are HighLevel's keys: a body we sign ourselves must not pass
    keys = SigningKeys()
    body = dump(outbound_message())
    with pytest.raises(BadSignature):
        default.verify(body, keys.headers(body, "ed25519"))
    with pytest.raises(BadSignature):
        default.verify(body, keys.headers(body, "rsa"))


def test_ed25519_valid(verifier: SignatureVerifier, signing_keys: SigningKeys) -> None:
    body = dump(outbound_message())
    assert verifier.verify(body, {"x-ghl-signature": signing_keys.sign_ed25519(body)}) is SignatureScheme.ED25519


def test_rsa_valid(verifier: SignatureVerifier, signing_keys: SigningKeys) -> None:
    body = dump(outbound_message())
    assert verifier.verify(body, {"x-wh-signature": signing_keys.sign_rsa(body)}) is SignatureScheme.RSA


@pytest.mark.parametrize("header", ["x-ghl-signature", "x-wh-signature"])
def test_tampered_body_refused(verifier: SignatureVerifier, signing_keys: SigningKeys, header: str) -> None:
    body = dump(outbound_message(message="pay 10"))
    sig = signing_keys.sign_ed25519(body) if header == "x-ghl-signature" else signing_keys.sign_rsa(body)
    tampered = body.replace(b"pay 10", b"pay 99")
    with pytest.raises(BadSignature, match="does not match"):
        verifier.verify(tampered, {header: sig})


@pytest.mark.parametrize("header", ["x-ghl-signature", "x-wh-signature"])
def test_wrong_key_refused(verifier: SignatureVerifier, other_keys: SigningKeys, header: str) -> None:
    body = dump(outbound_message())
    sig = other_keys.sign_ed25519(body) if header == "x-ghl-signature" else other_keys.sign_rsa(body)
    with pytest.raises(BadSignature):
        verifier.verify(body, {header: sig})


def test_missing_header_refused_by_default(verifier: SignatureVerifier) -> None:
    with pytest.raises(BadSignature, match="unsigned"):
        verifier.verify(dump(outbound_message()), {"content-type": "application/json"})


def test_unsigned_accepted_when_the_setting_says_so(signing_keys: SigningKeys) -> None:
    lenient = SignatureVerifier.from_values(signing_keys.ed25519_public_pem, signing_keys.rsa_public_pem,
                                            accept_unsigned=True)
    assert lenient.verify(dump(outbound_message()), {}) is SignatureScheme.UNSIGNED
    # ...but a signature that is present is still checked
    body = dump(outbound_message())
    with pytest.raises(BadSignature):
        lenient.verify(body, {"x-ghl-signature": base64.b64encode(b"x" * 64).decode()})


def test_ghl_signature_is_checked_first_and_never_falls_back(verifier: SignatureVerifier,
                                                              signing_keys: SigningKeys,
                                                              other_keys: SigningKeys) -> None:
    body = dump(outbound_message())
    both_good = {"x-ghl-signature": signing_keys.sign_ed25519(body), "x-wh-signature": "garbage"}
    assert verifier.verify(body, both_good) is SignatureScheme.ED25519
    bad_ed_good_rsa = {"x-ghl-signature": other_keys.sign_ed25519(body), "x-wh-signature": signing_keys.sign_rsa(body)}
    with pytest.raises(BadSignature, match="x-ghl-signature"):
        verifier.verify(body, bad_ed_good_rsa)


@pytest.mark.parametrize("value", ["", "   ", "not base64!!", "A" * 5000, "YWJj"])
def test_malformed_signature_values_refused(verifier: SignatureVerifier, value: str) -> None:
    with pytest.raises(BadSignature):
        verifier.verify(b"{}", {"x-ghl-signature": value})


def test_keys_from_file_path_and_escaped_env_text(tmp_path: Path, signing_keys: SigningKeys) -> None:
    ed_file = tmp_path / "ed.pem"
    ed_file.write_text(signing_keys.ed25519_public_pem)
    escaped_rsa = signing_keys.rsa_public_pem.replace("\n", "\\n")  # how PEMs often sit in env files
    verifier = SignatureVerifier.from_values(str(ed_file), escaped_rsa)
    body = dump(outbound_message())
    assert verifier.verify(body, signing_keys.headers(body, "ed25519")) is SignatureScheme.ED25519
    assert verifier.verify(body, signing_keys.headers(body, "rsa")) is SignatureScheme.RSA


def test_settings_environment_configures_the_verifier(tmp_path: Path, signing_keys: SigningKeys) -> None:
    ed_file = tmp_path / "ed.pem"
    ed_file.write_text(signing_keys.ed25519_public_pem)
    settings = load_settings({
        "GHL_DESKTOP_HOME": str(tmp_path / "home"),
        "GHL_WEBHOOK_ED25519_PUBLIC_KEY": str(ed_file),
        "GHL_WEBHOOK_RSA_PUBLIC_KEY": signing_keys.rsa_public_pem,
        "GHL_ACCEPT_UNSIGNED_WEBHOOKS": "true",
    })
    verifier = SignatureVerifier.from_settings(settings)
    body = dump(outbound_message())
    assert verifier.verify(body, signing_keys.headers(body)) is SignatureScheme.ED25519
    assert verifier.verify(body, {}) is SignatureScheme.UNSIGNED


def test_misconfigured_keys_are_clear_config_errors(tmp_path: Path, signing_keys: SigningKeys) -> None:
    with pytest.raises(ConfigError, match="neither PEM text nor a readable file"):
        load_ed25519_key(str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="different key type"):
        load_ed25519_key(signing_keys.rsa_public_pem)
    with pytest.raises(ConfigError, match="different key type"):
        load_rsa_key(signing_keys.ed25519_public_pem)
    with pytest.raises(ConfigError, match="not a valid PEM"):
        load_rsa_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
