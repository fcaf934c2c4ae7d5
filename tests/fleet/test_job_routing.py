"""Jobs go where they can run (issue 14), on the real PostgreSQL: a job that needs a number held by another
worker is routed to it and given back; only that number's holder leases it then; its completion is
fenced with the epoch it ran under, so a worker that lost the number meanwhile cannot mark it done.
The "sessions" stand in for the WhatsApp side (they record sends); the queue and leases are real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text

from ghl_desktop.adapters.storage import Database, open_database
from ghl_desktop.adapters.storage.ownership import ownership_repo
from ghl_desktop.core.models import Job, JobState, Location, NewJob, SessionState, WhatsAppSession, utcnow
from ghl_desktop.services.jobs import RetryLater
from ghl_desktop.services.ownership import ClusterSessions, OwnershipOptions, OwnershipService, RoutedQueue, track_jobs

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio]

OPTIONS = OwnershipOptions(heartbeat_seconds=60, takeover_seconds=600)  # no beat during the test: ticks by hand


class Phones:
    """The WhatsApp side of one worker: every send it made, as (number, text)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def transport_for(self, session_id: str) -> object:
        return object()

    async def send_text(self, session_id: str, chat: str, text: str, **_kw: Any) -> None:
        self.sent.append((session_id, text))

    async def connect_held(self) -> None:
        return None

    async def release(self, session_id: str) -> None:
        return None


class Worker:
    def __init__(self, db: Database, name: str) -> None:
        self.phones = Phones()
        self.own = OwnershipService(ownership_repo(db), db.aio.run, self.phones, name, OPTIONS)
        self.runner_owner = f"{name}:runner"
        self.sessions = ClusterSessions(self.phones, self.own, owner=lambda: self.runner_owner)
        self.queue = RoutedQueue(db.aio.jobs, self.own)

        async def reply(job: Job) -> None:
            await self.sessions.send_text(job.payload["number"], "15550300000@s.whatsapp.net", job.payload["text"])

        self.handlers = track_jobs({"reply": reply})

    async def lease(self) -> list[Job]:
        return await self.queue.lease(self.runner_owner, now=utcnow(), lease_seconds=60)

    async def run(self, job: Job) -> str:
        """Run the job as the runner does; 'done', 'refused' (fence) or 'handed over'."""
        try:
            await self.handlers[job.kind](job)
        except RetryLater:
            await self.queue.retry_later(job.id, self.runner_owner, error="handed over", run_at=utcnow())
            return "handed over"
        await self.queue.complete(job.id, self.runner_owner)
        return "done"


@pytest.fixture
def pg(pg_url: str) -> Iterator[Database]:
    with open_database(pg_url) as db:
        db.locations.upsert(Location(id="loc1", name="Clinic"))
        for sid in ("n0", "n1"):
            db.sessions.create(WhatsAppSession(id=sid, location_id="loc1", state=SessionState.CONNECTED,
                                               store_path=f"/x/{sid}"))
        yield db


@pytest_asyncio.fixture
async def pair(pg: Database) -> AsyncIterator[tuple[Worker, Worker]]:
    a, b = Worker(pg, "a"), Worker(pg, "b")
    for name in ("a", "b"):  # both alive (their worker rows) before either takes its share
        await pg.aio.run(ownership_repo(pg).tick, name, 600.0)
    await a.own.tick()
    await b.own.tick()
    assert a.own.held_ids() == ["n0"] and b.own.held_ids() == ["n1"]
    yield a, b


async def test_a_job_for_another_workers_number_goes_to_that_worker(pg: Database, pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    job_id, _ = await pg.aio.jobs.enqueue(NewJob(kind="reply", payload={"number": "n1", "text": "hi"},
                                                 ordering_key="chat:c1"))
    behind, _ = await pg.aio.jobs.enqueue(NewJob(kind="reply", payload={"number": "n1", "text": "then"},
                                                 ordering_key="chat:c1"))
    [job] = await a.lease()  # any worker may lease an unrouted job (the webhook's reply)
    assert await a.run(job) == "handed over" and a.phones.sent == []
    routed = await pg.aio.jobs.get(job_id)
    assert routed is not None and routed.route == "n1" and routed.state is JobState.PENDING
    assert await a.lease() == []  # a does not hold n1; the chat's next job waits behind it
    [job] = await b.lease()
    assert job.id == job_id
    assert await b.run(job) == "done"
    done = await pg.aio.jobs.get(job_id)
    assert done is not None and done.state is JobState.DONE
    [nxt] = await b.lease()  # per-chat order kept: the next one only now
    assert nxt.id == behind
    assert await b.run(nxt) == "done"
    assert b.phones.sent == [("n1", "hi"), ("n1", "then")]


async def test_a_worker_that_lost_the_number_cannot_complete_its_job(pg: Database,
                                                                    pair: tuple[Worker, Worker]) -> None:
    a, b = pair
    job_id, _ = await pg.aio.jobs.enqueue(NewJob(kind="reply", payload={"number": "n1", "text": "late"}))
    [job] = await b.lease()
    await b.handlers["reply"](job)  # sent on n1 under epoch 1 ...
    with pg.engine.begin() as conn:  # ... then b stops beating: its lease and worker row run out
        past = {"t": utcnow() - timedelta(seconds=1)}
        conn.execute(text("UPDATE number_leases SET expires_at = :t WHERE session_id = 'n1'"), past)
        conn.execute(text("UPDATE cluster_workers SET expires_at = :t WHERE name = 'b'"), past)
    await a.own.tick()  # a takes n1 over (epoch 2)
    assert a.own.held_ids() == ["n0", "n1"] and ownership_repo(pg).epochs()["n1"] == ("a", 2)
    await b.queue.complete(job.id, b.runner_owner)  # refused by the fence: back to the queue
    refused = await pg.aio.jobs.get(job_id)
    assert refused is not None and refused.state is JobState.PENDING and "stale" in (refused.last_error or "")
    [again] = await a.lease()
    assert again.id == job_id and await a.run(again) == "done"
    assert a.phones.sent == [("n1", "late")]  # the new holder ran it (the real handler dedupes by WhatsApp id)
