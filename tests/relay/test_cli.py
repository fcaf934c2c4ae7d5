"""``ghl-relay token ...`` in process (``serve`` runs as a real process in test_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghl_desktop.relay.cli import main
from ghl_desktop.relay.store import RelayStore


def test_token_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    assert main(["token", "create", "--name", "office-pc", "--db-url", url]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("ghlr_")
    assert main(["--db-url", url, "token", "create", "--name", "laptop", "--location", "locA"]) == 0
    capsys.readouterr()
    store = RelayStore.open(url)
    try:
        install = store.authenticate(token)
        assert install is not None and install.name == "office-pc"
    finally:
        store.close()
    assert main(["token", "list", "--db-url", url]) == 0
    listing = capsys.readouterr().out
    assert "office-pc\tall locations\tpending=0" in listing and "laptop\tlocA" in listing
    assert token not in listing
    assert main(["token", "create", "--name", "office-pc", "--db-url", url]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["token", "revoke", "--name", "office-pc", "--db-url", url]) == 0
    assert main(["token", "revoke", "--name", "office-pc", "--db-url", url]) == 1


def test_default_database_lives_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GHL_RELAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("GHL_RELAY_DB_URL", raising=False)
    assert main(["token", "create", "--name", "x"]) == 0
    assert (tmp_path / "data" / "relay.db").exists()


def test_bad_database_url_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "list", "--db-url", "nosuchdialect://x"]) == 2
    assert "relay database URL is not usable" in capsys.readouterr().err
