"""The relay store's OAuth hand-off (issue 10.1/10.3) on SQLite and PostgreSQL: a code is stored only
for the install that registered its state, once, within 10 minutes; it never counts as backlog; acks
outside the id range are ignored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ghl_desktop.core.models import utcnow
from ghl_desktop.relay.store import MAX_PENDING_AUTHORIZATIONS, RelayStore


def _check(store: RelayStore) -> None:
    a = store.authenticate(store.create_token("a"))
    b = store.authenticate(store.create_token("b"))
    assert a is not None and b is not None
    state = "s" * 24
    assert store.store_oauth_code(state, {"code": "x"}) is None  # nobody registered it: nothing stored
    store.expect_authorization(b.id, state)
    assert store.store_oauth_code("t" * 24, {"code": "x"}) is None
    assert store.store_oauth_code(state, {"code": "c", "state": state}) == b.id
    assert store.store_oauth_code(state, {"code": "c", "state": state}) is None  # single use
    assert [e.event["code"] for e in store.pending(b.id)] == ["c"] and store.pending(a.id) == []
    assert store.pending_count() == 1 and store.pending_count(webhooks_only=True) == 0
    # expiry
    old = utcnow() - timedelta(minutes=11)
    store.expect_authorization(a.id, "old-" * 6, now=old)
    assert store.store_oauth_code("old-" * 6, {"code": "late"}) is None
    # a desktop cannot pile up registrations
    for n in range(MAX_PENDING_AUTHORIZATIONS + 3):
        store.expect_authorization(a.id, f"many-{n:04d}-0123456789", now=utcnow() + timedelta(seconds=n))
    assert store.store_oauth_code("many-0000-0123456789", {"code": "x"}) is None  # the oldest were dropped
    assert store.store_oauth_code(f"many-{MAX_PENDING_AUTHORIZATIONS + 2:04d}-0123456789", {"code": "y"}) == a.id
    # acks that cannot name a row
    for bad in (0, -1, 2**63, 10**23):
        assert store.ack(b.id, bad) is False
    # revoking drops the install's registrations
    store.expect_authorization(b.id, "r" * 24)
    assert store.revoke_token("b")
    assert store.store_oauth_code("r" * 24, {"code": "z"}) is None


def test_oauth_hand_off_on_sqlite(tmp_path: Path) -> None:
    store = RelayStore.open(f"sqlite:///{tmp_path / 'relay.db'}")
    try:
        _check(store)
    finally:
        store.close()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[RelayStore]:
    store = RelayStore.open(pg_url)
    yield store
    store.close()


@pytest.mark.postgres
def test_oauth_hand_off_on_postgresql(pg_store: RelayStore) -> None:
    _check(pg_store)
