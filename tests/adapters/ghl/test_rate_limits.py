"""Rate limits against the sandbox: the client's own scheduling never draws a 429, a 429 from the
server is waited out for the interval its headers give, and a spent daily quota stops the calls."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from ghl_desktop.adapters.ghl.rate import RateLimitConfig
from ghl_desktop.core.errors import GhlRateLimited

WINDOW = 1.0  # seconds: HighLevel's 10 s window, shortened in both the sandbox and the client.
# The sandbox validates every request against the spec and serves roughly 70-150 requests/s on a busy
# 2-core machine, so this window is only just binding end to end; the limiter's own arithmetic is
# proven without server speed in test_mapping.py::test_limiter_*.


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.asyncio
async def test_300_queued_requests_finish_without_a_single_429(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    rate = RateLimitConfig(window_seconds=WINDOW, max_per_window=100,
                           backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
    async with ghl_factory(rate=rate, rate_limit_window_seconds=WINDOW, rate_limit_per_10s=100) as ghl:
        loc = (await ghl.connect()).id
        contact = await ghl.contact(loc)
        sent = await ghl.client.add_inbound_message(loc, contact, "first", alt_id="wamid.first")
        start = ghl.sandbox.state.now()
        await asyncio.gather(*(
            ghl.client.add_inbound_message(loc, contact, f"m{i}", alt_id=f"wamid.{i}",
                                           conversation_id=sent.conversation_id)
            for i in range(300)
        ))
        elapsed = ghl.sandbox.state.now() - start

        assert "rate_limited" not in ghl.stats  # the sandbox answered no 429 at all
        assert ghl.client.scheduler.rate_limited_responses == 0
        delayed = ghl.client.scheduler.limiter(f"location:{loc}").delayed_requests
        assert delayed >= 200  # the client's scheduler, not the server, spaced them
        snapshot = await ghl.snapshot()
        times = sorted(_ts(m["dateAdded"]) for m in snapshot["messages"] if m["altId"] not in (None, "wamid.first"))
        assert len(times) == 300
        # 300 requests at 100 per window occupy at least three windows: the last batch cannot start before
        # two full windows have passed since the first (sandbox time)
        assert elapsed >= 2 * WINDOW
        assert times[-1] - times[0] >= 2 * WINDOW - 0.002  # ms rounding of dateAdded
        buckets = {int((t - times[0]) // WINDOW) for t in times}
        assert len(buckets) >= 3
        # and no window of sandbox time ever held more than the limit
        for i, t in enumerate(times):
            assert sum(1 for u in times[i:] if u - t < WINDOW - 0.002) <= 100


@pytest.mark.asyncio
async def test_a_429_is_waited_out_for_the_interval_the_headers_give(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    # the client believes HighLevel's default (100 / 10 s); the server allows 5 per 0.3 s
    rate = RateLimitConfig(max_rate_limited_retries=10, backoff_base_seconds=0.01, backoff_cap_seconds=0.05)
    async with ghl_factory(rate=rate, rate_limit_window_seconds=0.3, rate_limit_per_10s=5) as ghl:
        loc = (await ghl.connect()).id
        results = await asyncio.gather(*(ghl.client.get_location(loc) for _ in range(20)))
        assert len(results) == 20
        assert ghl.stats["rate_limited"] >= 1  # the server did push back...
        limiter = ghl.client.scheduler.limiter(f"location:{loc}")
        assert limiter.rate_limited_responses == ghl.stats["rate_limited"]
        # ...and the client adopted the server's numbers from the X-RateLimit-* headers
        assert limiter.max == 5 and limiter.window == pytest.approx(0.3)
        seen = ghl.stats["rate_limited"]
        await asyncio.gather(*(ghl.client.get_location(loc) for _ in range(15)))
        assert ghl.stats["rate_limited"] == seen  # once adapted, no more 429s


@pytest.mark.asyncio
async def test_spent_daily_quota_stops_calls_without_hammering(ghl_factory) -> None:  # type: ignore[no-untyped-def]
    async with ghl_factory(rate_limit_daily=3) as ghl:
        loc = (await ghl.connect()).id
        for _ in range(3):
            await ghl.client.get_location(loc)
        with pytest.raises(GhlRateLimited) as caught:
            await ghl.client.get_location(loc)
        assert caught.value.daily_exhausted and caught.value.retry_after > 0
        before = ghl.stats["api_requests"]
        with pytest.raises(GhlRateLimited):
            await ghl.client.get_location(loc)
        assert ghl.stats["api_requests"] == before  # the client knows; it does not ask again
