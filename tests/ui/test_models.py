"""Every table model obeys Qt's model contract (qtmodeltester), empty and filled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.models import Direction, Message, MessageKind
from ghl_desktop.ui.models import (
    LocationsModel,
    MessageLogFilter,
    MessageLogModel,
    SessionsModel,
    format_expiry,
)
from tests.ui.seed import seed


def test_models_pass_the_model_tester_empty_and_filled(qtmodeltester, db: Database) -> None:  # type: ignore[no-untyped-def]
    locations, sessions, messages = LocationsModel(), SessionsModel(), MessageLogModel()
    proxy = MessageLogFilter()
    proxy.setSourceModel(messages)
    for model in (locations, sessions, messages, proxy):
        qtmodeltester.check(model)
    seed(db)
    locations.set_records(db.locations.list())
    sessions.set_location_names(locations.names())
    sessions.set_records(db.sessions.list())
    messages.set_records(db.messages.recent())
    proxy.set_text("thursday")
    for model in (locations, sessions, messages, proxy):
        qtmodeltester.check(model)
    assert locations.rowCount() == 2 and sessions.rowCount() == 2 and messages.rowCount() == 4
    assert proxy.rowCount() == 2


def test_message_log_upsert_caps_rows(qtmodeltester) -> None:  # type: ignore[no-untyped-def]
    model = MessageLogModel(limit=3)
    qtmodeltester.check(model)
    for i in range(5):
        model.upsert(
            Message(
                location_id="L",
                direction=Direction.INBOUND,
                kind=MessageKind.TEXT,
                chat_jid="c",
                body=f"m{i}",
                id=i + 1,
            )
        )
    assert [model.index(r, 5).data() for r in range(model.rowCount())] == ["m4", "m3", "m2"]
    model.upsert(
        Message(
            location_id="L", direction=Direction.INBOUND, kind=MessageKind.TEXT, chat_jid="c", body="m3 edited", id=4
        )
    )
    assert model.rowCount() == 3 and model.index(1, 5).data() == "m3 edited"
    qtmodeltester.check(model)


def test_expiry_text() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert format_expiry(None, now=now) == "—"
    assert format_expiry(now - timedelta(days=2), now=now) == "expired 2 d ago"
    assert format_expiry(now + timedelta(hours=20, minutes=5), now=now) == "in 20 h"
    assert format_expiry(now + timedelta(minutes=30), now=now) == "in 30 min"


def test_sessions_upsert_remove_and_dead_jobs_pass_the_model_tester(qtmodeltester, db: Database) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from ghl_desktop.core.models import JobState, NewJob, SessionState
    from ghl_desktop.ui.models import DeadJobsModel

    seeded = seed(db)
    sessions = SessionsModel()
    qtmodeltester.check(sessions)
    records = db.sessions.list()
    sessions.upsert(records[0])
    sessions.upsert(records[1])
    assert sessions.rowCount() == 2
    sessions.upsert(replace(records[0], state=SessionState.LOGGED_OUT, detail="Unlinked on the phone"))
    assert sessions.rowCount() == 2 and sessions.index(0, 2).data() == "Logged out — pair again"
    assert sessions.index(0, 3).data() == "Unlinked on the phone"
    qtmodeltester.check(sessions)
    sessions.remove(records[0].id)
    sessions.remove("unknown")
    assert sessions.rowCount() == 1 and sessions.row_of(records[1].id) == 0
    qtmodeltester.check(sessions)

    dead = DeadJobsModel()
    qtmodeltester.check(dead)
    job_id, _ = db.jobs.enqueue(NewJob(kind="wa.inbound", payload={"session_id": "s", "message": {"id": "x"}}))
    leased = db.jobs.lease("test", now=datetime.now(UTC), lease_seconds=30, limit=1)
    assert [j.id for j in leased] == [job_id]
    db.jobs.dead_letter(job_id, "test", error="GhlTransientError: HighLevel answered 503")
    dead.set_records(db.jobs.list(JobState.DEAD.value))
    assert dead.rowCount() == 1
    assert [dead.index(0, c).data() for c in (0, 1, 3, 4)] == [
        f"#{job_id}", "WhatsApp → HighLevel", "1", "GhlTransientError: HighLevel answered 503"]
    qtmodeltester.check(dead)
    assert seeded["sessions"]
