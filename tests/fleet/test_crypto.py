import secrets
from pathlib import Path

import pytest

from ghl_desktop.adapters.crypto import ENV_KEY, ENV_KEY_FILE, Sealer, SecretKeyMissing, load_key
from ghl_desktop.core.errors import ConfigError


def test_round_trip_and_nonce_differs() -> None:
    s = Sealer.from_env({ENV_KEY: secrets.token_hex(32)})
    a, b = s.seal("location:L1:refresh_token", "rt-1"), s.seal("location:L1:refresh_token", "rt-1")
    assert a != b and "rt-1" not in a
    assert s.open("location:L1:refresh_token", a) == "rt-1"


def test_value_bound_to_its_name_and_key() -> None:
    key = secrets.token_hex(32)
    s = Sealer.from_env({ENV_KEY: key})
    sealed = s.seal("location:L1:access_token", "at")
    with pytest.raises(ValueError):
        s.open("location:L2:access_token", sealed)
    with pytest.raises(ValueError, match=ENV_KEY):
        Sealer.from_env({ENV_KEY: secrets.token_hex(32)}).open("location:L1:access_token", sealed)


def test_key_file_and_clear_error_when_missing(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_bytes(secrets.token_bytes(32))
    assert len(load_key({ENV_KEY_FILE: str(f)})) == 32
    with pytest.raises(SecretKeyMissing, match=ENV_KEY) as exc:
        load_key({})
    assert isinstance(exc.value, ConfigError)
    with pytest.raises(SecretKeyMissing, match="32-byte"):
        load_key({ENV_KEY: "short"})
