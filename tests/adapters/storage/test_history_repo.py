"""The history import's storage (issue 15, adapters/storage/history.py) on SQLite and PostgreSQL: a chunk is
stored once (a redelivered chunk, a message carried live, a message another number of the location carried
add nothing), progress counts imported / cancelled / failed, cancel deletes what waits, and the gate sees
live work that is due or running."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage.history import SqlHistoryRepository
from ghl_desktop.adapters.storage.tx import Transactions
from ghl_desktop.core.history import CANCELLED_NOTE, HistoryProgress
from ghl_desktop.core.models import (
    Direction,
    JobState,
    Location,
    Message,
    MessageKind,
    MessageStatus,
    NewJob,
    SessionState,
    WhatsAppSession,
    utcnow,
)

HISTORY = "wa.history"
LIVE = ["wa.inbound", "ghl.outbound_message"]


@pytest.fixture
def db(backend_url: str) -> Iterator[Database]:
    database = open_database(backend_url)
    try:
        database.locations.upsert(Location(id="loc1", name="Clinic"))
        for sid in ("s1", "s2"):
            database.sessions.create(WhatsAppSession(id=sid, location_id="loc1", state=SessionState.CONNECTED,
                                                     store_path=f"/tmp/{sid}", phone=None))
        yield database
    finally:
        database.close()


@pytest.fixture
def repo(db: Database) -> SqlHistoryRepository:
    return SqlHistoryRepository(Transactions(db.engine), history_kind=HISTORY)


def item(sid: str, wa_id: str, chat: str = "4915112345678@s.whatsapp.net") -> tuple[Message, NewJob]:
    message = Message(location_id="loc1", direction=Direction.INBOUND, kind=MessageKind.TEXT, chat_jid=chat,
                      session_id=sid, wa_message_id=wa_id, body=f"old {wa_id}", status=MessageStatus.RECEIVED,
                      sent_at=datetime(2026, 11, 20, tzinfo=UTC))
    job = NewJob(kind=HISTORY, payload={"session_id": sid, "message": {"id": wa_id}},
                 dedupe_key=f"wa:{sid}:{wa_id}", ordering_key=f"history:{sid}:{chat}")
    return message, job


def progress_of(repo: SqlHistoryRepository, sid: str) -> HistoryProgress:
    (p,) = repo.progress([sid])
    return p


def test_a_chunk_is_stored_once_and_skips_what_was_carried_already(db: Database, repo: SqlHistoryRepository) -> None:
    live, _ = db.messages.record(item("s1", "LIVE1")[0],
                                 NewJob(kind="wa.inbound", payload={}, dedupe_key="wa:s1:LIVE1"))
    db.messages.record(item("s2", "OTHER1")[0])  # carried by the location's other number
    chunk = [item("s1", "H1"), item("s1", "LIVE1"), item("s1", "OTHER1"), item("s1", "H2")]
    assert repo.store_chunk("s1", chunk) == 2
    assert repo.store_chunk("s1", chunk) == 0  # the chunk offered again (crash before the ack)
    p = progress_of(repo, "s1")
    assert (p.total, p.imported, p.pending) == (2, 0, 2)
    jobs = [j for j in db.jobs.list(limit=100) if j.kind == HISTORY]
    assert [j.dedupe_key for j in jobs] == ["wa:s1:H1", "wa:s1:H2"]  # oldest first, as given
    assert all(isinstance(j.payload["message_id"], int) for j in jobs)
    assert live.id not in {j.payload["message_id"] for j in jobs}


def test_progress_counts_imported_failed_and_cancelled(db: Database, repo: SqlHistoryRepository) -> None:
    assert repo.store_chunk("s1", [item("s1", f"H{i}", chat=f"49151{i}@s.whatsapp.net") for i in range(5)]) == 5
    jobs = [j for j in db.jobs.list(limit=100) if j.kind == HISTORY]
    ids = [int(j.payload["message_id"]) for j in jobs]
    leased = db.jobs.lease("runner", now=utcnow(), lease_seconds=30, limit=1, kinds=[HISTORY])
    assert [j.payload["message_id"] for j in leased] == [ids[0]]  # in flight: it finishes, it is not cancelled
    repo.mark_imported(ids[1])
    repo.mark_failed(ids[2])
    assert (progress_of(repo, "s1").imported, progress_of(repo, "s1").failed) == (1, 1)
    repo.mark_failed(ids[1])  # an imported one stays imported
    assert progress_of(repo, "s1").imported == 1

    assert repo.cancel("s1", ordering_prefix="history:s1:") == 2  # ids[3] and ids[4]
    p = progress_of(repo, "s1")
    assert p.stopped and (p.imported, p.failed, p.cancelled, p.pending, p.total) == (1, 1, 2, 1, 5)
    pending = [j for j in db.jobs.list(state=JobState.PENDING.value, limit=100) if j.kind == HISTORY]
    assert pending == []
    assert [db.messages.get(i).error for i in ids[3:]] == [CANCELLED_NOTE] * 2  # type: ignore[union-attr]
    assert db.messages.get(ids[0]).error is None  # type: ignore[union-attr]
    repo.mark_imported(ids[0])  # the one in flight lands
    repo.mark_imported(ids[2])  # the failed one, retried from the message log
    p = progress_of(repo, "s1")
    assert (p.imported, p.failed, p.pending) == (3, 0, 0)
    assert repo.store_chunk("s1", [item("s1", "LATER")]) == 0  # later chunks are dropped
    assert repo.days_of("s1") == (None, True)


def test_the_gate_sees_live_work_that_is_due_or_running(db: Database, repo: SqlHistoryRepository) -> None:
    now = utcnow()
    assert not repo.live_work_due(LIVE, now)
    db.jobs.enqueue(NewJob(kind="wa.inbound", payload={}, dedupe_key="later", run_at=now + timedelta(minutes=5)))
    assert not repo.live_work_due(LIVE, now)  # waiting for its retry time: history may run
    db.jobs.enqueue(NewJob(kind="wa.inbound", payload={}, dedupe_key="due", ordering_key="chat:a"))
    assert repo.live_work_due(LIVE, utcnow())
    db.jobs.lease("live", now=utcnow(), lease_seconds=60, limit=10, kinds=LIVE)
    assert repo.live_work_due(LIVE, utcnow())  # running
    assert not repo.live_work_due(["ghl.status"], utcnow())  # only the live runner's kinds count
    repo.store_chunk("s1", [item("s1", "H1")])
    assert not repo.live_work_due(["ghl.status"], utcnow())  # its own jobs never hold it back


def test_a_numbers_own_days(repo: SqlHistoryRepository) -> None:
    assert repo.days_of("s2") == (None, False)
    repo.set_days("s2", 14)
    assert repo.days_of("s2") == (14, False)
    assert progress_of(repo, "s2") == HistoryProgress("s2", 14)
    repo.set_days("s2", None)
    assert repo.days_of("s2") == (None, False)
