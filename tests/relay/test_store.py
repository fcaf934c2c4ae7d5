"""The relay's database on a real SQLite file: hashed tokens, routing, dedupe, ack, pruning."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ghl_desktop.core.errors import ConfigError
from ghl_desktop.relay.store import RelayStore, hash_token


@pytest.fixture
def store(tmp_path: Path) -> RelayStore:
    s = RelayStore.open(f"sqlite:///{tmp_path / 'data' / 'relay.db'}")
    yield s
    s.close()


def test_tokens_are_stored_hashed_and_authenticate(store: RelayStore, tmp_path: Path) -> None:
    token = store.create_token("office-pc")
    assert token.startswith("ghlr_") and len(token) > 40
    raw = (tmp_path / "data" / "relay.db").read_bytes()
    assert token.encode() not in raw
    with sqlite3.connect(tmp_path / "data" / "relay.db") as conn:
        assert conn.execute("select token_hash from relay_tokens").fetchone()[0] == hash_token(token)
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    install = store.authenticate(token)
    assert install is not None and install.name == "office-pc"
    assert store.authenticate(token + "x") is None
    assert store.authenticate("") is None
    with pytest.raises(ConfigError, match="exists already"):
        store.create_token("office-pc")
    assert store.revoke_token("office-pc")
    assert store.authenticate(token) is None
    store.create_token("office-pc")  # the name is free again


def test_routing_dedupe_order_and_ack(store: RelayStore) -> None:
    everything = store.authenticate(store.create_token("all"))
    only_a = store.authenticate(store.create_token("a", ["locA"]))
    assert everything is not None and only_a is not None
    r1 = store.store_event("ghl.outbound_message", {"n": 1}, "k1", "locA")
    r2 = store.store_event("ghl.outbound_message", {"n": 2}, "k2", "locB")
    r3 = store.store_event("ghl.app_event", {"n": 3}, "k3", None)  # agency level: everyone
    assert set(r1.new) == {everything.id, only_a.id}
    assert r2.new == (everything.id,)
    assert set(r3.new) == {everything.id, only_a.id}
    dup = store.store_event("ghl.outbound_message", {"n": 1}, "k1", "locA")
    assert dup.new == () and set(dup.duplicate) == {everything.id, only_a.id}
    assert [e.event["n"] for e in store.pending(everything.id)] == [1, 2, 3]
    assert [e.event["n"] for e in store.pending(only_a.id)] == [1, 3]
    first = store.pending(everything.id)[0]
    assert store.ack(everything.id, first.id)
    assert not store.ack(only_a.id, first.id)  # someone else's event id
    assert [e.event["n"] for e in store.pending(everything.id)] == [2, 3]
    # a HighLevel retry after the ack is still a duplicate (seen keys outlive the event row)
    assert store.store_event("ghl.outbound_message", {"n": 1}, "k1", "locA").new == ()
    assert store.pending_count() == 4


def test_no_install_matches_means_nothing_stored(store: RelayStore) -> None:
    store.create_token("a", ["locA"])
    result = store.store_event("ghl.outbound_message", {"n": 1}, "k1", "locZ")
    assert not result.matched
    assert store.pending_count() == 0


def test_prune_forgets_old_keys_and_expires_oauth_codes(store: RelayStore) -> None:
    install = store.authenticate(store.create_token("a"))
    assert install is not None
    store.store_event("oauth.code", {"code": "c", "state": "s"}, "oauth:1", None)
    store.store_event("ghl.outbound_message", {"n": 1}, "k1", "loc")
    assert store.prune() == (0, 0)
    later = datetime.now(UTC) + timedelta(days=8)
    assert store.prune(later) == (2, 1)
    assert [e.kind for e in store.pending(install.id)] == ["ghl.outbound_message"]


def test_unusable_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RelayStore.open("nosuchdialect://x")


@pytest.mark.postgres
def test_the_same_queue_semantics_on_postgresql(pg_url: str) -> None:
    store = RelayStore.open(pg_url)
    try:
        token = store.create_token("pg-desktop")
        install = store.authenticate(token)
        assert install is not None
        for n in range(3):
            assert store.store_event("ghl.outbound_message", {"n": n}, f"k{n}", "loc").new == (install.id,)
        assert store.store_event("ghl.outbound_message", {"n": 0}, "k0", "loc").new == ()
        pending = store.pending(install.id)
        assert [e.event["n"] for e in pending] == [0, 1, 2]
        assert store.ack(install.id, pending[0].id)
        assert [e.event["n"] for e in store.pending(install.id, after_id=0)] == [1, 2]
        assert store.pending_count(install.id) == 2
    finally:
        store.close()
