"""Webhooks in a cluster (issue 14): every worker's endpoint (and relay stream) may take HighLevel's
deliveries; the same delivery reaching two workers is stored once, through the shared PostgreSQL (two
workers = two database engines, two intakes, concurrently)."""

from __future__ import annotations

import asyncio

import pytest

from ghl_desktop.adapters.storage import open_database
from ghl_desktop.webhooks.gate import KIND_OUTBOUND_MESSAGE
from ghl_desktop.webhooks.intake import WebhookIntake
from tests.webhooks.signing import outbound_message

pytestmark = pytest.mark.postgres


@pytest.mark.asyncio
async def test_the_same_delivery_on_two_workers_is_stored_once(pg_url: str) -> None:
    worker_1 = await asyncio.to_thread(open_database, pg_url, migrate=True)
    worker_2 = await asyncio.to_thread(open_database, pg_url, migrate=False)
    try:
        intakes = [WebhookIntake(db.aio.jobs, backlog_recount_seconds=0) for db in (worker_1, worker_2)]
        bodies = [outbound_message() for _ in range(20)]
        # each delivery reaches both workers at once (HighLevel retried it, a balancer sent it twice, or
        # both relay streams got it); the relay path and the direct path derive the same keys
        results = await asyncio.gather(*(
            intake.store_relayed(KIND_OUTBOUND_MESSAGE, body) for body in bodies for intake in intakes))
        assert sum(r.created for r in results) == len(bodies)
        jobs = await asyncio.to_thread(worker_1.jobs.list, limit=1000)
        stored = [j.payload["event"]["messageId"] for j in jobs if j.kind == KIND_OUTBOUND_MESSAGE]
        assert sorted(stored) == sorted(b["messageId"] for b in bodies)
    finally:
        for db in (worker_1, worker_2):
            await asyncio.to_thread(db.close)
