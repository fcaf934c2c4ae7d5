"""Pure parts of the HighLevel adapter: phone normalisation, error mapping, rate headers, backoff."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest

from ghl_desktop.adapters.ghl.client import InvalidPhoneNumber, normalize_phone
from ghl_desktop.adapters.ghl.rate import RateHeaders, RateLimitConfig, RateScheduler, RetryPolicy
from ghl_desktop.adapters.ghl.transport import map_error, version_for
from ghl_desktop.core.errors import (
    GhlAuthError,
    GhlBadRequest,
    GhlContactNotFound,
    GhlForbidden,
    GhlNotFound,
    GhlPayloadTooLarge,
    GhlRateLimited,
    GhlTransientError,
    GhlVersionHeaderError,
)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (415) 555-2671", None, "+14155552671"),
        ("14155552671", None, "+14155552671"),  # WhatsApp JID user part: full number, no '+'
        ("0044 20 7946 0958", None, "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
    ],
)
def test_phone_numbers_become_e164(raw: str, region: str | None, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize("raw", ["", "hello", "+1 555", "+999 123"])
def test_invalid_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalize_phone(raw)


def _response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers,
                          request=httpx.Request("POST", "https://x/conversations/messages/inbound"))


def test_statuses_and_bodies_map_to_core_errors() -> None:
    assert isinstance(map_error(_response(401, {"statusCode": 401, "message": "version header was not found."})),
                      GhlVersionHeaderError)
    assert isinstance(map_error(_response(401, {"statusCode": 401, "message": "Invalid JWT"})), GhlAuthError)
    scope = map_error(_response(401, {"message": "The token is not authorized for this scope."}))
    assert isinstance(scope, GhlForbidden) and not isinstance(scope, GhlAuthError)
    gone = map_error(_response(400, {"statusCode": 400, "message": "CONVERSATIONS_CONTACT_NOT_FOUND"}))
    assert isinstance(gone, GhlContactNotFound) and gone.code == "CONVERSATIONS_CONTACT_NOT_FOUND"
    unprocessable = map_error(_response(422, {"statusCode": 422, "message": ["a is required", "b"]}))
    assert isinstance(unprocessable, GhlBadRequest) and unprocessable.message == "a is required; b"
    assert isinstance(map_error(_response(403, {"message": "no"})), GhlForbidden)
    assert isinstance(map_error(_response(404, {"message": "no"})), GhlNotFound)
    assert isinstance(map_error(_response(413, {"status": 413, "message": "big"})), GhlPayloadTooLarge)
    server = map_error(_response(503, {}))
    assert isinstance(server, GhlTransientError) and server.transient
    limited = map_error(_response(429, {"message": "Too Many Requests"},
                                  {"X-RateLimit-Interval-Milliseconds": "1500", "X-RateLimit-Daily-Remaining": "9"}))
    assert isinstance(limited, GhlRateLimited) and limited.retry_after == 1.5 and not limited.daily_exhausted
    daily = map_error(_response(429, {}, {"X-RateLimit-Daily-Remaining": "0"}))
    assert isinstance(daily, GhlRateLimited) and daily.daily_exhausted


def test_version_header_per_api_area() -> None:
    assert version_for("/conversations/messages/inbound") == "2021-04-15"
    assert version_for("/contacts/upsert") == "2021-07-28"
    assert version_for("/locations/abc") == "2021-07-28"
    assert version_for("/oauth/locationToken") == "2021-07-28"


def test_rate_headers_parse() -> None:
    parsed = RateHeaders.parse(httpx.Headers({
        "X-RateLimit-Max": "100", "X-RateLimit-Remaining": "7", "X-RateLimit-Interval-Milliseconds": "10000",
        "X-RateLimit-Limit-Daily": "200000", "X-RateLimit-Daily-Remaining": "1999",
    }))
    assert parsed == RateHeaders(max=100, remaining=7, interval_seconds=10.0, daily_limit=200000,
                                 daily_remaining=1999)
    assert RateHeaders.parse(httpx.Headers({"X-RateLimit-Max": "lots"})).max is None


def test_backoff_is_jittered_capped_and_never_zero() -> None:
    policy = RetryPolicy(RateLimitConfig(backoff_base_seconds=0.1, backoff_cap_seconds=1.0), random.Random(7))
    delays = [[policy.delay(attempt) for _ in range(50)] for attempt in range(8)]
    for attempt, sample in enumerate(delays):
        ceiling = min(1.0, 0.1 * 2**attempt)
        assert all(ceiling * 0.1 <= d <= ceiling for d in sample)
        assert len(set(sample)) > 1  # jitter
    assert max(delays[7]) <= 1.0


@pytest.mark.asyncio
async def test_limiter_never_lets_more_than_max_start_in_any_window() -> None:
    window = 0.1
    limiter = RateScheduler(RateLimitConfig(window_seconds=window, max_per_window=100)).limiter("location:x")
    starts: list[float] = []

    async def request() -> None:
        async with limiter.slot():
            starts.append(time.monotonic())
            await asyncio.sleep(0)

    await asyncio.gather(*(request() for _ in range(300)))
    starts.sort()
    assert starts[-1] - starts[0] >= 2 * window  # three windows' worth
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[i:] if u - t < window) <= 100
    assert limiter.delayed_requests == 200


@pytest.mark.asyncio
async def test_limiter_counts_requests_in_flight_against_the_window() -> None:
    """A slow request still holds its place: the window is measured from answers, not sends."""
    limiter = RateScheduler(RateLimitConfig(window_seconds=0.05, max_per_window=3)).limiter("location:x")
    release = asyncio.Event()
    in_flight = 0
    peak = 0

    async def request() -> None:
        nonlocal in_flight, peak
        async with limiter.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await release.wait()
            in_flight -= 1

    tasks = [asyncio.get_running_loop().create_task(request()) for _ in range(6)]
    await asyncio.sleep(0.2)  # four windows pass, but nobody answered yet
    assert peak == 3
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 3


@pytest.mark.asyncio
async def test_limiter_pauses_when_the_server_says_nothing_remains() -> None:
    limiter = RateScheduler(RateLimitConfig(window_seconds=10, max_per_window=100)).limiter("location:x")
    await limiter.observe(RateHeaders(max=100, remaining=0, interval_seconds=0.15), status=200)
    assert limiter.window == 0.15  # adopted from X-RateLimit-Interval-Milliseconds
    began = time.monotonic()
    async with limiter.slot():
        waited = time.monotonic() - began
    assert waited >= 0.1


@pytest.mark.asyncio
async def test_remaining_zero_pauses_only_when_others_share_the_budget() -> None:
    """``X-RateLimit-Remaining: 0`` after our own full window: the sliding window alone holds the next
    request (until our oldest answer is a window old); the same answer while we sent less than the
    limit means someone else uses the budget: wait the server's whole interval."""
    now = [100.0]
    limiter = RateScheduler(RateLimitConfig(window_seconds=10.0, max_per_window=3),
                            clock=lambda: now[0]).limiter("location:x")
    zero = RateHeaders.parse({"x-ratelimit-remaining": "0", "x-ratelimit-interval-milliseconds": "10000"})
    assert zero.remaining == 0
    for at in (100.0, 101.0, 102.0):
        now[0] = at
        async with limiter.slot():
            await limiter.observe(zero if at == 102.0 else RateHeaders(), status=200)
    now[0] = 102.5
    assert limiter._wait_seconds(now[0]) == pytest.approx(7.5)  # 100 + 10: our oldest answer leaves

    shared = RateScheduler(RateLimitConfig(window_seconds=10.0, max_per_window=3),
                           clock=lambda: now[0]).limiter("location:y")
    async with shared.slot():
        await shared.observe(zero, status=200)
    assert shared._wait_seconds(now[0]) == pytest.approx(10.0)  # one of ours, yet none left: others
