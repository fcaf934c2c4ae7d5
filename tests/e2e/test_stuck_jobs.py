"""Work that cannot move until a person (or time) acts — a HighLevel location to reconnect or that
uninstalled the app, a WhatsApp number banned — is never stuck silently (issue 11 item 2): the job
carries the reason, it does not count toward the webhook backlog that answers HighLevel 429, and after
the maximum wait it is dead-lettered with that reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import update

from ghl_desktop.adapters.storage.orm import JobRow
from ghl_desktop.core.models import WAITING_PREFIX, Job, JobState, LocationState, SessionState, utcnow
from ghl_desktop.services.bridge import INBOUND, OUTBOUND
from ghl_desktop.services.health import HealthMonitor
from ghl_desktop.webhooks.intake import WebhookIntake
from tests.e2e.harness import FAST_RUNTIME, Env, bridge_env, eventually, off_loop

ALICE = "+4915112345678"


def _jobs(env: Env, kind: str) -> list[Job]:
    return [j for j in env.app.db.jobs.list(limit=10_000) if j.kind == kind]


def _age(env: Env, job_id: int, seconds: float) -> None:
    """Make a job look ``seconds`` older (created earlier) and due now (blocking: call it off the loop)."""
    now = utcnow()
    with env.app.db.jobs._tx.write() as s:  # test-only backdating of created_at
        s.execute(update(JobRow).where(JobRow.id == job_id).values(
            created_at=now - timedelta(seconds=seconds), next_attempt_at=now))


@pytest.mark.asyncio
@pytest.mark.parametrize(("state", "reason"), [
    (LocationState.NEEDS_RECONNECT, "location needs reconnect"),
    (LocationState.UNINSTALLED, "the app was uninstalled from its location"),
])
async def test_inbound_for_a_stalled_location_waits_visibly_outside_the_backlog_then_dead_letters(
    state: LocationState, reason: str,
) -> None:
    options = replace(FAST_RUNTIME, runner=replace(FAST_RUNTIME.runner, max_wait_seconds=3600.0))
    async with bridge_env(options) as env:
        await env.customer(ALICE, "Alice")
        await env.app.db.aio.locations.set_state(env.location_id, state)
        await env.send(ALICE, text="anyone there?")

        def waiting() -> Job | None:
            jobs = [j for j in _jobs(env, INBOUND) if j.waiting_reason]
            return jobs[0] if jobs else None

        job = await eventually(waiting, 30)
        assert job.waiting_reason == reason and job.last_error == WAITING_PREFIX + reason
        jobs = env.app.db.jobs
        assert jobs.count("pending") >= 1 and jobs.count_backlog() == 0  # not backlog: HighLevel gets no 429
        session_id = str(job.payload["session_id"])
        assert jobs.waiting_by_payload(INBOUND, ("session_id",)) == {session_id: {reason: 1}}
        # the number's health row says the same: "bridging stalled: <the job's reason> — 1 waiting"
        monitor = HealthMonitor.for_app(env.app, env.runtime)
        try:
            row = next(n for n in monitor.refresh().numbers if n.session_id == session_id)
        finally:
            monitor.stop()
        assert row.health.reason == f"bridging stalled: {reason} — 1 waiting" and row.waiting == 1

        # older than the maximum wait: dead-lettered with the reason, for a person to see and retry
        await off_loop(_age, env, job.id, 3601)  # a write: on a thread, not on the loop
        env.runtime.runner.wake()

        def dead() -> Job | None:
            j = jobs.get(job.id)
            return j if j is not None and j.state is JobState.DEAD else None

        gone = await eventually(dead, 30)
        assert gone.last_error is not None and gone.last_error.endswith(f"— {reason}")
        assert gone.last_error.startswith("gave up after waiting")
        assert jobs.waiting_by_payload(INBOUND, ("session_id",)) == {}


@pytest.mark.asyncio
async def test_a_reply_to_a_banned_number_waits_with_the_ban_as_its_reason_then_dead_letters() -> None:
    options = replace(FAST_RUNTIME, runner=replace(FAST_RUNTIME.runner, max_wait_seconds=3600.0))
    async with bridge_env(options) as env:
        await env.customer(ALICE, "Alice")
        await env.send(ALICE, text="hello")
        await eventually(lambda: env.app.db.contacts.find(env.location_id, phone=ALICE))
        contact = await env.contact_for(phone=ALICE)
        session = env.app.db.sessions.list(env.location_id)[0]
        answer = await env.http.post(f"{env.url}/_sandbox/whatsapp/{env.linked.lstrip('+')}/drop",
                                     json={"kind": "ban", "ban_seconds": 3600})
        assert answer.status_code < 300, answer.text
        await eventually(lambda: env.app.db.sessions.get(session.id).state  # type: ignore[union-attr]
                         is SessionState.TEMPORARILY_BANNED, 30)
        await env.reply(contact["id"], "we are open at 9")

        def waiting() -> Job | None:
            jobs = [j for j in _jobs(env, OUTBOUND) if j.waiting_reason]
            return jobs[0] if jobs else None

        job = await eventually(waiting, 30)
        assert job.waiting_reason is not None
        assert job.waiting_reason.startswith("the WhatsApp number is temporarily banned until ")
        assert env.app.db.jobs.count_backlog() == 0
        assert list(env.app.db.jobs.waiting_by_payload(OUTBOUND, ("event", "locationId"))) == [env.location_id]

        await off_loop(_age, env, job.id, 7200)  # a write: on a thread, not on the loop
        env.runtime.runner.wake()

        def dead() -> Job | None:
            j = env.app.db.jobs.get(job.id)
            return j if j is not None and j.state is JobState.DEAD else None

        gone = await eventually(dead, 30)
        assert gone.last_error is not None and "temporarily banned" in gone.last_error
        assert await env.inbox(ALICE) == []  # nothing was sent while banned


@pytest.mark.asyncio
async def test_the_webhook_backlog_counts_only_work_that_runs_by_itself() -> None:
    async with bridge_env() as env:
        await env.customer(ALICE, "Alice")
        await env.app.db.aio.locations.set_state(env.location_id, LocationState.NEEDS_RECONNECT)
        for n in range(3):
            await env.send(ALICE, text=f"message {n}")
        # the first waits with its reason; the two behind it on the chat's ordering key wait for the same
        await eventually(lambda: sum(1 for j in _jobs(env, INBOUND) if j.waiting_reason) == 1, 30)
        await eventually(lambda: env.app.db.jobs.count("pending") == 3, 30)
        await env.runtime.runner.stop()  # nothing changes the counts below any more

        intake = WebhookIntake(env.app.db.aio.jobs, backlog_limit=1, backlog_recount_seconds=0.0)
        assert not await intake.backlog_full()  # before: 3 pending ≥ 1 → every HighLevel reply got 429
        assert env.app.db.jobs.count("pending") == 3 and env.app.db.jobs.count_backlog() == 0
