"""The message log's queries (``core.ports.MessageLogQuery``): all history, filtered and sorted in SQL.

- ``ids`` returns only the matching ids, streamed into an ``array('q')`` (8 bytes a message: a
  million messages are 8 MB); rows are read a page at a time with ``rows``. The default order (time,
  newest first) and the status and number filters use the indexes of migration 0002.
- Contact names come from ``contact_links`` (the chat's JID or LID in the same location); the text
  search looks at the message text, the attachment name, the chat JID and the contact's name and
  phone.
- Jobs are tied to their message through their keys, never by scanning payloads: an inbound job's
  dedupe key is ``wa:<session>:<wa id>``, an outbound one's ``ghl:msg:<ghl id>`` (a retry adds
  ``#retry-N``), a status job's ordering key ``status:<location>:<ghl id>``.
- Every method is one short transaction with its own session, so ``ids`` may run on a worker thread
  (not for an in-memory SQLite database: it has one shared connection).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from ghl_desktop.adapters.storage.engine import is_memory_sqlite
from ghl_desktop.adapters.storage.jobs import insert_job
from ghl_desktop.adapters.storage.orm import ContactLinkRow, JobRow, LocationRow, MessageRow, SessionRow
from ghl_desktop.adapters.storage.repositories import _message
from ghl_desktop.adapters.storage.tx import Transactions
from ghl_desktop.core import jobs
from ghl_desktop.core.message_log import (
    ROW_TEXT_CHARS,
    DeadLetter,
    FilterChoice,
    LogColumn,
    LogDetails,
    LogFilter,
    LogJob,
    LogRow,
    LogSort,
)
from ghl_desktop.core.models import Direction, JobState, Message, MessageKind, MessageStatus, NewJob, utcnow

#: ids are read from the cursor in batches of this many (never a million-row Python list)
ID_BATCH = 20_000

M = MessageRow
_C = aliased(ContactLinkRow, name="c")

_STATUS_ORDER = {s.value: s.rank for s in MessageStatus}

#: job kinds (the services' names, repeated here so storage does not import services)
KIND_INBOUND = jobs.INBOUND
KIND_OUTBOUND = jobs.OUTBOUND
KIND_STATUS = jobs.STATUS


def _contact_of_message() -> ColumnElement[bool]:
    return and_(_C.location_id == M.location_id, or_(_C.wa_jid == M.chat_jid, _C.wa_lid == M.chat_jid))


def _contact_field(column: Any) -> Any:
    return select(column).where(_contact_of_message()).order_by(_C.id).limit(1).scalar_subquery()


def _contact_name() -> Any:
    return _contact_field(_C.name)


def _contact_phone() -> Any:
    return _contact_field(_C.phone)


def _conditions(log_filter: LogFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if log_filter.location_id is not None:
        where.append(M.location_id == log_filter.location_id)
    if log_filter.session_id is not None:
        where.append(M.session_id == log_filter.session_id)
    if log_filter.direction is not None:
        where.append(M.direction == Direction(log_filter.direction).value)
    if log_filter.statuses:
        where.append(M.status.in_(sorted(MessageStatus(s).value for s in log_filter.statuses)))
    if log_filter.since is not None:
        where.append(M.created_at >= log_filter.since)
    if log_filter.until is not None:
        where.append(M.created_at < log_filter.until)
    text = log_filter.text.strip()
    if text:
        where.append(_text_match(text))
    return where


def _text_match(text: str) -> ColumnElement[bool]:
    contact = [_C.name.icontains(text, autoescape=True), _C.phone.icontains(text, autoescape=True)]
    alternatives: list[ColumnElement[bool]] = [
        M.body.icontains(text, autoescape=True),
        M.media_name.icontains(text, autoescape=True),
        M.chat_jid.icontains(text, autoescape=True),
    ]
    digits = "".join(ch for ch in text if ch.isdigit())
    if digits and all(ch.isdigit() or ch in " +-()." for ch in text) and digits != text:
        # "+34 600 111 222" finds 34600111222@s.whatsapp.net and the contact phone +34600111222
        alternatives.append(M.chat_jid.contains(digits, autoescape=True))
        contact.append(_C.phone.contains(digits, autoescape=True))
    alternatives.append(exists().where(_contact_of_message(), or_(*contact)))
    return or_(*alternatives)


def _sort_keys(sort: LogSort) -> tuple[list[Any], bool, bool]:
    """(order-by expressions, joins sessions, joins locations)."""
    column = LogColumn(sort.column)
    sessions = locations = False
    key: list[Any]
    if column is LogColumn.TIME:
        key = [M.created_at]
    elif column is LogColumn.DIRECTION:
        key = [M.direction]
    elif column is LogColumn.NUMBER:
        key = [func.coalesce(SessionRow.phone, "")]
        sessions = True
    elif column is LogColumn.LOCATION:
        key = [func.coalesce(LocationRow.name, M.location_id)]
        locations = True
    elif column is LogColumn.CONTACT:
        key = [func.lower(func.coalesce(_contact_name(), M.chat_jid))]
    elif column is LogColumn.KIND:
        key = [M.kind]
    elif column is LogColumn.STATUS:
        key = [case(_STATUS_ORDER, value=M.status, else_=99)]
    else:
        key = [func.lower(func.coalesce(M.body, M.media_name, ""))]
    return key, sessions, locations


class SqlMessageLog:
    """``core.ports.MessageLogQuery`` on the app's database."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    @property
    def threadsafe(self) -> bool:
        return not is_memory_sqlite(self._tx.engine.url)

    # -- the log -------------------------------------------------------------------------------

    def ids(self, log_filter: LogFilter, sort: LogSort, limit: int | None = None) -> array[int]:
        keys, sessions, locations = _sort_keys(sort)
        query = select(M.id)
        if sessions:
            query = query.outerjoin(SessionRow, SessionRow.id == M.session_id)
        if locations:
            query = query.outerjoin(LocationRow, LocationRow.id == M.location_id)
        query = query.where(*_conditions(log_filter))
        if LogColumn(sort.column) is not LogColumn.TIME:
            keys.append(M.created_at)  # ties in time order
        if sort.descending:
            query = query.order_by(*(k.desc() for k in keys), M.id.desc())
        else:
            query = query.order_by(*(k.asc() for k in keys), M.id.asc())
        if limit is not None:
            query = query.limit(max(0, limit))
        out: array[int] = array("q")
        with self._tx.read() as s:
            result = s.connection().execute(query)
            # The ids straight from the DBAPI cursor: one int per row, no Row objects (7x faster at a
            # million rows). Nothing has been fetched through ``result`` yet, so the cursor is whole.
            cursor = result.cursor
            try:
                while part := cursor.fetchmany(ID_BATCH):
                    out.extend(row[0] for row in part)
            finally:
                result.close()
        return out

    def count(self, log_filter: LogFilter) -> int:
        query = select(func.count()).select_from(M).where(*_conditions(log_filter))
        with self._tx.read() as s:
            return int(s.scalar(query) or 0)

    def matches(self, message_id: int, log_filter: LogFilter) -> bool:
        query = select(M.id).where(M.id == message_id, *_conditions(log_filter))
        with self._tx.read() as s:
            return s.execute(query).first() is not None

    def rows(self, message_ids: Sequence[int], *, full_text: bool = False) -> list[LogRow]:
        if not message_ids:
            return []
        with self._tx.read() as s:
            return _rows(s, message_ids, full_text=full_text)

    def details(self, message_id: int) -> LogDetails | None:
        with self._tx.read() as s:
            row = s.get(M, message_id)
            if row is None:
                return None
            message = _message(row)
            (log_row,) = _rows(s, [message_id])
            jobs = tuple(
                LogJob(
                    id=j.id, kind=j.kind, state=j.state, attempts=j.attempts, last_error=j.last_error,
                    created_at=j.created_at, updated_at=j.updated_at,
                    payload=json.dumps(j.payload, indent=2, sort_keys=True, ensure_ascii=False, default=str),
                )
                for j in _jobs_of(s, message)
            )
        return LogDetails(
            row=log_row, wa_message_id=message.wa_message_id, ghl_message_id=message.ghl_message_id,
            sender_jid=message.sender_jid, sent_at=message.sent_at, created_at=message.created_at,
            updated_at=message.updated_at, body=message.body, media_ref=message.media_ref,
            media_mime=message.media_mime, media_name=message.media_name, media_size=message.media_size,
            from_me=message.from_me, jobs=jobs,
        )

    def message(self, message_id: int) -> Message | None:
        with self._tx.read() as s:
            row = s.get(M, message_id)
            return _message(row) if row else None

    def job_payload(self, dedupe_key: str) -> dict[str, Any] | None:
        """The payload of the job with this dedupe key, if it is still stored."""
        with self._tx.read() as s:
            payload = s.scalar(select(JobRow.payload).where(JobRow.dedupe_key == dedupe_key))
            return dict(payload) if isinstance(payload, dict) else None

    def retry_count(self, dedupe_key: str) -> int:
        """How many retry jobs (``<dedupe_key>#retry-N``) were made of this job."""
        with self._tx.read() as s:
            keys = s.scalars(
                select(JobRow.dedupe_key).where(JobRow.dedupe_key >= dedupe_key,
                                                JobRow.dedupe_key < dedupe_key + "\x7f")
            ).all()
        return sum(1 for k in keys if (k or "").startswith(dedupe_key + "#retry-"))

    # -- filter choices --------------------------------------------------------------------------

    def location_choices(self) -> list[FilterChoice]:
        with self._tx.read() as s:
            return [FilterChoice(i, n) for i, n in s.execute(select(LocationRow.id, LocationRow.name)
                                                              .order_by(func.lower(LocationRow.name)))]

    def number_choices(self) -> list[FilterChoice]:
        with self._tx.read() as s:
            found = s.execute(select(SessionRow.id, SessionRow.phone, LocationRow.name)
                              .outerjoin(LocationRow, LocationRow.id == SessionRow.location_id)
                              .order_by(SessionRow.phone, SessionRow.id)).all()
        return [FilterChoice(i, f"{phone or 'not linked yet'} ({name})" if name else (phone or i))
                for i, phone, name in found]

    # -- dead letters and retry ------------------------------------------------------------------

    def dead_letters(self, limit: int = 500) -> list[DeadLetter]:
        with self._tx.read() as s:
            jobs = s.scalars(select(JobRow).where(JobRow.state == JobState.DEAD.value)
                             .order_by(JobRow.updated_at.desc(), JobRow.id.desc()).limit(max(0, limit))).all()
            return [
                DeadLetter(
                    job_id=j.id, kind=j.kind, attempts=j.attempts, reason=j.last_error or "",
                    gave_up_at=j.updated_at, created_at=j.created_at,
                    message_id=_message_id_of_job(s, j.kind, dict(j.payload)),
                    summary=_summary(j.kind, dict(j.payload)),
                )
                for j in jobs
            ]

    def dead_letters_stamp(self) -> tuple[int, int, str]:
        """(how many, newest id, latest change) of the dead jobs: one indexed aggregate, for pollers."""
        with self._tx.read() as s:
            count, top, latest = s.execute(
                select(func.count(), func.max(JobRow.id), func.max(JobRow.updated_at))
                .where(JobRow.state == JobState.DEAD.value)).one()
        return int(count or 0), int(top or 0), str(latest or "")

    def dead_jobs_of(self, message_id: int) -> list[int]:
        with self._tx.read() as s:
            row = s.get(M, message_id)
            if row is None:
                return []
            return [j.id for j in _jobs_of(s, _message(row)) if j.state == JobState.DEAD.value]

    def requeue_dead(self, job_ids: Sequence[int]) -> tuple[int, list[Message]]:
        now = utcnow()
        requeued = 0
        changed: list[Message] = []
        with self._tx.write() as s:
            for job_id in job_ids:
                job = s.get(JobRow, job_id)
                if job is None or job.state != JobState.DEAD.value:
                    continue
                message_id = _message_id_of_job(s, job.kind, dict(job.payload))
                job.state = JobState.PENDING.value
                job.attempts = 0
                job.next_attempt_at = now
                job.lease_owner = None
                job.lease_until = None
                job.updated_at = now
                requeued += 1
                if message_id is not None:
                    message = s.get(M, message_id)
                    if message is not None and _reset_failed(message):
                        s.flush()
                        changed.append(_message(message))
        return requeued, changed

    def retry_failed(self, message_id: int, job: NewJob) -> Message | None:
        with self._tx.write() as s:
            row = s.get(M, message_id)
            if row is None or not _reset_failed(row):
                return None
            _forget_not_on_whatsapp(s, row)
            insert_job(s, job)
            s.flush()
            return _message(row)


def _reset_failed(row: MessageRow) -> bool:
    """FAILED back to where it started (PENDING outbound, RECEIVED inbound), error cleared."""
    if row.status != MessageStatus.FAILED.value:
        return False
    outbound = row.direction == Direction.OUTBOUND.value
    row.status = (MessageStatus.PENDING if outbound else MessageStatus.RECEIVED).value
    row.error = None
    row.updated_at = utcnow()
    return True


def _forget_not_on_whatsapp(s: Session, row: MessageRow) -> None:
    """A retry asks WhatsApp again: a cached "not on WhatsApp" for the recipient is dropped (the person
    may have joined since), so the bridge checks the number afresh instead of failing from its cache."""
    user = row.chat_jid.partition("@")[0].split(":", 1)[0]
    if row.direction != Direction.OUTBOUND.value or not user.isdigit():
        return
    link = ContactLinkRow
    s.execute(update(link).where(link.location_id == row.location_id, link.phone == "+" + user,
                                 link.on_whatsapp.is_(False))
              .values(on_whatsapp=None, updated_at=utcnow()).execution_options(synchronize_session=False))


def _rows(s: Session, message_ids: Iterable[int], *, full_text: bool = False) -> list[LogRow]:
    body = M.body if full_text else func.substr(M.body, 1, ROW_TEXT_CHARS)
    query = (
        select(
            M.id, M.created_at, M.direction, M.kind, M.status, M.location_id, M.chat_jid, M.session_id,
            SessionRow.phone, LocationRow.name, _contact_name(), _contact_phone(),
            body, M.media_name, M.error,
        )
        .outerjoin(SessionRow, SessionRow.id == M.session_id)
        .outerjoin(LocationRow, LocationRow.id == M.location_id)
        .where(M.id.in_(list(message_ids)))
    )
    out = []
    for (id_, created, direction, kind, status, location_id, chat, session_id, number, location_name,
         contact_name, contact_phone, body, media_name, error) in s.execute(query):
        out.append(LogRow(
            id=id_, time=created, direction=Direction(direction), kind=MessageKind(kind),
            status=MessageStatus(status), location_id=location_id, chat_jid=chat, session_id=session_id,
            number=number, location_name=location_name, contact_name=contact_name, contact_phone=contact_phone,
            text=(body or media_name or "") if full_text else
            (body or media_name or "").replace("\n", " ")[:ROW_TEXT_CHARS], error=error,
        ))
    return out


def _jobs_of(s: Session, message: Message) -> list[JobRow]:
    keys: list[ColumnElement[bool]] = []
    if message.session_id and message.wa_message_id:
        keys.append(JobRow.dedupe_key == f"wa:{message.session_id}:{message.wa_message_id}")
    if message.ghl_message_id:
        base = f"ghl:msg:{message.ghl_message_id}"
        keys.append(and_(JobRow.dedupe_key >= base, JobRow.dedupe_key < base + "\x7f"))
        keys.append(JobRow.ordering_key == f"status:{message.location_id}:{message.ghl_message_id}")
    if not keys:
        return []
    found = s.scalars(select(JobRow).where(or_(*keys)).order_by(JobRow.id)).all()
    return [j for j in found if _carries(j, message)]


def _carries(job: JobRow, message: Message) -> bool:
    if job.kind == KIND_OUTBOUND:
        base = f"ghl:msg:{message.ghl_message_id}"
        event = _event(dict(job.payload))
        return (job.dedupe_key == base or (job.dedupe_key or "").startswith(base + "#retry-")) and \
            str(event.get("locationId", message.location_id)) == message.location_id
    return True


def _event(payload: dict[str, Any]) -> dict[str, Any]:
    return jobs.ProviderPayload.from_json(payload).event


def _message_id_of_job(s: Session, kind: str, payload: dict[str, Any]) -> int | None:
    """The message a job carries (by its unique keys), or None."""
    try:
        if kind == KIND_INBOUND:
            inbound = jobs.InboundPayload.from_json(payload)
            wa_id = inbound.message.get("id")
            return s.scalar(select(M.id).where(M.session_id == inbound.session_id,
                                               M.wa_message_id == str(wa_id))) if wa_id else None
        if kind == KIND_STATUS:
            status = jobs.StatusPayload.from_json(payload)
            return s.scalar(select(M.id).where(M.location_id == status.location_id,
                                               M.ghl_message_id == status.message_id))
    except jobs.PayloadError:
        return None
    event = _event(payload)
    if event.get("messageId") and event.get("locationId"):
        return s.scalar(select(M.id).where(M.location_id == str(event["locationId"]),
                                           M.ghl_message_id == str(event["messageId"])))
    return None


def _summary(kind: str, payload: dict[str, Any]) -> str:
    """What a job was about, in a few words (no secrets: phone, text start, type)."""
    if kind == KIND_INBOUND and isinstance(payload.get("message"), dict):
        msg = payload["message"]
        who = msg.get("sender_phone") or str(msg.get("chat", "")).split("@")[0]
        text = str(msg.get("text") or f"[{msg.get('kind', 'message')}]")
        return f"from {who}: {_short(text)}" if who else _short(text)
    if kind == KIND_STATUS:
        return f"status {payload.get('status', '?')} for message {payload.get('message_id', '?')}"
    event = _event(payload)
    if kind == KIND_OUTBOUND:
        text = str(event.get("message") or ("[attachment]" if event.get("attachments") else ""))
        return f"to {event.get('phone') or '?'}: {_short(text)}"
    kind_word = event.get("type")
    location = event.get("locationId") or event.get("companyId")
    return " ".join(str(p) for p in (kind_word, location) if p)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["ID_BATCH", "SqlMessageLog"]
