"""The bridge under HighLevel faults, in-process over real loopback HTTP: 5xx answers, latency and a
token expiring mid-stream; a full outage; a permanent misconfiguration that dead-letters and is
retried by hand once fixed. Each time: everything arrives, nothing twice, never a 429."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from ghl_desktop.adapters.ghl.rate import RateLimitConfig
from ghl_desktop.core.models import JobState
from ghl_desktop.services.bridge import INBOUND
from tests.e2e.harness import FAST_RUNTIME, Env, bridge_env, eventually

pytestmark = pytest.mark.timeout(240)

PHONES = ["+4915130000001", "+4915130000002", "+4915130000003", "+4915130000004"]
#: the client's own 5xx retries, shortened (HighLevel's real limits stay: 5 retries, rate pacing)
QUICK_CLIENT = RateLimitConfig(backoff_base_seconds=0.02, backoff_cap_seconds=0.2)
#: a tight limit (30 requests per 1 s window) so that pacing really happens; the client follows it
TIGHT_LIMIT = {"rate_limit_per_10s": 30, "rate_limit_window_seconds": 1.0}


async def control(env: Env, path: str, body: dict[str, Any]) -> Any:
    answer = await env.http.post(f"{env.url}/_sandbox/{path}", json=body)
    answer.raise_for_status()
    return answer.json()


async def alt_counts(env: Env) -> Counter[str]:
    return Counter(m["altId"] for m in await env.messages() if m.get("altId"))


async def contact_ids(env: Env, phones: list[str]) -> dict[str, str]:
    async def all_there() -> dict[str, str] | None:
        found = {c["phone"]: c["id"] for c in (await env.state())["contacts"] if c["phone"] in phones}
        return found if len(found) == len(phones) else None

    result: dict[str, str] = await eventually(all_there, 60)
    return result


async def status_of(env: Env, message_id: str) -> str:
    return str(next(m["status"] for m in await env.messages() if m["id"] == message_id))


def assert_no_429(env: Env, state: dict[str, Any]) -> None:
    assert state["stats"].get("rate_limited", 0) == 0
    assert env.runtime.client.scheduler.rate_limited_responses == 0
    assert all(v["limited"] == 0 for v in state["rate_limits"].values())


@pytest.mark.asyncio
async def test_5xx_latency_and_a_token_expiry_mid_stream() -> None:
    options = replace(FAST_RUNTIME, rate_limits=QUICK_CLIENT)
    async with bridge_env(options, seed=20261129, **TIGHT_LIMIT) as env:
        for i, phone in enumerate(PHONES):
            await env.customer(phone, f"Customer {i}")
        env.sandbox.set_faults(error_rate=0.2, latency_ms=25)
        first = [await env.send(PHONES[i % 4], text=f"first half {i}") for i in range(30)]

        async def half_arrived() -> bool:
            counts = await alt_counts(env)
            return sum(1 for a in first if a in counts) >= 10

        await eventually(half_arrived, 60)
        tokens_before = len(env.sandbox.state.tokens)
        expired = await control(env, "tokens/expire", {"locationId": env.location_id})
        assert expired["expired"] >= 1  # the bridge's access token dies while messages are flowing
        second = [await env.send(PHONES[i % 4], text=f"second half {i}") for i in range(30)]
        contacts = await contact_ids(env, PHONES)
        replies = {await env.reply(contacts[PHONES[k % 4]], f"agent answer {k}"): PHONES[k % 4] for k in range(8)}

        async def everything_arrived() -> bool:
            counts = await alt_counts(env)
            if not all(counts[a] for a in first + second):
                return False
            inboxes = {p: await env.inbox(p) for p in PHONES}
            texts = {m["text"] for inbox in inboxes.values() for m in inbox}
            if not all(f"agent answer {k}" in texts for k in range(8)):
                return False
            statuses = {m["id"]: m["status"] for m in await env.messages()}
            return all(statuses[r] in ("delivered", "read") for r in replies)

        await eventually(everything_arrived, 120)
        counts = await alt_counts(env)
        assert set(counts) == set(first + second) and set(counts.values()) == {1}  # zero duplicates
        for phone in PHONES:
            texts = Counter(m["text"] for m in await env.inbox(phone))
            assert texts == Counter(f"agent answer {k}" for k in range(8) if PHONES[k % 4] == phone)
        state = await env.state()
        assert state["stats"].get("injected_errors", 0) >= 10  # the faults really happened
        assert len(env.sandbox.state.tokens) > tokens_before  # and the token was refreshed, not re-installed
        assert_no_429(env, state)
        assert env.app.db.jobs.count("dead") == 0


@pytest.mark.asyncio
async def test_an_outage_waits_and_retries_then_delivers_everything_once() -> None:
    # three attempts would dead-letter in about a second of outage; the retry window keeps them alive
    runner = replace(FAST_RUNTIME.runner, max_attempts=3, transient_retry_seconds=300.0)
    options = replace(FAST_RUNTIME, runner=runner,
                      rate_limits=RateLimitConfig(max_retries=1, backoff_base_seconds=0.02, backoff_cap_seconds=0.05))
    async with bridge_env(options, **TIGHT_LIMIT) as env:
        await env.customer(PHONES[0], "Olga")
        warm = await env.send(PHONES[0], text="before the outage")
        await eventually(lambda: _has(env, warm))
        contact = (await contact_ids(env, PHONES[:1]))[PHONES[0]]

        env.sandbox.set_faults(error_rate=1.0)  # HighLevel answers nothing but 5xx
        during = [await env.send(PHONES[0], text=f"during the outage {i}") for i in range(10)]
        reply = await env.reply(contact, "sent while HighLevel is down")
        await eventually(lambda: _inbox_has(env, PHONES[0], "sent while HighLevel is down"))

        def retried_past_the_attempt_budget() -> bool:
            jobs = env.app.db.jobs.list(limit=500)
            return any(j.kind == INBOUND and j.attempts > runner.max_attempts for j in jobs)

        await eventually(retried_past_the_attempt_budget, 60)
        assert env.app.db.jobs.count("dead") == 0  # waiting, not dead-lettered
        assert not set(during) & set(await alt_counts(env))

        env.sandbox.set_faults(error_rate=0.0)  # the outage ends

        async def all_in() -> bool:
            counts = await alt_counts(env)
            return all(counts[a] for a in during) and await status_of(env, reply) in ("delivered", "read")

        await eventually(all_in, 90)
        counts = await alt_counts(env)
        assert [counts[a] for a in [warm, *during]] == [1] * 11
        assert [m["text"] for m in await env.inbox(PHONES[0])] == ["sent while HighLevel is down"]
        assert env.app.db.jobs.count("dead") == 0
        assert_no_429(env, await env.state())


@pytest.mark.asyncio
async def test_a_permanent_error_dead_letters_with_a_reason_and_a_manual_retry_delivers_once() -> None:
    async with bridge_env() as env:
        await env.customer(PHONES[1], "Pia")
        ok = await env.send(PHONES[1], text="all fine")
        await eventually(lambda: _has(env, ok))

        # the agency re-created the conversation provider in the marketplace: our provider id is stale
        correct = env.sandbox.state.app.provider_id
        env.sandbox.state.app.provider_id = "f" * 24
        broken = await env.send(PHONES[1], text="sent while misconfigured")

        def dead_job() -> Any:
            return next((j for j in env.app.db.jobs.list("dead", 50) if j.kind == INBOUND), None)

        job = await eventually(dead_job, 30)
        assert job.attempts == 1  # a permanent error is not retried blindly
        assert "conversationProviderId" in (job.last_error or ""), job.last_error
        assert broken not in await alt_counts(env)

        env.sandbox.state.app.provider_id = correct  # fixed
        assert await env.app.db.aio.jobs.requeue_dead(job.id)
        env.runtime.runner.wake()
        await eventually(lambda: _has(env, broken))
        assert not await env.app.db.aio.jobs.requeue_dead(job.id)  # no longer dead: a second click does nothing
        await env.runtime.runner.run_until_idle(20)
        again = await env.app.db.aio.jobs.get(job.id)
        assert again is not None and again.state is JobState.DONE
        counts = await alt_counts(env)
        assert counts[broken] == 1 and counts[ok] == 1


async def _has(env: Env, alt: str) -> bool:
    return alt in await alt_counts(env)


async def _inbox_has(env: Env, phone: str, text: str) -> bool:
    return any(m["text"] == text for m in await env.inbox(phone))

