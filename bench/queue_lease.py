"""The durable job queue at any backlog: lease time with 100,000 pending jobs ÷ with 100 pending.

For each backlog size a fresh database is filled with pending, due jobs: 80 % in chats of 20 jobs
sharing an ``ordering_key`` (one at a time, oldest first), 20 % without a key. Then the queue's real
``SqlJobQueue`` is timed:

  lease_ms     one ``lease(limit=10)``; the leased jobs are put back with ``retry_later(now)`` so the
               backlog keeps its size (median over the rounds)
  enqueue_ms   one ``enqueue`` of a keyed job on the largest backlog (p50 / p99)

prints a table and appends one JSON line to bench/results/queue_lease.jsonl with lease_ratio
(largest ÷ smallest backlog, goal ≤ 1.5), lease_ms at each size and enqueue p50/p99.

    .venv/bin/python bench/queue_lease.py [--quick] [--db-url postgresql+psycopg://...]

``--db-url`` runs on that (empty or throw-away) database instead of a temporary SQLite file: its jobs
are deleted between sizes. ``--quick``: 100 and 10,000 pending, fewer rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, insert  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402

from bench._common import percentile, record, table  # noqa: E402
from ghl_desktop.adapters.storage import Database, open_database  # noqa: E402
from ghl_desktop.adapters.storage.orm import JobRow  # noqa: E402
from ghl_desktop.core.models import JobState, NewJob, utcnow  # noqa: E402

CHAT = 20  # jobs per ordering_key


def fill(db: Database, n: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(delete(JobRow))
    past = utcnow() - timedelta(minutes=5)
    rows = []
    for i in range(n):
        keyed = i % 5 != 0
        rows.append({"kind": "inbound", "payload": {"n": i}, "state": JobState.PENDING.value, "attempts": 0,
                     "next_attempt_at": past + timedelta(microseconds=i),
                     "ordering_key": f"chat:{i // CHAT}" if keyed else None,
                     "created_at": past, "updated_at": past})
    with db.engine.begin() as conn:
        for start in range(0, n, 5000):
            conn.execute(insert(JobRow), rows[start:start + 5000])
    # settle the bulk load's writes before timing (a steady queue has no load in flight): SQLite folds
    # its WAL back; PostgreSQL checkpoints and analyzes as autovacuum would
    with db.engine.connect() as conn:
        if db.engine.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("ANALYZE jobs")
            conn.exec_driver_sql("ANALYZE job_heads")
            with contextlib.suppress(DBAPIError):  # needs the pg_checkpoint role
                conn.exec_driver_sql("CHECKPOINT")
        else:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def time_leases(db: Database, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        now = utcnow()
        t = time.perf_counter()
        jobs = db.jobs.lease("bench", now=now, lease_seconds=60, limit=10)
        times.append((time.perf_counter() - t) * 1000)
        assert jobs, "the backlog ran dry"
        for job in jobs:
            db.jobs.retry_later(job.id, "bench", error="bench", run_at=now)
    return times


def time_enqueues(db: Database, count: int) -> list[float]:
    times = []
    for i in range(count):
        t = time.perf_counter()
        db.jobs.enqueue(NewJob(kind="inbound", payload={"e": i}, ordering_key=f"chat:new{i % 50}"))
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 10,000 pending, fewer rounds")
    parser.add_argument("--db-url", help="run on this database (its jobs are deleted) instead of SQLite")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append a JSON line")
    args = parser.parse_args()
    sizes = (100, 10_000) if args.quick else (100, 100_000)
    rounds = 50 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = open_database(url, migrate=True)
        try:
            lease_ms: dict[int, float] = {}
            enqueue: list[float] = []
            for n in sizes:
                fill(db, n)
                time_leases(db, 20)  # warm-up: caches, statement compilation
                lease_ms[n] = statistics.median(time_leases(db, rounds))
                if n == sizes[-1]:
                    enqueue = time_enqueues(db, 100 if args.quick else 500)
        finally:
            with db.engine.begin() as conn:
                conn.execute(delete(JobRow))
            db.close()
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    ratio = lease_ms[sizes[-1]] / lease_ms[sizes[0]]
    figures = {
        "backend": backend,
        "lease_ratio": round(ratio, 3),
        **{f"lease_ms_{n}": round(ms, 3) for n, ms in lease_ms.items()},
        "enqueue_p50_ms": round(percentile(enqueue, 0.5), 3),
        "enqueue_p99_ms": round(percentile(enqueue, 0.99), 3),
        "lease_limit": 10, "rounds": rounds,
    }
    table([(k, v) for k, v in figures.items()], f"queue lease ({backend}, pending {sizes[0]:,} vs {sizes[-1]:,})")
    record("queue_lease", figures, quick=args.quick, enabled=not args.no_record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
