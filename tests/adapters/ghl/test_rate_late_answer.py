"""``X-RateLimit-Remaining: 0`` read late: the server counted the request over the window before it
counted it, and our answers that left OUR window while the answer was on its way (a busy loop reads it
late) are still in the server's. That is our own traffic, not someone else's: no whole-interval pause
(issue 12, ``budget_use``: the drain's windows ran 100, 3, 100 …). The test's clock drives the limiter."""

from __future__ import annotations

import pytest

from ghl_desktop.adapters.ghl.rate import RateHeaders, RateLimitConfig, RateScheduler

ZERO = RateHeaders.parse({"x-ratelimit-remaining": "0", "x-ratelimit-interval-milliseconds": "10000"})


@pytest.mark.asyncio
async def test_a_late_remaining_zero_our_own_requests_explain_does_not_pause() -> None:
    now = [100.0]
    limiter = RateScheduler(RateLimitConfig(window_seconds=10.0, max_per_window=3),
                            clock=lambda: now[0]).limiter("location:x")
    for at in (100.0, 101.0):
        now[0] = at
        async with limiter.slot():
            await limiter.observe(RateHeaders(), status=200)
    now[0] = 109.5
    async with limiter.slot():  # the server counts it at once: 100, 101, 109.5 in its window, none left
        now[0] = 110.5  # … and we read its answer a second later: our answer of 100 left our window
        await limiter.observe(ZERO, status=200)
    assert limiter.header_pauses == 0
    assert limiter._wait_seconds(now[0]) == 0  # 101 and 110.5 in our window: one place free now


@pytest.mark.asyncio
async def test_a_remaining_zero_our_requests_do_not_explain_still_pauses_the_interval() -> None:
    now = [100.0]
    limiter = RateScheduler(RateLimitConfig(window_seconds=10.0, max_per_window=3),
                            clock=lambda: now[0]).limiter("location:x")
    now[0] = 100.0
    async with limiter.slot():
        await limiter.observe(RateHeaders(), status=200)
    now[0] = 125.0  # our one answer is two windows old: someone else used the budget
    async with limiter.slot():
        now[0] = 125.5
        await limiter.observe(ZERO, status=200)
    assert limiter.header_pauses == 1
    assert limiter._wait_seconds(now[0]) == pytest.approx(10.0)
