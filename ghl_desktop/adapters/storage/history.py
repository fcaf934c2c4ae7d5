"""History on link (issue 15): storing a history chunk, its progress, a number's own history_days, and
cancelling — the storage side of ``services/bridge/history.py``. Each method is one transaction and
blocking: the service calls them through the storage executor (``db.aio.run``), never on the loop.

Exactly once with the live path: a history message is a ``messages`` row like a live one, keyed by
(session, WhatsApp id). ``store_chunk`` writes a row only when no message of that id exists, and a live
message whose id a chunk already stored finds the row (``SqlMessageRepository.record``) and adds
nothing; the job of either carries it. Every row of a chunk, its ``wa.history`` job and its
``history_items`` row are written in ONE transaction before the chunk is acknowledged: a crash loses
nothing and a redelivered chunk adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, bindparam, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session

from ghl_desktop.adapters.storage import direct
from ghl_desktop.adapters.storage.jobs import insert_job
from ghl_desktop.adapters.storage.orm import (
    HistoryImportRow,
    HistoryItemRow,
    JobHeadRow,
    JobRow,
    MessageRow,
    SessionRow,
)
from ghl_desktop.adapters.storage.repositories import read_connection
from ghl_desktop.adapters.storage.tx import Transactions
from ghl_desktop.core.history import CANCELLED, CANCELLED_NOTE, FAILED, IMPORTED, PENDING, HistoryProgress
from ghl_desktop.core.models import Direction, JobState, Message, MessageKind, MessageStatus, NewJob, utcnow

#: SqlHistoryRepository.live_work_due, built once (asked before every lease of the history import)
_LIVE_WORK_DUE = select(exists().where(
    JobHeadRow.job_id == JobRow.id, JobRow.kind.in_(bindparam("kinds", expanding=True)),
    or_(JobRow.state == JobState.RUNNING.value,
        and_(JobRow.state == JobState.PENDING.value,
             JobHeadRow.due_at <= bindparam("now", type_=JobHeadRow.__table__.c.due_at.type))),
))


def _row(message: Message) -> MessageRow:
    now = utcnow()
    return MessageRow(
        location_id=message.location_id, session_id=message.session_id,
        direction=Direction(message.direction).value, kind=MessageKind(message.kind).value,
        chat_jid=message.chat_jid, sender_jid=message.sender_jid, wa_message_id=message.wa_message_id,
        ghl_message_id=None, body=message.body, media_ref=message.media_ref, media_mime=message.media_mime,
        media_name=message.media_name, media_size=message.media_size, quoted_wa_id=message.quoted_wa_id,
        from_me=message.from_me, status=MessageStatus(message.status).value, error=message.error,
        sent_at=message.sent_at, created_at=now, updated_at=now,
    )


class SqlHistoryRepository:
    def __init__(self, tx: Transactions, *, history_kind: str) -> None:
        self._tx = tx
        self._kind = history_kind

    # --- a number's own setting ------------------------------------------------------------------

    def days_of(self, session_id: str) -> tuple[int | None, bool]:
        """(the number's own history_days or None, whether its import was cancelled)."""
        with self._tx.read() as s:
            row = s.get(HistoryImportRow, session_id)
            return (row.days, bool(row.cancelled)) if row is not None else (None, False)

    def set_days(self, session_id: str, days: int | None) -> None:
        """The number's own history_days (None: follow the setting)."""
        with self._tx.write() as s:
            row = self._import_row(s, session_id)
            row.days = days
            row.updated_at = utcnow()

    @staticmethod
    def _import_row(s: Session, session_id: str) -> HistoryImportRow:
        row = s.get(HistoryImportRow, session_id)
        if row is None:
            row = HistoryImportRow(session_id=session_id, days=None, cancelled=False, updated_at=utcnow())
            s.add(row)
            s.flush()
        return row

    # --- a chunk -----------------------------------------------------------------------------------

    def store_chunk(self, session_id: str, items: Sequence[tuple[Message, NewJob]]) -> int:
        """Store each (message, its job) whose (session, WhatsApp id) is not known yet, with its history
        item, in one transaction, in the given order (oldest first: the jobs' ids follow it). Returns how
        many were new. Nothing is stored once the number's import was cancelled."""
        if not items:
            return 0
        created = 0
        with self._tx.write() as s:
            state = s.get(HistoryImportRow, session_id)
            if state is not None and state.cancelled:
                return 0
            wanted = [m.wa_message_id for m, _ in items if m.wa_message_id]
            # known to ANY number of the location: a number linked again (a new session) is offered
            # the chats its previous link already carried; one lookup per number through its unique index
            location_id = items[0][0].location_id
            numbers = list(s.scalars(select(SessionRow.id).where(SessionRow.location_id == location_id)))
            known: set[str | None] = set()
            for start in range(0, len(wanted), 500):
                known.update(s.scalars(select(MessageRow.wa_message_id).where(
                    MessageRow.session_id.in_(numbers), MessageRow.wa_message_id.in_(wanted[start:start + 500]))))
            for message, job in items:
                if message.wa_message_id in known:
                    continue
                known.add(message.wa_message_id)
                row = _row(message)
                s.add(row)
                s.flush()
                payload = dict(job.payload)
                payload.setdefault("message_id", row.id)
                _, new = insert_job(s, job, payload=payload)
                if not new:  # its job exists already (e.g. the live path's of the same id): theirs carries it
                    s.delete(row)
                    s.flush()
                    continue
                s.add(HistoryItemRow(message_id=row.id, session_id=session_id, state=PENDING))
                created += 1
            if created and state is None:
                self._import_row(s, session_id)
        return created

    # --- one item ----------------------------------------------------------------------------------

    def item_state(self, message_id: int) -> str | None:
        with self._tx.read() as s:
            row = s.get(HistoryItemRow, message_id)
            return row.state if row is not None else None

    def mark_imported(self, message_id: int) -> None:
        """In HighLevel (also after a failed one was retried from the message log)."""
        self._mark(message_id, IMPORTED, (PENDING, FAILED))

    def mark_failed(self, message_id: int) -> None:
        """Refused for good: its job is dead-lettered (counted apart, no longer waiting)."""
        self._mark(message_id, FAILED, (PENDING,))

    def _mark(self, message_id: int, state: str, from_states: Sequence[str]) -> None:
        with self._tx.write() as s:
            s.execute(update(HistoryItemRow).where(HistoryItemRow.message_id == message_id,
                                                   HistoryItemRow.state.in_(list(from_states)))
                      .values(state=state).execution_options(synchronize_session=False))

    # --- progress / cancel ---------------------------------------------------------------------------

    def progress(self, session_ids: Sequence[str] | None = None) -> list[HistoryProgress]:
        """Per number that has an import or a setting of its own: imported / cancelled / total."""
        with self._tx.read() as s:
            counts: dict[str, dict[str, int]] = {}
            query = select(HistoryItemRow.session_id, HistoryItemRow.state, func.count()).group_by(
                HistoryItemRow.session_id, HistoryItemRow.state)
            if session_ids is not None:
                query = query.where(HistoryItemRow.session_id.in_(list(session_ids)))
            for sid, state, n in s.execute(query):
                counts.setdefault(str(sid), {})[str(state)] = int(n)
            imports_q = select(HistoryImportRow)
            if session_ids is not None:
                imports_q = imports_q.where(HistoryImportRow.session_id.in_(list(session_ids)))
            imports = {row.session_id: row for row in s.scalars(imports_q)}
        out = []
        for sid in sorted(set(counts) | set(imports)):
            c = counts.get(sid, {})
            row = imports.get(sid)
            out.append(HistoryProgress(
                session_id=sid, days=row.days if row else None, total=sum(c.values()),
                imported=c.get(IMPORTED, 0), cancelled=c.get(CANCELLED, 0), failed=c.get(FAILED, 0),
                stopped=bool(row.cancelled) if row else False))
        return out

    def cancel(self, session_id: str, *, ordering_prefix: str) -> int:
        """Stop the number's import: its waiting items are cancelled (their messages say so), their
        pending jobs deleted, later chunks dropped. A job already running finishes. Returns how many
        items were cancelled."""
        with self._tx.write() as s:
            if s.get(SessionRow, session_id) is None:
                return 0
            row = self._import_row(s, session_id)
            row.cancelled = True
            row.updated_at = utcnow()
            waiting = list(s.scalars(select(HistoryItemRow.message_id).where(
                HistoryItemRow.session_id == session_id, HistoryItemRow.state == PENDING)))
            if not waiting:
                return 0
            # the job in flight (if any) keeps its item pending: it is finishing its post
            running = set(s.scalars(select(JobRow.payload["message_id"].as_integer()).where(
                JobRow.kind == self._kind, JobRow.state == JobState.RUNNING.value,
                JobRow.ordering_key.startswith(ordering_prefix, autoescape=True))))
            stop = [mid for mid in waiting if mid not in running]
            for start in range(0, len(stop), 500):
                part = stop[start:start + 500]
                s.execute(update(HistoryItemRow).where(HistoryItemRow.message_id.in_(part))
                          .values(state=CANCELLED).execution_options(synchronize_session=False))
                s.execute(update(MessageRow).where(MessageRow.id.in_(part), MessageRow.ghl_message_id.is_(None))
                          .values(status=MessageStatus.FAILED.value, error=CANCELLED_NOTE, updated_at=utcnow())
                          .execution_options(synchronize_session=False))
            s.execute(delete(JobRow).where(
                JobRow.kind == self._kind, JobRow.state.in_([JobState.PENDING.value, JobState.DEAD.value]),
                JobRow.ordering_key.startswith(ordering_prefix, autoescape=True),
            ).execution_options(synchronize_session=False))
            return len(stop)

    # --- behind live traffic -------------------------------------------------------------------------

    def live_work_due(self, kinds: Sequence[str], now: datetime) -> bool:
        """Whether any job of ``kinds`` (the live runner's) is running or due to be leased now: a head
        of the queue (the oldest unfinished job of its key, or an unkeyed one) that is due or running."""
        if not kinds:
            return False
        with read_connection(self._tx) as conn:
            return bool(direct.execute(conn, _LIVE_WORK_DUE, {"kinds": list(kinds), "now": now}).scalar())
