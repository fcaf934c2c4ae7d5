"""adapters/storage/direct.py: the hot statements on SQLite's cursor give what Connection.execute gives
(same rows, same types, same errors, the same statements seen by listeners), in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, event, select
from sqlalchemy.exc import IntegrityError, StatementError

from ghl_desktop.adapters.storage import Database, direct, open_database
from ghl_desktop.adapters.storage.jobs import _JOBS, _Statements, insert_new
from ghl_desktop.adapters.storage.repositories import _MESSAGE_BY_WA, _MESSAGES
from ghl_desktop.core.models import JobState, Location, NewJob, SessionState, WhatsAppSession
from tests.adapters.storage.test_repositories import inbound

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(sqlite_url: str) -> Iterator[Database]:
    database = open_database(sqlite_url, migrate=True)
    database.locations.upsert(Location(id="loc1", name="Clinic"))
    database.sessions.create(
        WhatsAppSession(id="s1", location_id="loc1", state=SessionState.CONNECTED, store_path="/tmp/s1.db"))
    try:
        yield database
    finally:
        database.close()


def _both(db: Database, statement: Any, params: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    with db.engine.connect() as conn:
        ours = [tuple(r) for r in direct.execute(conn, statement, params)]
        theirs = [tuple(r) for r in conn.execute(statement, params)]
    return ours, theirs


def test_a_select_returns_the_same_rows_and_types_as_sqlalchemy(db: Database) -> None:
    stored = db.messages.record(inbound("WA1", body="héllo"), None)[0]
    ours, theirs = _both(db, _MESSAGE_BY_WA, {"session": "s1", "wa": "WA1"})
    assert ours == theirs and len(ours) == 1
    with db.engine.connect() as conn:
        row = direct.execute(conn, _MESSAGE_BY_WA, {"session": "s1", "wa": "WA1"}).first()
    assert row.id == stored.id and row.body == "héllo" and row.from_me is False
    assert row.sent_at == T0 and row.sent_at.tzinfo is UTC  # the UTC type's result processing ran
    assert row._asdict()["wa_message_id"] == "WA1"


def test_writes_bind_values_as_sqlalchemy_would_and_join_the_callers_transaction(db: Database) -> None:
    values = {"kind": "k", "payload": {"a": [1, "ü"]}, "state": JobState.PENDING.value, "attempts": 0,
              "next_attempt_at": T0, "dedupe_key": "d1", "ordering_key": "chat:1", "created_at": T0,
              "updated_at": T0, "route": None}
    with db.engine.connect() as conn, conn.begin():
        new = direct.execute(conn, insert_new(_JOBS, "sqlite"), values).scalar()
        again = direct.execute(conn, insert_new(_JOBS, "sqlite"), values).scalar()  # ON CONFLICT DO NOTHING
        assert again is None
        statements = _Statements("sqlite")
        taken = direct.execute(conn, statements.take, {"ids": [new], "owner": "w1", "until": T0 + timedelta(seconds=9),
                                                       "now": T0}).all()
        conn.rollback()  # nothing of it stays: it ran in this transaction
    assert taken[0].payload == {"a": [1, "ü"]} and taken[0].attempts == 1 and taken[0].lease_owner == "w1"
    assert taken[0].lease_until == T0 + timedelta(seconds=9)
    assert db.jobs.count() == 0
    job_id, _ = db.jobs.enqueue(NewJob(kind="k", payload={}, run_at=T0))
    # what the cursor path wrote, SQLAlchemy reads back identically (same stored text for datetimes)
    leased = db.jobs.lease("w1", now=T0, lease_seconds=5)
    assert [j.id for j in leased] == [job_id] and leased[0].lease_until == T0 + timedelta(seconds=5)
    assert db.jobs.get(job_id) == leased[0]


def test_an_in_list_of_any_length_and_an_empty_one(db: Database) -> None:
    ids = [db.jobs.enqueue(NewJob(kind="k", payload={"i": i}, run_at=T0))[0] for i in range(5)]
    query = select(_JOBS.c.id).where(_JOBS.c.id.in_(bindparam("ids", expanding=True))).order_by(_JOBS.c.id)
    for chosen in (ids[:1], ids[1:4], ids, []):
        ours, theirs = _both(db, query, {"ids": chosen})
        assert ours == theirs == [(i,) for i in chosen]


def test_database_errors_leave_as_sqlalchemys_and_refused_values_as_its_statement_error(db: Database) -> None:
    values = {"location_id": "nowhere", "session_id": "s1", "direction": "inbound", "kind": "text",
              "chat_jid": "c", "wa_message_id": "X", "status": "received", "from_me": False,
              "created_at": T0, "updated_at": T0}
    with db.engine.connect() as conn, conn.begin(), pytest.raises(IntegrityError, match="FOREIGN KEY"):
        direct.execute(conn, insert_new(_MESSAGES, "sqlite"), values)
    with db.engine.connect() as conn, pytest.raises(StatementError, match="naive datetime"):
        direct.execute(conn, _Statements("sqlite").lease_ids(False), {"now": datetime(2026, 1, 1), "limit": 1})


def test_listeners_see_each_statement_and_other_dialects_take_sqlalchemys_path(db: Database) -> None:
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda _c, _cu, statement, *_a: seen.append(statement))
    with db.engine.connect() as conn:
        direct.execute(conn, _MESSAGE_BY_WA, {"session": "s1", "wa": "none"})
    assert [s.split()[0] for s in seen] == ["BEGIN", "SELECT"]  # autobegun, as Connection.execute does

    class Other:  # a connection of another dialect: Connection.execute runs it
        class dialect:
            name = "postgresql"

        def execute(self, statement: Any, params: Any) -> str:
            return "sqlalchemy's"

    assert direct.execute(Other(), _MESSAGE_BY_WA, {}) == "sqlalchemy's"  # type: ignore[arg-type]


def test_statements_built_on_each_call_do_not_fill_the_plan_cache(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "MAX_PLANS", len(direct._PLANS) + 3)
    with db.engine.connect() as conn:
        for i in range(10):  # a new statement object each time: one plan each, up to the cap
            statement = select(_JOBS.c.id).where(_JOBS.c.id == bindparam("id"))
            assert direct.execute(conn, statement, {"id": i}).all() == []
    assert len(direct._PLANS) == direct.MAX_PLANS  # then Connection.execute, nothing kept
