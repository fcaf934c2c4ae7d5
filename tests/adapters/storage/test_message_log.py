"""The message log's queries on both backends: every filter and sort in SQL, contact names in rows and
search, the jobs tied to a message, dead letters, and the two atomic retry writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.message_log import LogColumn, LogFilter, LogSort
from ghl_desktop.core.models import (
    ContactLink,
    Direction,
    JobState,
    Location,
    Message,
    MessageKind,
    MessageStatus,
    NewJob,
    SessionState,
    WhatsAppSession,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _seed(db: Database) -> dict[str, int]:
    """Six messages over two locations and two numbers; Maria has a name, +44… does not."""
    db.locations.upsert(Location(id="loc-a", name="Alpha Dental"))
    db.locations.upsert(Location(id="loc-b", name="Beta Fitness"))
    db.sessions.create(WhatsAppSession(id="s-a", location_id="loc-a", state=SessionState.CONNECTED,
                                       store_path="a.db", phone="+14155550001"))
    db.sessions.create(WhatsAppSession(id="s-b", location_id="loc-b", state=SessionState.CONNECTED,
                                       store_path="b.db", phone="+14155550002"))
    db.contacts.save(ContactLink(location_id="loc-a", phone="+34600111222", wa_jid="34600111222@s.whatsapp.net",
                                 name="Maria Lopez"))
    maria = "34600111222@s.whatsapp.net"
    other = "447700900123@s.whatsapp.net"
    ids: dict[str, int] = {}

    def add(key: str, minutes: int, **fields: object) -> None:
        base: dict[str, object] = dict(location_id="loc-a", session_id="s-a", direction=Direction.INBOUND,
                                       kind=MessageKind.TEXT, chat_jid=maria, status=MessageStatus.SENT,
                                       created_at=T0 + timedelta(minutes=minutes),
                                       updated_at=T0 + timedelta(minutes=minutes))
        base.update(fields)
        job = base.pop("job", None)
        message, created = db.messages.record(Message(**base), job)  # type: ignore[arg-type]
        assert created and message.id is not None
        ids[key] = message.id

    add("hello", 0, body="Hello, is the clinic open?", wa_message_id="W1",
        job=NewJob(kind="wa.inbound", dedupe_key="wa:s-a:W1", payload={
            "session_id": "s-a", "message": {"id": "W1", "chat": maria, "text": "Hello", "handle": "SECRETKEY"}}))
    add("reply", 1, direction=Direction.OUTBOUND, body="Yes, until 6 pm", ghl_message_id="G1",
        status=MessageStatus.READ, from_me=True)
    add("failed", 2, direction=Direction.OUTBOUND, body="Your appointment", ghl_message_id="G2",
        chat_jid=other, status=MessageStatus.FAILED, error="+447700900123 is not on WhatsApp")
    add("photo", 3, kind=MessageKind.IMAGE, media_name="xray_50%_done.png", chat_jid=other, wa_message_id="W2",
        status=MessageStatus.RECEIVED)
    add("beta", 4, location_id="loc-b", session_id="s-b", body="Gym hours?", wa_message_id="W3",
        status=MessageStatus.DELIVERED)
    add("old", -60 * 24 * 3, body="three days ago", wa_message_id="W0")
    return ids


def _ids(db: Database, log_filter: LogFilter = LogFilter(), sort: LogSort = LogSort()) -> list[int]:
    return list(db.message_log.ids(log_filter, sort))


def test_default_order_is_newest_first_over_all_history(store: Database) -> None:
    ids = _seed(store)
    assert _ids(store) == [ids[k] for k in ("beta", "photo", "failed", "reply", "hello", "old")]
    assert _ids(store, sort=LogSort(LogColumn.TIME, descending=False))[0] == ids["old"]


@pytest.mark.parametrize(
    ("log_filter", "expected"),
    [
        (LogFilter(location_id="loc-b"), ["beta"]),
        (LogFilter(session_id="s-a", direction=Direction.OUTBOUND), ["failed", "reply"]),
        (LogFilter(statuses=frozenset({MessageStatus.FAILED})), ["failed"]),
        (LogFilter(statuses=frozenset({MessageStatus.READ, MessageStatus.DELIVERED})), ["beta", "reply"]),
        (LogFilter(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)), ["failed", "reply"]),
        # the contact's name, case-insensitive (Maria is named in loc-a only: "beta" is her chat in loc-b)
        (LogFilter(text="maria"), ["reply", "hello", "old"]),
        (LogFilter(text="+34 600 111"), ["beta", "reply", "hello", "old"]),  # a phone as people type it
        (LogFilter(text="447700"), ["photo", "failed"]),  # the chat's phone, no contact name
        (LogFilter(text="CLINIC"), ["hello"]),  # the text
        (LogFilter(text="50%"), ["photo"]),  # the attachment name; % is not a wildcard
        (LogFilter(text="_"), ["photo"]),  # nor is _
        (LogFilter(text="Nobody"), []),
    ],
)
def test_filters_run_in_sql(store: Database, log_filter: LogFilter, expected: list[str]) -> None:
    ids = _seed(store)
    assert _ids(store, log_filter) == [ids[k] for k in expected]
    for key, message_id in ids.items():
        assert store.message_log.matches(message_id, log_filter) is (key in expected)


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        (LogColumn.LOCATION, ["beta", "photo", "failed", "reply", "hello", "old"]),  # Beta > Alpha, then time
        (LogColumn.NUMBER, ["beta", "photo", "failed", "reply", "hello", "old"]),
        (LogColumn.STATUS, ["failed", "reply", "beta", "hello", "old", "photo"]),  # by rank, not alphabet
        (LogColumn.CONTACT, ["reply", "hello", "old", "photo", "failed", "beta"]),  # "maria…" > "44…"
        (LogColumn.TEXT, ["failed", "reply", "photo", "old", "hello", "beta"]),  # lower-case text or file name
        (LogColumn.DIRECTION, ["failed", "reply", "beta", "photo", "hello", "old"]),
        (LogColumn.KIND, ["beta", "failed", "reply", "hello", "old", "photo"]),
    ],
)
def test_every_column_sorts_in_sql(store: Database, column: LogColumn, expected: list[str]) -> None:
    ids = _seed(store)
    assert _ids(store, sort=LogSort(column, descending=True)) == [ids[k] for k in expected]
    ascending = _ids(store, sort=LogSort(column, descending=False))
    assert sorted(ascending) == sorted(ids.values()) and ascending != _ids(store, sort=LogSort(column, True))


def test_rows_carry_names_numbers_and_the_failure(store: Database) -> None:
    ids = _seed(store)
    rows = {r.id: r for r in store.message_log.rows([ids["hello"], ids["failed"], 999_999])}
    assert set(rows) == {ids["hello"], ids["failed"]}  # a vanished id is left out
    hello, failed = rows[ids["hello"]], rows[ids["failed"]]
    assert (hello.number, hello.location_name, hello.contact_name, hello.contact_label) == (
        "+14155550001", "Alpha Dental", "Maria Lopez", "Maria Lopez (+34600111222)")
    assert failed.contact_label == "+447700900123" and failed.error == "+447700900123 is not on WhatsApp"
    assert failed.status is MessageStatus.FAILED and failed.direction is Direction.OUTBOUND


def test_details_tie_jobs_to_their_message_by_keys(store: Database) -> None:
    ids = _seed(store)
    details = store.message_log.details(ids["hello"])
    assert details is not None and details.wa_message_id == "W1"
    assert [j.kind for j in details.jobs] == ["wa.inbound"]
    assert '"session_id": "s-a"' in details.jobs[0].payload
    assert store.message_log.details(ids["reply"]).jobs == ()  # type: ignore[union-attr]
    assert store.message_log.details(123_456) is None


def test_dead_letters_requeue_and_reset_their_message_in_one_go(store: Database) -> None:
    ids = _seed(store)
    job_id, _ = store.jobs.enqueue(NewJob(kind="ghl.outbound_message", dedupe_key="ghl:msg:G2", payload={
        "event": {"type": "SMS", "locationId": "loc-a", "messageId": "G2", "phone": "+447700900123",
                  "message": "Your appointment", "contactId": "c1"}}))
    (leased,) = store.jobs.lease("w", now=datetime.now(UTC), lease_seconds=30, kinds=["ghl.outbound_message"])
    store.jobs.dead_letter(leased.id, "w", error="gave up after 8 attempts — HTTP 502")
    (dead,) = store.message_log.dead_letters()
    assert (dead.job_id, dead.message_id, dead.reason) == (job_id, ids["failed"], "gave up after 8 attempts — HTTP 502")
    assert dead.summary == "to +447700900123: Your appointment"
    assert store.message_log.dead_jobs_of(ids["failed"]) == [job_id]

    requeued, changed = store.message_log.requeue_dead([job_id, job_id])
    assert requeued == 1 and [m.status for m in changed] == [MessageStatus.PENDING]
    assert store.jobs.get(job_id).state is JobState.PENDING  # type: ignore[union-attr]
    assert store.messages.get(ids["failed"]).error is None  # type: ignore[union-attr]
    assert store.message_log.requeue_dead([job_id]) == (0, [])  # a second press changes nothing
    assert store.message_log.dead_letters() == []


def test_retry_failed_resets_and_enqueues_atomically_once(store: Database) -> None:
    ids = _seed(store)
    pending = store.jobs.count("pending")
    job = NewJob(kind="ghl.outbound_message", payload={"event": {"messageId": "G2"}}, dedupe_key="ghl:msg:G2#retry-1")
    updated = store.message_log.retry_failed(ids["failed"], job)
    assert updated is not None and updated.status is MessageStatus.PENDING
    assert store.message_log.retry_failed(ids["failed"], job) is None  # not failed any more
    assert store.jobs.count("pending") == pending + 1 and store.message_log.retry_count("ghl:msg:G2") == 1
    assert [j.kind for j in store.message_log.details(ids["failed"]).jobs] == ["ghl.outbound_message"]  # type: ignore[union-attr]
    # a job insert that fails rolls the reset back
    store.messages.update(ids["failed"], status=MessageStatus.FAILED, error="again")
    with pytest.raises(ValueError, match="JSON"):
        store.message_log.retry_failed(ids["failed"], NewJob(kind="x", payload={"bad": object()}))
    assert store.messages.get(ids["failed"]).status is MessageStatus.FAILED  # type: ignore[union-attr]


def test_filter_choices(store: Database) -> None:
    _seed(store)
    assert [(c.id, c.label) for c in store.message_log.location_choices()] == [
        ("loc-a", "Alpha Dental"), ("loc-b", "Beta Fitness")]
    assert [(c.id, c.label) for c in store.message_log.number_choices()] == [
        ("s-a", "+14155550001 (Alpha Dental)"), ("s-b", "+14155550002 (Beta Fitness)")]
