"""SqlMessageRepository.record_many: the intake's group commit (several messages + their jobs, one
transaction), with record()'s exactly-once rules per message, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from ghl_desktop.adapters.storage import Database, StorageConflict
from ghl_desktop.core.models import Location, Message, NewJob, SessionState, WhatsAppSession
from tests.adapters.storage.test_repositories import inbound


@pytest.fixture
def sess(store: Database) -> WhatsAppSession:
    store.locations.upsert(Location(id="loc1", name="Clinic"))
    return store.sessions.create(
        WhatsAppSession(id="s1", location_id="loc1", state=SessionState.CONNECTED, store_path="/tmp/s1.db"))


def _job(wa_id: str) -> NewJob:
    return NewJob(kind="inbound.post", payload={"wa": wa_id}, dedupe_key=f"in:s1:{wa_id}", ordering_key="chat:1")


def _commits(store: Database) -> list[int]:
    seen: list[int] = []
    event.listen(store.engine, "commit", lambda conn: seen.append(1))
    return seen


def test_several_messages_and_their_jobs_are_stored_in_one_commit(store: Database, sess: WhatsAppSession) -> None:
    commits = _commits(store)
    results = store.messages.record_many([(inbound(f"WA{i}", body=f"m{i}"), _job(f"WA{i}")) for i in range(5)])
    assert len(commits) == 1
    assert all(isinstance(r, tuple) and r[1] for r in results)
    stored = [r[0] for r in results if isinstance(r, tuple)]
    assert [m.body for m in stored] == [f"m{i}" for i in range(5)]
    assert all(store.messages.get(m.id) == m for m in stored if m.id is not None)
    jobs = store.jobs.list()
    assert [j.payload for j in jobs] == [{"wa": f"WA{i}", "message_id": m.id} for i, m in enumerate(stored)]


def test_a_message_already_stored_or_twice_in_the_batch_is_written_once(
        store: Database, sess: WhatsAppSession) -> None:
    first, _ = store.messages.record(inbound("WA1"), _job("WA1"))
    results = store.messages.record_many([(inbound("WA1", body="again"), _job("WA1")),
                                          (inbound("WA2"), _job("WA2")), (inbound("WA2", body="dup"), _job("WA2"))])
    assert results[0] == (first, False)
    assert isinstance(results[1], tuple) and results[1][1]
    assert results[2] == (results[1][0], False)
    assert len(store.messages.recent()) == 2 and store.jobs.count() == 2


def test_a_message_that_cannot_be_stored_fails_alone(store: Database, sess: WhatsAppSession) -> None:
    """An unknown session (the database refuses it) and a payload that is not JSON are the failures
    of their own items; the others of the batch are stored and committed."""
    bad_job = NewJob(kind="inbound.post", payload={"at": datetime.now(UTC)})
    results = store.messages.record_many([
        (inbound("WA1"), _job("WA1")),
        (inbound("WA2", session_id="no-such-session"), _job("WA2")),
        (inbound("WA3"), bad_job),
        (inbound("WA4"), _job("WA4")),
    ])
    assert isinstance(results[1], StorageConflict)
    assert isinstance(results[2], ValueError)
    kept = [r[0].wa_message_id for r in results if isinstance(r, tuple)]
    assert kept == ["WA1", "WA4"]
    assert sorted(m.wa_message_id or "" for m in store.messages.recent()) == ["WA1", "WA4"]
    assert sorted(j.dedupe_key or "" for j in store.jobs.list()) == ["in:s1:WA1", "in:s1:WA4"]


def test_update_changes_only_the_given_fields(store: Database, sess: WhatsAppSession) -> None:
    """The message update's prebuilt statement writes every column it may change: the ones not given
    keep their stored values."""
    stored, _ = store.messages.record(inbound("WA1", error="e0", media_ref="/m/a"))
    assert stored.id is not None
    updated = store.messages.update(stored.id, ghl_message_id="g1")
    again = store.messages.get(stored.id)
    assert again == updated
    assert isinstance(again, Message)
    assert (again.ghl_message_id, again.error, again.media_ref, again.wa_message_id, again.session_id) == (
        "g1", "e0", "/m/a", "WA1", "s1")
    assert again.status == stored.status and again.updated_at >= stored.updated_at
