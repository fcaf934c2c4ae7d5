"""Where one bridged inbound message's time goes: the diagnostic behind ``pipeline_ratio``.

The same bridge phase as bench/bridge_throughput.py (customers in their own process, the sandbox in its
own, rate limits off), counted instead of only timed:

  per message   storage hops (calls to the storage thread), SQL statements by verb, commits
  storage       per kind of call: how long it waited for the storage thread and how long it ran
                (median), and the thread's busy share of the phase
  one chat      median store (receipt -> stored), handler (the HighLevel post), completion (handler
                end -> its batched completion committed) and the chat's cycle (one job's start to the
                next one's)

    .venv/bin/python bench/bridge_anatomy.py [--messages 1500] [--phones 8] [--no-record]

Appends one JSON line to bench/results/bridge_anatomy.jsonl. The wrappers add a few µs per call, so
its msg/s is a little below bridge_throughput's; read the counts, not the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import NO_LIMITS, bridge_env, fast_runtime, record, sandbox_process, table
from bench.bridge_throughput import through_bridge
from ghl_desktop.adapters.ghl.rate import RateLimitConfig


class Anatomy:
    """Counters on the storage executor, the SQL engine, the job runner and the inbound handler."""

    def __init__(self) -> None:
        self.on = False
        self.sql: Counter[str] = Counter()
        self.calls: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.times: dict[str, dict[str, float]] = defaultdict(dict)
        self.started = self.stopped = 0.0

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        from ghl_desktop.adapters.storage import offloop
        from ghl_desktop.services import jobs
        from ghl_desktop.services.bridge import inbound

        now = time.perf_counter
        me = self

        @event.listens_for(Engine, "before_cursor_execute")
        def _statement(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            if me.on:
                me.sql[statement.split(None, 1)[0].upper()] += 1

        @event.listens_for(Engine, "commit")
        def _commit(conn: Any) -> None:
            if me.on:
                me.sql["(commits)"] += 1

        submit = offloop.StorageExecutor._submit

        def counted_submit(executor: Any, fn: Any, args: Any, kwargs: Any, *, background: bool) -> Any:
            queued, name = now(), getattr(fn, "__qualname__", type(fn).__name__)

            def timed(*a: Any, **k: Any) -> Any:
                began = now()
                try:
                    return fn(*a, **k)
                finally:
                    if me.on:
                        me.calls[name].append((began - queued, now() - began))
            return submit(executor, timed, args, kwargs, background=background)

        offloop.StorageExecutor._submit = counted_submit  # type: ignore[method-assign, assignment]

        start = jobs.JobRunner._start

        def leased(runner: Any, leased_jobs: list[Any]) -> None:
            for job in leased_jobs:
                message = job.payload.get("message")
                if isinstance(message, dict):
                    me.times[str(message.get("id"))]["chat"] = hash(job.ordering_key)
            start(runner, leased_jobs)

        jobs.JobRunner._start = leased  # type: ignore[method-assign, assignment]

        handle = inbound.InboundWork._handle_inbound

        async def handled(work: Any, job: Any) -> None:
            marks = me.times[str(job.payload["message"]["id"])]
            marks["handler"] = now()
            try:
                await handle(work, job)
            finally:
                marks["handled"] = now()

        inbound.InboundWork._handle_inbound = handled  # type: ignore[method-assign, assignment]

        complete = jobs.JobRunner._complete

        async def completed(runner: Any, job: Any, last: Any = None, **kw: Any) -> bool:
            ok: bool = await complete(runner, job, last, **kw)
            message = job.payload.get("message")
            if isinstance(message, dict):
                me.times[str(message.get("id"))]["completed"] = now()
            return ok

        jobs.JobRunner._complete = completed  # type: ignore[method-assign, assignment]

        on_message = inbound.InboundWork.on_message

        async def received(work: Any, session: Any, msg: Any) -> None:
            marks = me.times[msg.id]
            marks["received"] = now()
            await on_message(work, session, msg)
            marks["stored"] = now()

        inbound.InboundWork.on_message = received  # type: ignore[method-assign, assignment]

    def report(self, n: int) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
        phase = self.stopped - self.started
        per = {k: round(v / n, 2) for k, v in sorted(self.sql.items())}
        hops = sum(len(v) for v in self.calls.values())
        busy = sum(run for v in self.calls.values() for _, run in v)
        kinds = {name: {"n": len(v), "wait_ms": _ms(statistics.median(w for w, _ in v)),
                        "run_ms": _ms(statistics.median(r for _, r in v)), "run_s": round(sum(r for _, r in v), 2)}
                 for name, v in sorted(self.calls.items(), key=lambda kv: -sum(r for _, r in kv[1]))[:6]}
        keys = ("received", "stored", "handler", "handled", "completed", "chat")
        rows = [m for m in self.times.values() if all(k in m for k in keys)]
        chats: dict[float, list[dict[str, float]]] = defaultdict(list)
        for m in rows:
            chats[m["chat"]].append(m)
        cycles = [b["handler"] - a["handler"] for ms in chats.values()
                  for a, b in zip(sorted(ms, key=lambda m: m["handler"]), sorted(ms, key=lambda m: m["handler"])[1:],
                                  strict=False)]
        chat = {"store_ms": _ms(statistics.median(m["stored"] - m["received"] for m in rows)),
                "handler_ms": _ms(statistics.median(m["handled"] - m["handler"] for m in rows)),
                "completion_ms": _ms(statistics.median(m["completed"] - m["handled"] for m in rows)),
                "cycle_ms": _ms(statistics.median(cycles)) if cycles else None}
        figures = {"messages": n, "hops_per_msg": round(hops / n, 2), "sql_per_msg": per,
                   "storage_busy_share": round(busy / phase, 2), "storage_calls": kinds, "chat": chat}
        lines: list[tuple[str, Any]] = [
            ("storage hops / msg", figures["hops_per_msg"]),
            ("SQL / msg", ", ".join(f"{k} {v}" for k, v in per.items())),
            ("storage thread busy", f"{busy:.2f} s of {phase:.2f} s ({busy / phase:.0%})"),
        ]
        lines += [(f"  {name[:40]}", f"n {k['n']}, wait {k['wait_ms']} ms, run {k['run_ms']} ms (median), "
                   f"{k['run_s']} s in all") for name, k in kinds.items()]
        lines.append(("one chat (median ms)", ", ".join(f"{k[:-3]} {v}" for k, v in chat.items())))
        return lines, figures


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def run(n: int, n_phones: int, anatomy: Anatomy) -> float:
    phones = [f"+49151400{i:05d}" for i in range(n_phones)]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GHL_DESKTOP_HOME"] = str(Path(tmp) / "home")
        options = fast_runtime(rate_limits=RateLimitConfig(max_per_window=10_000_000, adapt_to_headers=False))
        async with sandbox_process(faults=NO_LIMITS) as sb, bridge_env(sb, options) as env:
            import bench.bridge_throughput as throughput

            counted: Any = getattr(throughput, "SentCounter")  # noqa: B009  (swapped below, then back)

            class Marked(counted):  # type: ignore[misc, valid-type]
                """Counting starts with the measured messages (the warm-up is not in the figures)."""

                def __init__(self, bus: Any, texts: Any) -> None:
                    super().__init__(bus, texts)
                    if texts("bench 0"):
                        anatomy.on, anatomy.started = True, time.perf_counter()

            setattr(throughput, "SentCounter", Marked)  # noqa: B010
            try:
                rate = await through_bridge(env, n, phones, None, {})
            finally:
                setattr(throughput, "SentCounter", counted)  # noqa: B010
                anatomy.on, anatomy.stopped = False, time.perf_counter()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--phones", type=int, default=8)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    anatomy = Anatomy()
    anatomy.install()
    rate = asyncio.run(run(args.messages, args.phones, anatomy))
    lines, figures = anatomy.report(args.messages)
    table([("bridge msg/s (counted)", f"{rate:.1f}"), *lines], "one bridged inbound message, counted")
    record("bridge_anatomy", {"bridge_msg_per_s": round(rate, 1), "phones": args.phones, **figures},
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
