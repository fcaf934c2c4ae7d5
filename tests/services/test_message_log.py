"""MessageLogService on a real SQLite file: retry (idempotent, atomic, from the stored or a rebuilt
webhook), dead letters, redacted details, and the CSV export streamed on a worker thread."""

from __future__ import annotations

import asyncio
import csv
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.message_log import LogColumn, LogFilter, LogSort
from ghl_desktop.core.models import (
    Direction,
    JobState,
    Location,
    Message,
    MessageKind,
    MessageStatus,
    NewJob,
)
from ghl_desktop.logging_setup import RedactingFilter
from ghl_desktop.services import message_log as service_module
from ghl_desktop.services.bridge import OUTBOUND, MessageLogged
from ghl_desktop.services.message_log import CSV_COLUMNS, MessageLogService
from ghl_desktop.webhooks.intake import KIND_QUARANTINED
from tests.fixtures.message_log import bulk_messages, seed_directory

EVENT = {"type": "SMS", "locationId": "loc-a", "messageId": "G9", "phone": "+34600111222", "contactId": "ct-9",
         "message": "See you at 5", "attachments": []}


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def logged(bus: EventBus) -> list[Message]:
    seen: list[Message] = []
    bus.subscribe(MessageLogged, lambda event: seen.append(event.message))
    return seen


@pytest.fixture
def wakes() -> list[int]:
    return []


@pytest.fixture
def service(db: Database, bus: EventBus, wakes: list[int]) -> MessageLogService:
    redactor = RedactingFilter()
    redactor.add_secret("my-client-secret-value")
    return MessageLogService(db.message_log, run=db.aio.run, bus=bus, wake=lambda: wakes.append(1),
                             redact=redactor.redact)


def _failed_outbound(db: Database, *, with_job: bool) -> int:
    db.locations.upsert(Location(id="loc-a", name="Alpha"))
    if with_job:  # the provider webhook's job, as the intake stored it (then the bridge failed it)
        db.jobs.enqueue(NewJob(kind=OUTBOUND, payload={"event": EVENT, "via": "direct"}, dedupe_key="ghl:msg:G9",
                               ordering_key="ghl:conv:loc-a:ct-9"))
        (job,) = db.jobs.lease("w", now=datetime.now(UTC), lease_seconds=30)
        db.jobs.complete(job.id, "w")
    message, _ = db.messages.record(Message(
        location_id="loc-a", direction=Direction.OUTBOUND, kind=MessageKind.TEXT,
        chat_jid="34600111222@s.whatsapp.net", ghl_message_id="G9", body="See you at 5",
        status=MessageStatus.PENDING))
    assert message.id is not None
    db.messages.update(message.id, status=MessageStatus.FAILED,
                       error="the WhatsApp number was logged out on the phone — link it again")
    return message.id


def _pending_outbound(db: Database) -> list[dict[str, object]]:
    return [{"payload": j.payload, "dedupe": j.dedupe_key, "ordering": j.ordering_key}
            for j in db.jobs.list("pending") if j.kind == OUTBOUND]


@pytest.mark.asyncio
async def test_retry_a_failed_message_queues_the_same_work_once(
        db: Database, service: MessageLogService, logged: list[Message], wakes: list[int]) -> None:
    message_id = _failed_outbound(db, with_job=True)
    assert (await service.details(message_id)).retryable  # type: ignore[union-attr]

    result = (await service.retry_message(message_id))
    assert result.requeued == 1 and "Queued again" in result.message
    (job,) = _pending_outbound(db)
    assert job["dedupe"] == "ghl:msg:G9#retry-1" and job["ordering"] == "ghl:conv:loc-a:ct-9"
    assert job["payload"]["event"] == EVENT  # type: ignore[index]
    stored = db.messages.get(message_id)
    assert stored is not None and stored.status is MessageStatus.PENDING and stored.error is None
    assert [m.id for m in logged] == [message_id] and wakes == [1]

    again = (await service.retry_message(message_id))  # a double click
    assert again.requeued == 0 and "already retried" in again.message
    assert len(_pending_outbound(db)) == 1 and wakes == [1]

    # it fails again later: the next retry is a new job (the first is kept for the history)
    db.messages.update(message_id, status=MessageStatus.FAILED, error="still logged out")
    assert (await service.retry_message(message_id)).requeued == 1
    assert [j["dedupe"] for j in _pending_outbound(db)] == ["ghl:msg:G9#retry-1", "ghl:msg:G9#retry-2"]
    assert [j.kind for j in (await service.details(message_id)).jobs] == [OUTBOUND] * 3  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_retry_rebuilds_the_webhook_when_its_job_was_purged(db: Database, service: MessageLogService) -> None:
    message_id = _failed_outbound(db, with_job=False)
    assert (await service.retry_message(message_id)).requeued == 1
    (job,) = _pending_outbound(db)
    event = job["payload"]["event"]  # type: ignore[index]
    assert (event["locationId"], event["messageId"], event["phone"], event["message"]) == (
        "loc-a", "G9", "+34600111222", "See you at 5")


@pytest.mark.asyncio
async def test_retry_of_a_dead_job_requeues_it(db: Database, service: MessageLogService, logged: list[Message]) -> None:
    seed_directory(db)
    message, _ = db.messages.record(
        Message(location_id="loc-dental", session_id="s-dental-1", direction=Direction.INBOUND, kind=MessageKind.TEXT,
                chat_jid="34600111222@s.whatsapp.net", wa_message_id="WX", body="hi"),
        NewJob(kind="wa.inbound", dedupe_key="wa:s-dental-1:WX", payload={
            "session_id": "s-dental-1", "message": {"id": "WX", "text": "hi", "sender_phone": "+34600111222"}}))
    (job,) = db.jobs.lease("w", now=datetime.now(UTC), lease_seconds=30)
    db.jobs.dead_letter(job.id, "w", error="gave up after 8 attempts — HighLevel 503")
    (dead,) = (await service.dead_letters())
    assert dead.message_id == message.id and dead.summary == "from +34600111222: hi"
    assert message.id is not None and (await service.details(message.id)).retryable  # type: ignore[union-attr]

    assert (await service.retry_message(message.id)).requeued == 1
    assert db.jobs.get(job.id).state is JobState.PENDING  # type: ignore[union-attr]
    assert (await service.dead_letters()) == [] and (await service.retry_all_dead()).requeued == 0


@pytest.mark.asyncio
async def test_retry_all_dead(db: Database, service: MessageLogService, wakes: list[int]) -> None:
    for n in range(3):
        db.jobs.enqueue(NewJob(kind="ghl.app_event", payload={"event": {"type": "INSTALL", "locationId": f"L{n}"}},
                               dedupe_key=f"ghl:wh:{n}"))
    for job in db.jobs.lease("w", now=datetime.now(UTC), lease_seconds=30):
        db.jobs.dead_letter(job.id, "w", error="HighLevel said 400")
    assert [d.summary for d in (await service.dead_letters())] == ["INSTALL L2", "INSTALL L1", "INSTALL L0"]
    result = (await service.retry_all_dead())
    assert result.requeued == 3 and result.message == "3 jobs queued again." and wakes == [1]


@pytest.mark.asyncio
async def test_details_redact_secrets_and_media_keys(db: Database, service: MessageLogService) -> None:
    seed_directory(db)
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXZhbHVl"
    message, _ = db.messages.record(
        Message(location_id="loc-dental", session_id="s-dental-1", direction=Direction.INBOUND,
                kind=MessageKind.IMAGE, chat_jid="34600111222@s.whatsapp.net", wa_message_id="WM"),
        NewJob(kind="wa.inbound", dedupe_key="wa:s-dental-1:WM", payload={
            "session_id": "s-dental-1",
            "message": {"id": "WM", "text": f"token {token} and my-client-secret-value",
                        "media": {"handle": "bWVkaWEta2V5LWJ5dGVz", "mimetype": "image/png"}},
            "headers": {"Authorization": "Bearer abc.def.ghi"}}))
    assert message.id is not None
    details = (await service.details(message.id))
    assert details is not None
    (job,) = details.jobs
    for secret in (token, "my-client-secret-value", "bWVkaWEta2V5LWJ5dGVz", "abc.def.ghi"):
        assert secret not in job.payload
    assert '"mimetype": "image/png"' in job.payload and "[REDACTED]" in job.payload


@pytest.mark.asyncio
async def test_export_streams_the_filtered_view_on_a_worker_thread(
        db: Database, service: MessageLogService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_directory(db)
    bulk_messages(db, 5000)
    monkeypatch.setattr(service_module, "EXPORT_BATCH", 700)
    threads: set[str] = set()
    rows_of = db.message_log.rows

    def rows(ids, **options):  # type: ignore[no-untyped-def]
        threads.add(threading.current_thread().name)
        assert len(ids) <= 700  # batches, never the whole view
        return rows_of(ids, **options)

    monkeypatch.setattr(db.message_log, "rows", rows)
    log_filter = LogFilter(text="john", statuses=frozenset({MessageStatus.FAILED}))
    sort = LogSort(LogColumn.TIME, descending=False)
    target = tmp_path / "export.csv"
    written = await service.export_csv(target, log_filter, sort)
    expected = list(db.message_log.ids(log_filter, sort))
    assert written == len(expected) > 100
    with target.open(newline="", encoding="utf-8") as handle:
        records = list(csv.reader(handle))
    assert tuple(records[0]) == CSV_COLUMNS
    assert [int(r[0]) for r in records[1:]] == expected
    assert {r[6] for r in records[1:]} == {"John Smith"} and {r[10] for r in records[1:]} == {"failed"}
    assert all(r[11] == "the recipient is not on WhatsApp" for r in records[1:])
    assert threading.main_thread().name not in threads and not (tmp_path / "export.csv.part").exists()
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_export_writes_the_whole_text_not_the_row_preview(db: Database, service: MessageLogService,
                                                                 tmp_path: Path) -> None:
    seed_directory(db)
    long_text = "Line one\nline two, " + "x" * 1000
    db.messages.record(Message(location_id="loc-dental", session_id="s-dental-1", direction=Direction.INBOUND,
                               kind=MessageKind.TEXT, chat_jid="34600111222@s.whatsapp.net", wa_message_id="LONG",
                               body=long_text))
    (row,) = (await service.rows(list(db.message_log.ids(LogFilter(), LogSort()))))
    assert len(row.text) == 300 and "\n" not in row.text  # the table's one-line preview
    assert await service.export_csv(tmp_path / "long.csv", LogFilter(), LogSort()) == 1
    with (tmp_path / "long.csv").open(newline="", encoding="utf-8") as handle:
        (record,) = list(csv.DictReader(handle))
    assert record["text"] == long_text and record["contact_name"] == "Maria Lopez"


@pytest.mark.asyncio
async def test_a_quarantined_relay_event_is_shown_but_never_requeued(db: Database, service: MessageLogService) -> None:
    """No handler can run a quarantined event: requeued, it would stay pending forever and count toward the
    webhook backlog. Retry leaves it where it is and says why; Retry all requeues only the others."""
    db.jobs.enqueue(NewJob(kind=KIND_QUARANTINED, payload={"reason": "nested too deep", "excerpt": "[[[["},
                           dedupe_key="relay:q:1"))
    db.jobs.enqueue(NewJob(kind="ghl.app_event", payload={"event": {"type": "INSTALL", "locationId": "L9"}},
                           dedupe_key="ghl:wh:9"))
    for job in db.jobs.lease("w", now=datetime.now(UTC), lease_seconds=30):
        db.jobs.dead_letter(job.id, "w", error="quarantined: nested too deep")
    quarantined = next(d for d in (await service.dead_letters()) if d.kind == KIND_QUARANTINED)
    alone = (await service.retry_dead([quarantined.job_id]))
    assert alone.requeued == 0 and "cannot be retried" in alone.message
    assert (await service.retry_all_dead()).requeued == 1
    assert [j.kind for j in db.jobs.list("pending")] == ["ghl.app_event"]
    assert [d.kind for d in (await service.dead_letters())] == [KIND_QUARANTINED]
