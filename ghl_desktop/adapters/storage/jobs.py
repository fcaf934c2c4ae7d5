"""The durable job queue (``core.ports.JobQueue``).

Leasing rules:
- Due jobs are pending ones with ``next_attempt_at <= now`` and running ones whose lease has expired
  (their worker died: crash recovery). Each lease increments ``attempts``.
- Jobs sharing an ``ordering_key`` run one at a time, oldest first: a job is eligible only when no
  older job of its key is unfinished (pending or running) and no other job of its key holds a live
  lease. A job waiting for its retry time therefore holds back the newer ones of its key.
- Cost independent of the backlog: the candidates come from ``job_heads`` (migration 0003), which
  database triggers keep at one row per unkeyed unfinished job and per key's oldest unfinished job,
  ordered by ``due_at``; a lease reads at most its ``limit`` of due heads through an index, however
  many jobs wait behind them.
- Atomic: on PostgreSQL the candidates are locked with ``SELECT ... FOR UPDATE SKIP LOCKED``; on
  SQLite the whole lease is one ``BEGIN IMMEDIATE`` transaction (one writer at a time).
- complete / retry_later / dead_letter only act while ``owner`` still holds the job; a worker whose
  lease expired and was taken over is told so in the log and changes nothing.
- Cheap per call: the lease / complete statements are built once per queue with bound parameters
  (SQLAlchemy reuses their compiled form; building them per call cost more than running them), rows
  come back with ``UPDATE ... RETURNING``, and ``complete_many`` / ``complete_and_lease`` finish a
  batch of jobs and lease the next ones in one transaction (one commit instead of one per job).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from ghl_desktop.adapters.storage import direct
from ghl_desktop.adapters.storage.orm import JobHeadRow, JobRow
from ghl_desktop.adapters.storage.tx import StorageConflict, Transactions
from ghl_desktop.core.models import WAITING_PREFIX, Job, JobState, NewJob, utcnow

log = logging.getLogger("ghl.storage.jobs")

_UNFINISHED = (JobState.PENDING.value, JobState.RUNNING.value)
_JOBS = cast(Table, JobRow.__table__)
_DEDUPE = select(_JOBS.c.id).where(_JOBS.c.dedupe_key == bindparam("dedupe"))
_INSERT = insert(_JOBS).returning(_JOBS.c.id)
@functools.cache
def insert_new(table: Table, dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` for ``table`` (SQLite and PostgreSQL): a row
    that would break a unique key is not written and returns nothing, without an error that would abort
    a PostgreSQL transaction — one statement where a lookup first, or a savepoint, cost two more. Built
    once per table and dialect (SQLAlchemy's compiled cache is keyed on the statement object)."""
    from sqlalchemy.dialects import postgresql, sqlite

    build = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return build(table).on_conflict_do_nothing().returning(table.c.id)


def _job(row: Any) -> Job:
    """A job from an ORM row or a Core row of the jobs table (same attribute names)."""
    return Job(
        id=row.id,
        kind=row.kind,
        payload=dict(row.payload),
        state=JobState(row.state),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        dedupe_key=row.dedupe_key,
        ordering_key=row.ordering_key,
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        route=row.route,
    )


class _LastWriteFailed(Exception):
    """A job's last write raised in the batch run without savepoints: that transaction is rolled back
    and the batch runs again, each write in a savepoint (not a database error: nothing converts it)."""


def _finished(s: Session, job_id: int, write: Callable[[], object] | None, *, savepoint: bool) -> bool:
    """Run a job's last write in the completing transaction (``savepoint``: in a savepoint of it, and
    False if it raised; else what it raises ends the transaction as :class:`_LastWriteFailed`)."""
    if write is None:
        return True
    if not savepoint:
        try:
            write()
        except Exception as exc:
            raise _LastWriteFailed(job_id) from exc
        return True
    try:
        with s.begin_nested():
            write()
    except Exception as exc:  # the caller learns it from its write (the runner records that job alone)
        log.info("job %s: its last write failed (%s); not completed with the batch", job_id, exc)
        return False
    return True


def _check_payload(payload: dict[str, Any]) -> None:
    if not isinstance(payload, dict):
        raise TypeError(f"job payload must be a dict, got {type(payload).__name__}")
    try:
        json.dumps(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job payload is not JSON-serialisable: {exc}") from exc


def insert_job(s: Session, job: NewJob, *, payload: dict[str, Any] | None = None) -> tuple[int, bool]:
    """Insert ``job`` in the caller's transaction; (existing id, False) if its dedupe_key is taken."""
    payload = job.payload if payload is None else payload
    _check_payload(payload)
    conn = s.connection()
    now = utcnow()
    values = {"kind": job.kind, "payload": payload, "state": JobState.PENDING.value, "attempts": 0,
              "next_attempt_at": job.run_at or now, "dedupe_key": job.dedupe_key,
              "ordering_key": job.ordering_key, "created_at": now, "updated_at": now,
              "route": job.route}  # issue 14: the number a WhatsApp-side job needs (None: any worker)
    if job.dedupe_key is None:
        return int(direct.execute(conn, _INSERT, values).scalar_one()), True
    # the dedupe_key taken (also by a racing enqueue on PostgreSQL): nothing written, the holder's id
    new = direct.execute(conn, insert_new(_JOBS, conn.dialect.name), values).scalar()
    if new is not None:
        return int(new), True
    existing = direct.execute(conn, _DEDUPE, {"dedupe": job.dedupe_key}).scalar()
    if existing is None:  # pragma: no cover - a conflict is on the dedupe_key, whose row exists
        raise StorageConflict(f"job {job.dedupe_key!r} conflicts with a row that is not there")
    return int(existing), False


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


class SqlJobQueue:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx
        self._built: _Statements | None = None

    def enqueue(self, job: NewJob) -> tuple[int, bool]:
        _check_payload(job.payload)
        try:
            with self._tx.write() as s:
                return insert_job(s, job)
        except StorageConflict:
            if job.dedupe_key is None:
                raise
            with self._tx.read() as s:
                existing = s.scalar(select(JobRow.id).where(JobRow.dedupe_key == job.dedupe_key))
            if existing is None:
                raise
            return existing, False

    def lease(self, owner: str, *, now: datetime, lease_seconds: float, limit: int = 10,
              kinds: Sequence[str] | None = None, routes: Sequence[str] | None = None,
              prepare: Callable[[Sequence[Job]], object] | None = None,
              follow: Mapping[str, int] | None = None) -> list[Job]:
        """``routes`` (a cluster worker, services/ownership.py): only jobs without a route or routed to one
        of these numbers; None: every job (one desktop). ``prepare``, ``follow``: as in
        :meth:`complete_and_lease`."""
        return self.complete_and_lease((), owner, now=now, lease_seconds=lease_seconds, limit=limit, kinds=kinds,
                                       routes=routes, prepare=prepare, follow=follow)

    def complete_and_lease(self, done: Sequence[int], owner: str, *, now: datetime, lease_seconds: float,
                           limit: int = 10, kinds: Sequence[str] | None = None,
                           routes: Sequence[str] | None = None,
                           finish: Mapping[int, Callable[[], object]] | None = None,
                           prepare: Callable[[Sequence[Job]], object] | None = None,
                           follow: Mapping[str, int] | None = None) -> list[Job]:
        """Complete ``done`` (as :meth:`complete_many`) and lease up to ``limit`` due jobs, in ONE
        transaction: the job runner's bookkeeping for a batch of finished jobs and the slots they free
        is one commit. A finished job's successor on its ``ordering_key`` can be leased right away.

        ``finish``: per job of ``done``, its handler's last write (a blocking function using the
        repositories of this database), run first inside the same transaction, each in a savepoint: a
        job whose write raises is not completed (its write rolled back), the others are. The batch runs
        first without savepoints (two statements less per job); only when a write raises is that
        transaction rolled back and the batch run again, savepoint by savepoint.

        ``prepare(jobs)``: after the commit, on this thread, with the leased jobs: the job runner reads
        what their handlers read first (services/jobs.py ``prepared``), saving each job a hop to the
        storage thread. What it raises is logged; the jobs stay leased and are returned.

        ``follow`` (per kind, how many): a leased job of such a kind with an ``ordering_key`` brings its
        key's next jobs along, leased in the same transaction: the consecutive ones after it that are
        pending, due and of a kind in ``follow`` (at most its number; the first job that is not stops
        them, so the key's order holds). The runner runs them one after another in one slot, each
        starting while the previous one's completion is still being written (services/jobs.py); a
        follower it does not run goes back with :meth:`release`. Followers come after the leased jobs,
        each key's in its order; ``limit`` counts only the leased ones."""
        if not owner:
            raise ValueError("lease owner must be a non-empty string")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if kinds is not None and not kinds:
            limit = 0
        if limit <= 0 and not done:
            return []
        until = now + timedelta(seconds=lease_seconds)
        batch = (done, owner, now, until, limit, kinds, routes, finish or None, follow or None)
        try:
            jobs = self._complete_then_lease(*batch, savepoints=False)
        except _LastWriteFailed:
            jobs = self._complete_then_lease(*batch, savepoints=True)
        if prepare is not None and jobs:
            try:
                with self._tx.reading():  # the handlers' reads: one transaction for the batch
                    prepare(jobs)
            except Exception:  # the handlers read for themselves; the lease is what matters
                log.exception("preparing %d leased job(s) failed; their handlers read for themselves", len(jobs))
        return jobs

    def _complete_then_lease(self, done: Sequence[int], owner: str, now: datetime, until: datetime, limit: int,
                             kinds: Sequence[str] | None, routes: Sequence[str] | None,
                             finish: Mapping[int, Callable[[], object]] | None,
                             follow: Mapping[str, int] | None, *, savepoints: bool) -> list[Job]:
        """(:meth:`complete_and_lease`) One transaction: the last writes, the completions, the lease."""
        with self._tx.together() if finish else self._tx.write() as s:
            conn = s.connection()
            if finish:
                done = [job_id for job_id in done if _finished(s, job_id, finish.get(job_id), savepoint=savepoints)]
            if done:
                self._complete_in(conn, done, owner)
            if limit <= 0:
                return []
            params: dict[str, Any] = {"now": now, "limit": limit}
            if kinds is not None:
                params["kinds"] = list(kinds)
            if routes is not None:
                params["routes"] = list(routes)
            lease_ids = self._statements.lease_ids(kinds is not None, routes is not None)
            ids = list(direct.execute(conn, lease_ids, params).scalars())
            if not ids:
                return []
            take = {"ids": ids, "owner": owner, "until": until, "now": now}
            rows = direct.execute(conn, self._statements.take, take).all()
            jobs = [_job(r) for r in rows]
            jobs.sort(key=lambda j: (j.next_attempt_at, j.id))
            if follow:
                jobs += self._followers(conn, jobs, follow, owner, now, until, routes)
        return jobs

    def _followers(self, conn: Any, heads: Sequence[Job], follow: Mapping[str, int], owner: str, now: datetime,
                   until: datetime, routes: Sequence[str] | None) -> list[Job]:
        """(in the lease's transaction) The followers of the leased ``heads`` (:meth:`complete_and_lease`)."""
        allowed = set(routes) if routes is not None else None
        chosen: list[int] = []
        for head in heads:
            n = follow.get(head.kind, 0)
            if head.ordering_key is None or n <= 0:
                continue
            behind = direct.execute(conn, self._statements.behind,
                                    {"key": head.ordering_key, "head": head.id, "n": n}).all()
            for row in behind:
                if (row.state != JobState.PENDING.value or row.next_attempt_at > now or follow.get(row.kind, 0) <= 0
                        or (allowed is not None and row.route is not None and row.route not in allowed)):
                    break  # the key's next job cannot run yet: neither can the ones after it
                chosen.append(row.id)
        if not chosen:
            return []
        rows = direct.execute(conn, self._statements.take_pending,
                              {"ids": chosen, "owner": owner, "until": until, "now": now}).all()
        taken = {row.id: _job(row) for row in rows}
        followers = [taken[job_id] for job_id in chosen if job_id in taken]
        if len(followers) != len(chosen):  # changed meanwhile (PostgreSQL): none rather than a gap
            direct.execute(conn, self._statements.release, {"ids": list(taken), "owner": owner, "now": now})
            return []
        return followers

    def release(self, job_ids: Sequence[int], owner: str) -> int:
        """Give back jobs ``owner`` leased but never started (a run's followers, :meth:`complete_and_lease`):
        pending again, due as before, their lease's attempt not counted. Returns how many it still held."""
        if not job_ids:
            return 0
        with self._tx.write() as s:
            result = direct.execute(s.connection(), self._statements.release,
                                    {"ids": list(job_ids), "owner": owner, "now": utcnow()})
            return _rowcount(result)

    def complete(self, job_id: int, owner: str) -> None:
        self.complete_many((job_id,), owner)

    def complete_many(self, job_ids: Sequence[int], owner: str) -> int:
        """Mark the jobs ``owner`` holds done in one transaction; returns how many it held (the others'
        leases were lost: logged, unchanged)."""
        if not job_ids:
            return 0
        with self._tx.write() as s:
            return self._complete_in(s.connection(), job_ids, owner)

    def _complete_in(self, conn: Any, job_ids: Sequence[int], owner: str) -> int:
        done = set(direct.execute(conn, self._statements.complete,
                                {"ids": list(job_ids), "owner": owner, "now": utcnow()}).scalars())
        for job_id in job_ids:
            if job_id not in done:
                log.warning("job %s: complete by %s ignored: lease lost (expired and taken over, or job not "
                            "running)", job_id, owner)
        return len(done)

    @property
    def _statements(self) -> _Statements:
        if self._built is None:
            self._built = _Statements(self._tx.dialect)
        return self._built

    def retry_later(self, job_id: int, owner: str, *, error: str, run_at: datetime) -> None:
        self._finish(job_id, owner, "retry", state=JobState.PENDING.value, next_attempt_at=run_at,
                     last_error=error, lease_owner=None, lease_until=None)

    def dead_letter(self, job_id: int, owner: str, *, error: str) -> None:
        self._finish(job_id, owner, "dead-letter", state=JobState.DEAD.value, last_error=error,
                     lease_owner=None, lease_until=None)

    def extend_lease(self, job_id: int, owner: str, *, until: datetime) -> bool:
        with self._tx.write() as s:
            result = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == JobState.RUNNING.value)
                .values(lease_until=until, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    def _finish(self, job_id: int, owner: str, action: str, **values: Any) -> None:
        with self._tx.write() as s:
            result = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == JobState.RUNNING.value)
                .values(updated_at=utcnow(), **values)
                .execution_options(synchronize_session=False)
            )
            changed = int(getattr(result, "rowcount", 0) or 0)
        if not changed:
            log.warning("job %s: %s by %s ignored: lease lost (expired and taken over, or job not running)",
                        job_id, action, owner)

    def requeue_dead(self, job_id: int) -> bool:
        now = utcnow()
        with self._tx.write() as s:
            result = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.DEAD.value)
                .values(state=JobState.PENDING.value, attempts=0, next_attempt_at=now,
                        lease_owner=None, lease_until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    def get(self, job_id: int) -> Job | None:
        with self._tx.read() as s:
            row = s.get(JobRow, job_id)
            return _job(row) if row else None

    def purge_done(self, *, finished_before: datetime) -> int:
        with self._tx.write() as s:
            result = s.execute(
                delete(JobRow)
                .where(JobRow.state == JobState.DONE.value, JobRow.updated_at < finished_before)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def count(self, state: str | None = None) -> int:
        query = select(func.count()).select_from(JobRow)
        if state is not None:
            query = query.where(JobRow.state == JobState(state).value)
        with self._tx.read() as s:
            return int(s.scalar(query) or 0)

    def count_backlog(self) -> int:
        """Pending jobs that run by themselves: not those waiting for a reconnect / a ban to end, nor
        the ones queued behind such a job on its ``ordering_key`` (they wait for the same thing)."""
        waiting = JobRow.last_error.startswith(WAITING_PREFIX, autoescape=True)
        ahead = aliased(JobRow)
        behind_waiting = exists().where(
            ahead.ordering_key == JobRow.ordering_key, ahead.id < JobRow.id,
            ahead.state == JobState.PENDING.value, ahead.last_error.startswith(WAITING_PREFIX, autoescape=True),
        )
        query = select(func.count()).select_from(JobRow).where(
            JobRow.state == JobState.PENDING.value,
            or_(JobRow.last_error.is_(None), ~waiting),
            or_(JobRow.ordering_key.is_(None), ~behind_waiting),
        )
        with self._tx.read() as s:
            return int(s.scalar(query) or 0)

    def waiting_by_payload(self, kind: str, path: Sequence[str]) -> dict[str, dict[str, int]]:
        """Pending jobs of ``kind`` held up for a reason (``Job.waiting_reason``), per value of the payload
        field at ``path`` (as ``count_by_payload``): ``{value: {reason: n}}`` — for the health rows'
        "3 messages waiting: location needs reconnect"."""
        keys = tuple(path)
        field_ = JobRow.payload[keys[0] if len(keys) == 1 else keys].as_string()
        query = (
            select(field_, JobRow.last_error, func.count())
            .where(JobRow.kind == kind, JobRow.state == JobState.PENDING.value,
                   JobRow.last_error.startswith(WAITING_PREFIX, autoescape=True))
            .group_by(field_, JobRow.last_error)
        )
        out: dict[str, dict[str, int]] = {}
        with self._tx.read() as s:
            for value, error, n in s.execute(query):
                if value is None or error is None:
                    continue
                reasons = out.setdefault(str(value), {})
                reason = str(error)[len(WAITING_PREFIX):]
                reasons[reason] = reasons.get(reason, 0) + int(n)
        return out

    def count_by_payload(self, kind: str, path: Sequence[str], states: Sequence[str] = _UNFINISHED) -> dict[str, int]:
        """How many jobs of ``kind`` in ``states`` (default: unfinished) there are per value of the
        payload field at ``path`` (e.g. ``("session_id",)`` or ``("event", "locationId")``). Read-only;
        the jobs table holds unfinished work and a week of finished jobs, and ``state`` is indexed."""
        keys = tuple(path)
        field_ = JobRow.payload[keys[0] if len(keys) == 1 else keys].as_string()
        query = (
            select(field_, func.count())
            .where(JobRow.kind == kind, JobRow.state.in_([JobState(s).value for s in states]))
            .group_by(field_)
        )
        with self._tx.read() as s:
            return {str(value): int(n) for value, n in s.execute(query) if value is not None}

    def list(self, state: str | None = None, limit: int = 100) -> list[Job]:
        """Oldest first (queue order)."""
        query = select(JobRow).order_by(JobRow.id).limit(max(0, limit))
        if state is not None:
            query = query.where(JobRow.state == JobState(state).value)
        with self._tx.read() as s:
            return [_job(r) for r in s.scalars(query)]


class _Statements:
    """The queue's hot statements, built once (per queue: the dialect decides the locking clause) with
    bound parameters, so a call only binds values: SQLAlchemy's compiled cache is keyed on the
    statement, and building + keying a statement this size took longer than running it."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self._lease: dict[tuple[bool, bool], Any] = {}
        ids: Any = bindparam("ids", expanding=True)
        self.take = (
            update(_JOBS)
            .where(_JOBS.c.id.in_(ids))
            .values(state=JobState.RUNNING.value, lease_owner=bindparam("owner"), lease_until=bindparam("until"),
                    attempts=_JOBS.c.attempts + 1, updated_at=bindparam("now"))
            .returning(*_JOBS.c)
        )
        #: the jobs after a leased one on its key, in order (followers, SqlJobQueue._followers)
        self.behind = (
            select(_JOBS.c.id, _JOBS.c.kind, _JOBS.c.state, _JOBS.c.next_attempt_at, _JOBS.c.route)
            .where(_JOBS.c.ordering_key == bindparam("key"), _JOBS.c.state.in_(_UNFINISHED),
                   _JOBS.c.id > bindparam("head"))
            .order_by(_JOBS.c.id)
            .limit(bindparam("n", type_=Integer()))
        )
        self.take_pending = self.take.where(_JOBS.c.state == JobState.PENDING.value)
        self.release = (
            update(_JOBS)
            .where(_JOBS.c.id.in_(bindparam("ids", expanding=True)), _JOBS.c.lease_owner == bindparam("owner"),
                   _JOBS.c.state == JobState.RUNNING.value)
            .values(state=JobState.PENDING.value, lease_owner=None, lease_until=None,
                    attempts=_JOBS.c.attempts - 1, updated_at=bindparam("now"))
        )
        self.complete = (
            update(_JOBS)
            .where(_JOBS.c.id.in_(bindparam("ids", expanding=True)), _JOBS.c.lease_owner == bindparam("owner"),
                   _JOBS.c.state == JobState.RUNNING.value)
            .values(state=JobState.DONE.value, lease_owner=None, lease_until=None, updated_at=bindparam("now"))
            .returning(_JOBS.c.id)
        )

    def lease_ids(self, with_kinds: bool, with_routes: bool = False) -> Any:
        key = (with_kinds, with_routes)
        if key not in self._lease:
            now = bindparam("now", type_=_JOBS.c.next_attempt_at.type)
            query = _eligible(now).order_by(JobHeadRow.due_at, JobHeadRow.job_id).limit(
                bindparam("limit", type_=Integer()))
            if with_kinds:
                query = query.where(JobRow.kind.in_(bindparam("kinds", expanding=True)))
            if with_routes:  # issue 14: WhatsApp-side jobs only on the worker holding their number
                query = query.where(or_(JobRow.route.is_(None), JobRow.route.in_(bindparam("routes", expanding=True))))
            if self.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=JobRow)
            self._lease[key] = query
        return self._lease[key]


def _eligible(now: Any) -> Any:
    """Due heads, oldest due first. The head of a key is its oldest unfinished job, so "no older
    unfinished job of the key" holds by construction; "no other live lease on the key" is checked
    (one index probe per head) for a dead job requeued while a newer one of its key runs."""
    busy = aliased(JobRow)
    other_running = exists().where(
        busy.ordering_key == JobRow.ordering_key, busy.state == JobState.RUNNING.value,
        busy.id != JobRow.id, busy.lease_until > now,
    )
    # the job's own due time, re-checked on the locked row (PostgreSQL re-evaluates it after a
    # concurrent lease committed). A CASE is not indexable: the planner has to walk the heads'
    # (due_at, job_id) index in order and stop at ``limit``, instead of scanning the due jobs.
    due = case(
        (JobRow.state == JobState.PENDING.value, JobRow.next_attempt_at),
        (JobRow.state == JobState.RUNNING.value, JobRow.lease_until),
    ) <= now
    return (
        select(JobRow.id)
        .join(JobHeadRow, JobHeadRow.job_id == JobRow.id)
        .where(JobHeadRow.due_at <= now, due, or_(JobRow.ordering_key.is_(None), ~other_running))
    )
