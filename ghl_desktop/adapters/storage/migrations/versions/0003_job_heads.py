"""The job queue's heads: one row per job that may be next, so a lease never scans the backlog.

``job_heads`` holds every unfinished job without an ``ordering_key`` and, per ``ordering_key``, its
oldest unfinished job, with ``due_at`` = ``next_attempt_at`` (pending) or ``lease_until`` (running:
due again when the lease expires). Triggers on ``jobs`` keep it right for every writer (the queue,
``insert_job`` inside other repositories' transactions, the message log's requeue, raw updates):
after an insert, after a change of ``state`` / ``next_attempt_at`` / ``lease_until``, and after the
delete of an unfinished job. A job's ``ordering_key`` never changes after insert (nothing updates
it), so the triggers do not follow a change of key. Existing unfinished jobs are back-filled.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Written by hand to match ``ghl_desktop.adapters.storage.orm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DUE = "CASE WHEN {t}.state = 'running' THEN {t}.lease_until ELSE {t}.next_attempt_at END"
_UNFINISHED = "('pending', 'running')"

# recompute the head(s) touched by the row {r} (NEW or OLD): its own row when unkeyed, its key's oldest
# unfinished job when keyed
_SQLITE_SYNC = f"""
    DELETE FROM job_heads WHERE job_id = {{r}}.id
        OR ({{r}}.ordering_key IS NOT NULL AND ordering_key = {{r}}.ordering_key);
    INSERT INTO job_heads (job_id, ordering_key, due_at)
        SELECT j.id, j.ordering_key, {_DUE.format(t="j")} FROM jobs j
        WHERE {{r}}.ordering_key IS NULL AND j.id = {{r}}.id AND j.state IN {_UNFINISHED};
    INSERT INTO job_heads (job_id, ordering_key, due_at)
        SELECT j.id, j.ordering_key, {_DUE.format(t="j")} FROM jobs j
        WHERE {{r}}.ordering_key IS NOT NULL AND j.ordering_key = {{r}}.ordering_key
          AND j.state IN {_UNFINISHED}
        ORDER BY j.id LIMIT 1;
"""

_SQLITE_TRIGGERS = [
    # a new job is never older than its key's current head: it only becomes the head of an idle key
    f"""CREATE TRIGGER jobs_heads_insert AFTER INSERT ON jobs
        WHEN NEW.state IN {_UNFINISHED}
        BEGIN
            INSERT OR IGNORE INTO job_heads (job_id, ordering_key, due_at)
                VALUES (NEW.id, NEW.ordering_key, {_DUE.format(t="NEW")});
        END""",
    f"""CREATE TRIGGER jobs_heads_update AFTER UPDATE OF state, next_attempt_at, lease_until ON jobs
        BEGIN {_SQLITE_SYNC.format(r="NEW")} END""",
    f"""CREATE TRIGGER jobs_heads_delete AFTER DELETE ON jobs
        WHEN OLD.state IN {_UNFINISHED}
        BEGIN {_SQLITE_SYNC.format(r="OLD")} END""",
]

_PG_SYNC = f"""
CREATE FUNCTION jobs_heads_sync(r_id integer, r_key varchar) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF r_key IS NULL THEN
        DELETE FROM job_heads WHERE job_id = r_id;
        INSERT INTO job_heads (job_id, ordering_key, due_at)
            SELECT j.id, NULL, {_DUE.format(t="j")} FROM jobs j WHERE j.id = r_id AND j.state IN {_UNFINISHED};
    ELSE
        -- deleting the key's row first makes a concurrent enqueue of the key wait for this transaction
        DELETE FROM job_heads WHERE ordering_key = r_key OR job_id = r_id;
        INSERT INTO job_heads (job_id, ordering_key, due_at)
            SELECT j.id, j.ordering_key, {_DUE.format(t="j")} FROM jobs j
            WHERE j.ordering_key = r_key AND j.state IN {_UNFINISHED}
            ORDER BY j.id LIMIT 1
            ON CONFLICT (ordering_key) DO UPDATE SET job_id = excluded.job_id, due_at = excluded.due_at;
    END IF;
END $$
"""

_PG_TRIGGER_FN = f"""
CREATE FUNCTION jobs_heads_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.state IN {_UNFINISHED} THEN
            -- DO UPDATE (not DO NOTHING) locks an existing head row until this transaction ends, so a
            -- concurrent completion of that head recomputes it after this job is visible
            INSERT INTO job_heads (job_id, ordering_key, due_at)
                VALUES (NEW.id, NEW.ordering_key, {_DUE.format(t="NEW")})
                ON CONFLICT (ordering_key) DO UPDATE SET due_at = job_heads.due_at;
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF OLD.state IN {_UNFINISHED} THEN
            PERFORM jobs_heads_sync(OLD.id, OLD.ordering_key);
        END IF;
        RETURN NULL;
    END IF;
    PERFORM jobs_heads_sync(NEW.id, NEW.ordering_key);
    RETURN NULL;
END $$
"""

_PG_TRIGGERS = [
    _PG_SYNC,
    _PG_TRIGGER_FN,
    "CREATE TRIGGER jobs_heads_insert AFTER INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_heads_trigger()",
    """CREATE TRIGGER jobs_heads_update AFTER UPDATE OF state, next_attempt_at, lease_until ON jobs
        FOR EACH ROW EXECUTE FUNCTION jobs_heads_trigger()""",
    "CREATE TRIGGER jobs_heads_delete AFTER DELETE ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_heads_trigger()",
]

_BACKFILL = f"""
INSERT INTO job_heads (job_id, ordering_key, due_at)
    SELECT j.id, j.ordering_key, {_DUE.format(t="j")} FROM jobs j
    WHERE j.state IN {_UNFINISHED} AND (j.ordering_key IS NULL OR j.id IN (
        SELECT min(k.id) FROM jobs k WHERE k.ordering_key IS NOT NULL AND k.state IN {_UNFINISHED}
        GROUP BY k.ordering_key))
"""


def upgrade() -> None:
    op.create_table(
        "job_heads",
        sa.Column("job_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ordering_key", sa.String(255), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_heads"),
        sa.UniqueConstraint("ordering_key", name="uq_job_heads_ordering_key"),
    )
    op.create_index("ix_job_heads_due_at_job_id", "job_heads", ["due_at", "job_id"])
    op.execute(_BACKFILL)
    for statement in _PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    for trigger in ("jobs_heads_delete", "jobs_heads_update", "jobs_heads_insert"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}"
                   + (" ON jobs" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS jobs_heads_trigger()")
        op.execute("DROP FUNCTION IF EXISTS jobs_heads_sync(integer, varchar)")
    op.drop_index("ix_job_heads_due_at_job_id", table_name="job_heads")
    op.drop_table("job_heads")
