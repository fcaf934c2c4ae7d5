"""Number ownership in a cluster of workers (issue 14): the ``number_leases`` and ``cluster_workers``
tables (migration 0006), and the fenced bookkeeping of WhatsApp-side jobs.

Rules (``services/ownership.py`` drives them; docs/cluster.md):
- Every time is the database's clock (``clock_timestamp()`` on PostgreSQL), read once per transaction,
  so workers on several machines never compare their own clocks.
- A worker's heartbeat (``tick``) renews its worker row and every lease it still holds that has not
  expired; a lease past its ``expires_at`` is never renewed (its holder has already let it go, see the
  service) and only then can another worker ``claim`` it, which increases its ``epoch`` (fencing token).
- A released lease (``worker`` NULL) can be claimed at once: its holder disconnected before releasing.
- ``complete_fenced`` completes a job routed to a number only while the completing worker still holds
  that number with the same epoch; otherwise the job goes back to the queue for the new holder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, and_, delete, exists, func, literal, null, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ghl_desktop.adapters.storage.engine_store import engine_store_schema
from ghl_desktop.adapters.storage.orm import ClusterWorkerRow, JobRow, NumberLeaseRow, SessionRow, UTCDateTime
from ghl_desktop.adapters.storage.tx import Transactions
from ghl_desktop.core.models import JobState, SessionState, utcnow

log = logging.getLogger("ghl.storage.ownership")

#: numbers a worker connects: the ones the sessions service would resume (final states wait for a person)
CLAIMABLE_STATES = (SessionState.CONNECTING.value, SessionState.CONNECTED.value,
                    SessionState.RECONNECTING.value, SessionState.PHONE_OFFLINE.value)


@dataclass(frozen=True, slots=True)
class TickView:
    """What one heartbeat saw: the leases still held (renewed), with their epochs; how many workers are
    alive (this one included); the numbers there are to hold."""

    held: dict[str, int]
    live_workers: int
    claimable: tuple[str, ...]
    #: numbers being linked (waiting for a scan): the linking process holds them, nobody else claims them
    linking: tuple[str, ...] = ()


class SqlOwnership:
    """Blocking calls: run them on the storage executor (``db.aio.run``), never on the loop."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def _now(self, s: Session) -> datetime:
        if self._tx.dialect == "postgresql":
            now = s.scalar(text("SELECT clock_timestamp()"))
            assert isinstance(now, datetime)
            return now
        return utcnow()

    def _insert(self, row: type[Any]) -> Any:
        return (pg_insert if self._tx.dialect == "postgresql" else sqlite_insert)(row)

    # --- heartbeat ------------------------------------------------------------------------------------

    def tick(self, worker: str, ttl: float) -> TickView:
        """Heartbeat: the worker row and every unexpired lease of ``worker`` get ``now + ttl``."""
        with self._tx.write() as s:
            now = self._now(s)
            until = now + timedelta(seconds=ttl)
            ins = self._insert(ClusterWorkerRow).values(name=worker, started_at=now, expires_at=until)
            s.execute(ins.on_conflict_do_update(index_elements=["name"], set_={"expires_at": until}))
            renewed = s.execute(
                update(NumberLeaseRow)
                .where(NumberLeaseRow.worker == worker, NumberLeaseRow.expires_at > now)
                .values(expires_at=until, updated_at=now)
                .returning(NumberLeaseRow.session_id, NumberLeaseRow.epoch)
            ).all()
            live = s.scalar(select(func.count()).select_from(ClusterWorkerRow)
                            .where(ClusterWorkerRow.expires_at > now))
            states = s.execute(select(SessionRow.id, SessionRow.state).order_by(SessionRow.id)).all()
        claimable = tuple(str(sid) for sid, state in states if state in CLAIMABLE_STATES)
        linking = tuple(str(sid) for sid, state in states if state == SessionState.WAITING_FOR_SCAN.value)
        return TickView({str(sid): int(epoch) for sid, epoch in renewed}, int(live or 0), claimable, linking)

    # --- taking and giving back -----------------------------------------------------------------------

    def claim(self, worker: str, limit: int, ttl: float) -> dict[str, int]:
        """Take up to ``limit`` claimable numbers nobody holds (never held, released, or expired); each
        taken lease's epoch goes up by one. Returns {session id: epoch}."""
        if limit <= 0:
            return {}
        with self._tx.write() as s:
            now = self._now(s)
            until = now + timedelta(seconds=ttl)
            stamp = literal(now, UTCDateTime())
            missing = select(SessionRow.id, null(), literal(0, BigInteger()), stamp, stamp).where(
                SessionRow.state.in_(CLAIMABLE_STATES),
                ~exists().where(NumberLeaseRow.session_id == SessionRow.id))
            s.execute(
                self._insert(NumberLeaseRow)
                .from_select(["session_id", "worker", "epoch", "expires_at", "updated_at"], missing)
                .on_conflict_do_nothing(index_elements=["session_id"])
            )
            free = or_(NumberLeaseRow.worker.is_(None), NumberLeaseRow.expires_at <= now)
            query = (
                select(NumberLeaseRow.session_id)
                .join(SessionRow, SessionRow.id == NumberLeaseRow.session_id)
                .where(free, SessionRow.state.in_(CLAIMABLE_STATES))
                .order_by(NumberLeaseRow.session_id)
                .limit(limit)
            )
            if self._tx.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=NumberLeaseRow)
            ids = list(s.scalars(query))
            if not ids:
                return {}
            taken = s.execute(
                update(NumberLeaseRow)
                .where(NumberLeaseRow.session_id.in_(ids), free)
                .values(worker=worker, epoch=NumberLeaseRow.epoch + 1, expires_at=until, updated_at=now)
                .returning(NumberLeaseRow.session_id, NumberLeaseRow.epoch)
            ).all()
            self._engine_stores(s, [str(sid) for sid, _epoch in taken])
        return {str(sid): int(epoch) for sid, epoch in taken}

    def _engine_stores(self, s: Session, session_ids: list[str]) -> None:
        """PostgreSQL: the schema of each taken number's WhatsApp engine store (neonize, engine_store.py)."""
        if self._tx.dialect != "postgresql":
            return
        for sid in session_ids:
            s.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{engine_store_schema(sid)}"'))

    def claim_one(self, worker: str, session_id: str, ttl: float) -> int | None:
        """Hold one given number whatever its state (the process linking it: nobody else connects it
        meanwhile), unless another worker holds it unexpired. Returns the epoch, or None."""
        with self._tx.write() as s:
            now = self._now(s)
            s.execute(self._insert(NumberLeaseRow).values(session_id=session_id, worker=None, epoch=0,
                                                          expires_at=now, updated_at=now)
                      .on_conflict_do_nothing(index_elements=["session_id"]))
            epoch = s.scalar(
                update(NumberLeaseRow)
                .where(NumberLeaseRow.session_id == session_id,
                       or_(NumberLeaseRow.worker.is_(None), NumberLeaseRow.expires_at <= now,
                           NumberLeaseRow.worker == worker))
                .values(worker=worker, epoch=NumberLeaseRow.epoch + 1,
                        expires_at=now + timedelta(seconds=ttl), updated_at=now)
                .returning(NumberLeaseRow.epoch)
            )
            if epoch is not None:
                self._engine_stores(s, [session_id])
        return None if epoch is None else int(epoch)

    def release(self, worker: str, session_ids: Iterable[str]) -> int:
        """Give numbers back (their connection is already closed): claimable by anyone at once."""
        ids = list(session_ids)
        if not ids:
            return 0
        with self._tx.write() as s:
            now = self._now(s)
            result = s.execute(
                update(NumberLeaseRow)
                .where(NumberLeaseRow.worker == worker, NumberLeaseRow.session_id.in_(ids))
                .values(worker=None, expires_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def leave(self, worker: str) -> None:
        """A clean stop: every lease of ``worker`` released and its worker row gone (the others rebalance
        at their next heartbeat instead of waiting for the expiry)."""
        with self._tx.write() as s:
            now = self._now(s)
            s.execute(update(NumberLeaseRow).where(NumberLeaseRow.worker == worker)
                      .values(worker=None, expires_at=now, updated_at=now)
                      .execution_options(synchronize_session=False))
            s.execute(delete(ClusterWorkerRow).where(ClusterWorkerRow.name == worker))

    def unroute(self, session_ids: Iterable[str]) -> int:
        """Pending jobs routed to numbers nobody will connect again (logged out...) go back to any worker."""
        ids = list(session_ids)
        if not ids:
            return 0
        with self._tx.write() as s:
            result = s.execute(
                update(JobRow).where(JobRow.route.in_(ids), JobRow.state == JobState.PENDING.value)
                .values(route=None, updated_at=utcnow()).execution_options(synchronize_session=False)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    # --- reading --------------------------------------------------------------------------------------

    def holders(self) -> dict[str, str]:
        """{session id: worker} for every lease that is held and unexpired (``numbers list``)."""
        with self._tx.read() as s:
            now = self._now(s)
            rows = s.execute(select(NumberLeaseRow.session_id, NumberLeaseRow.worker)
                             .where(NumberLeaseRow.worker.is_not(None), NumberLeaseRow.expires_at > now)).all()
        return {str(sid): str(w) for sid, w in rows}

    def epochs(self) -> dict[str, tuple[str | None, int]]:
        """{session id: (worker or None, epoch)} of every lease row (tests, diagnostics)."""
        with self._tx.read() as s:
            rows = s.execute(select(NumberLeaseRow.session_id, NumberLeaseRow.worker, NumberLeaseRow.epoch)).all()
        return {str(sid): (None if w is None else str(w), int(e)) for sid, w, e in rows}

    # --- jobs routed to a number ----------------------------------------------------------------------

    def route_job(self, job_id: int, owner: str, session_id: str) -> bool:
        """Mark the running job ``job_id`` (leased by ``owner``) as needing ``session_id``'s connection."""
        with self._tx.write() as s:
            result = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == JobState.RUNNING.value)
                .values(route=session_id, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            return bool(getattr(result, "rowcount", 0))

    def complete_fenced(self, job_id: int, owner: str, *, worker: str, session_id: str, epoch: int) -> bool:
        """Complete a job routed to ``session_id`` only while ``worker`` holds that number with ``epoch``
        (one statement, checked by the database). Refused: the job is released to run again at once —
        on the number's new holder (the handlers are idempotent). True when completed."""
        with self._tx.write() as s:
            now = self._now(s)
            fence = exists().where(
                NumberLeaseRow.session_id == session_id, NumberLeaseRow.worker == worker,
                NumberLeaseRow.epoch == epoch, NumberLeaseRow.expires_at > now)
            mine = and_(JobRow.id == job_id, JobRow.lease_owner == owner, JobRow.state == JobState.RUNNING.value)
            done = s.execute(
                update(JobRow).where(mine, fence)
                .values(state=JobState.DONE.value, lease_owner=None, lease_until=None, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(done, "rowcount", 0):
                return True
            released = s.execute(
                update(JobRow).where(mine)
                .values(state=JobState.PENDING.value, lease_owner=None, lease_until=None, next_attempt_at=now,
                        last_error=f"number {session_id} changed worker (epoch {epoch} is stale); runs again",
                        updated_at=now)
                .execution_options(synchronize_session=False)
            )
        log.warning("job %s: completion by %s refused, number %s no longer held at epoch %s (%s)",
                    job_id, worker, session_id, epoch,
                    "released for the new holder" if getattr(released, "rowcount", 0) else "lease already gone")
        return False


def ownership_repo(db: Any) -> SqlOwnership:
    """The ownership repository of a :class:`~ghl_desktop.adapters.storage.Database`."""
    return SqlOwnership(Transactions(db.engine))


__all__ = ["CLAIMABLE_STATES", "SqlOwnership", "TickView", "ownership_repo"]
