"""Per-location request scheduling for HighLevel: the 100-requests-per-10-s burst limit, the daily
quota, the ``X-RateLimit-*`` headers, and the backoff used for retries.

Why a scheduler and not just "retry on 429": HighLevel counts per app per resource (location or
company), a 429 costs a round trip and, near the daily quota, hours. So the client spaces its own
requests and should never see a 429 while it alone drives a location.

How the window is kept without ever overshooting: each request takes a slot before it is sent and
gives it back when its response has arrived; the slot is then timestamped with the *completion*
time. The server counted the request at some moment before we saw its answer, so "no more than
``max`` completions-or-in-flight in any ``window``" measured with completion times is at least as
strict as the server's own count (sliding or fixed window), whatever the network latency.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ghl_desktop.core.backoff import backoff_delay
from ghl_desktop.core.errors import GhlRateLimited
from ghl_desktop.core.slots import outside_slot

log = logging.getLogger("ghl.api.rate")

#: documented defaults (docs/highlevel-api.md §6): per app per location/company
DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_MAX_PER_WINDOW = 100
DEFAULT_DAILY_LIMIT = 200_000

#: when the current task's request took its place in the window (set inside LocationLimiter.slot)
_STARTED: ContextVar[float | None] = ContextVar("ghl_rate_started", default=None)


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Limits and retry timings. Defaults are HighLevel's real ones; tests shrink them."""

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    max_per_window: int = DEFAULT_MAX_PER_WINDOW
    daily_limit: int = DEFAULT_DAILY_LIMIT
    #: follow X-RateLimit-Max / X-RateLimit-Interval-Milliseconds when the server sends them
    adapt_to_headers: bool = True
    #: retries of 5xx / timeouts / connection errors, after the first attempt
    max_retries: int = 5
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    #: how many 429 answers one call tolerates (each one waits the server's interval) before giving up
    max_rate_limited_retries: int = 5
    #: a 429 without a usable interval header waits this long (the window, by default)
    default_429_wait_seconds: float | None = None


class RetryPolicy:
    """Capped exponential backoff with full jitter: attempt n waits uniform(0.1·c, c), c = min(cap, base*2**n)."""

    def __init__(self, config: RateLimitConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        # the product's backoff (core.backoff); never zero: a zero wait turns a flapping server into a tight loop
        return backoff_delay(attempt, self.config.backoff_base_seconds, self.config.backoff_cap_seconds,
                             min_fraction=0.1, rng=self._rng)


@dataclass(frozen=True, slots=True)
class RateHeaders:
    """The ``X-RateLimit-*`` headers of one response (any may be missing)."""

    max: int | None = None
    remaining: int | None = None
    interval_seconds: float | None = None
    daily_limit: int | None = None
    daily_remaining: int | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateHeaders:
        def num(name: str) -> int | None:
            raw = headers.get(name)
            if raw is None:
                return None
            try:
                return int(float(raw))
            except ValueError:
                return None

        interval_ms = num("x-ratelimit-interval-milliseconds")
        return cls(
            max=num("x-ratelimit-max"),
            remaining=num("x-ratelimit-remaining"),
            interval_seconds=interval_ms / 1000.0 if interval_ms and interval_ms > 0 else None,
            daily_limit=num("x-ratelimit-limit-daily"),
            daily_remaining=num("x-ratelimit-daily-remaining"),
        )


def _seconds_to_utc_midnight(now: datetime) -> float:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (tomorrow - now).total_seconds())


class LocationLimiter:
    """The sliding window and daily count of ONE resource (location or company)."""

    def __init__(self, key: str, config: RateLimitConfig, clock: Callable[[], float]) -> None:
        self.key = key
        self.config = config
        self._clock = clock
        self.window = config.window_seconds
        self.max = config.max_per_window
        self._done: deque[float] = deque()  # completion times inside the window
        #: completion times of the last two windows (which of our requests the server may still count)
        self._recent: deque[float] = deque()
        self._in_flight = 0
        self._paused_until = 0.0  # set by Remaining: 0 and by 429
        self._cond = asyncio.Condition()
        self._day = datetime.now(UTC).date()
        self.sent_today = 0
        self._daily_remaining: int | None = None
        self.rate_limited_responses = 0
        #: requests that had to wait for the window (the scheduler, not the server, held them back)
        self.delayed_requests = 0
        #: requests waiting for the window right now (read by bench/budget.py)
        self.waiting = 0
        #: whole-interval pauses on X-RateLimit-Remaining: 0 our own requests did not explain
        self.header_pauses = 0

    def _prune(self, now: float) -> None:
        while self._done and self._done[0] <= now - self.window:
            self._done.popleft()

    def _check_daily(self) -> None:
        now = datetime.now(UTC)
        if now.date() != self._day:
            self._day, self.sent_today, self._daily_remaining = now.date(), 0, None
        if self.sent_today >= self.config.daily_limit or self._daily_remaining == 0:
            raise GhlRateLimited(
                "daily HighLevel API quota used up for this location",
                retry_after=_seconds_to_utc_midnight(now),
                daily_exhausted=True,
            )

    def _wait_seconds(self, now: float) -> float:
        """0 when a request may start now, else how long until one might."""
        self._prune(now)
        waits = [self._paused_until - now]
        if self._in_flight + len(self._done) >= self.max:
            if self._done and self._in_flight < self.max:
                waits.append(self._done[0] + self.window - now)
            else:
                waits.append(self.window)  # everything is in flight: a completion will notify us
        return max(0.0, *waits)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a place in the window for one request, from before sending to after the answer.

        A closed window is waited for outside the job runner's slot (core/slots.py): the runner runs
        another job (another location's, with budget) meanwhile."""
        delayed = False
        while True:
            async with self._cond:
                self._check_daily()
                if self._wait_seconds(started := self._clock()) <= 0:
                    self._in_flight += 1
                    self.sent_today += 1
                    break
                if not delayed:
                    delayed = True
                    self.delayed_requests += 1
            async with outside_slot():
                await self._until_open()
        token = _STARTED.set(started)
        try:
            yield
        finally:
            _STARTED.reset(token)
            async with self._cond:
                self._in_flight -= 1
                answered = self._clock()
                self._done.append(answered)
                self._recent.append(answered)
                while self._recent and self._recent[0] <= answered - 2 * self.window:
                    self._recent.popleft()
                self._cond.notify_all()

    async def _until_open(self) -> None:
        """Wait until a request may start (not taking its place: the caller checks again)."""
        async with self._cond:
            self.waiting += 1
            try:
                while (wait := self._wait_seconds(self._clock())) > 0:
                    try:
                        await asyncio.wait_for(self._cond.wait(), timeout=wait)
                    except TimeoutError:
                        pass
            finally:
                self.waiting -= 1

    async def observe(self, headers: RateHeaders, *, status: int) -> None:
        """Adapt to what the server says about its own count."""
        async with self._cond:
            now = self._clock()
            interval = headers.interval_seconds or self.window
            if self.config.adapt_to_headers:
                if headers.interval_seconds:
                    self.window = headers.interval_seconds
                if headers.max and headers.max > 0:
                    # never above our configured ceiling; follow a lower server limit
                    self.max = min(self.config.max_per_window, headers.max)
            if headers.daily_remaining is not None:
                self._daily_remaining = headers.daily_remaining
            if status == 429:
                self.rate_limited_responses += 1
                self._paused_until = max(self._paused_until, now + self.retry_after(headers))
            elif headers.remaining == 0 and self._in_flight + self._answered_after(now) < self.max:
                # our own requests do not explain it: others (another install, a script) share this
                # budget, so wait the server's interval. When they do, the sliding window already
                # holds the next request until our oldest answer leaves the window — which is later
                # than the server's own slot frees (it counts arrivals, we count answers); a whole
                # interval from now on top would leave a quarter of the budget unused (bench/budget.py)
                self.header_pauses += 1
                self._paused_until = max(self._paused_until, now + interval)
            self._cond.notify_all()

    def _answered_after(self, now: float) -> int:
        """Our answered requests the server may still count in the window it answered this one with.

        It counted this request at some moment between when it took its place (``_STARTED``) and now,
        over the window before that moment: every request of ours answered after ``started - window``
        may be in it. Counting only the answers of the last window before *now* missed the ones that
        left ours while this answer was on its way (a busy event loop reads it late), and so paused a
        whole interval on our own traffic (bench/budget.py: windows of 100, 3, 100)."""
        started = _STARTED.get()
        since = (now if started is None else min(started, now)) - self.window
        return sum(1 for answered in self._recent if answered > since)

    def retry_after(self, headers: RateHeaders) -> float:
        if headers.interval_seconds:
            return headers.interval_seconds
        if self.config.default_429_wait_seconds is not None:
            return self.config.default_429_wait_seconds
        return self.window


class RateScheduler:
    """One limiter per resource key ("location:<id>" / "company:<id>"), shared by every caller."""

    def __init__(self, config: RateLimitConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or RateLimitConfig()
        self._clock = clock
        self._limiters: dict[str, LocationLimiter] = {}
        self.retry_policy = RetryPolicy(self.config)

    def limiter(self, key: str) -> LocationLimiter:
        found = self._limiters.get(key)
        if found is None:
            found = self._limiters[key] = LocationLimiter(key, self.config, self._clock)
        return found

    @property
    def rate_limited_responses(self) -> int:
        """429 answers seen across all resources (0 while the scheduler alone drives traffic)."""
        return sum(limiter.rate_limited_responses for limiter in self._limiters.values())


__all__ = [
    "DEFAULT_DAILY_LIMIT",
    "DEFAULT_MAX_PER_WINDOW",
    "DEFAULT_WINDOW_SECONDS",
    "LocationLimiter",
    "RateHeaders",
    "RateLimitConfig",
    "RateScheduler",
    "RetryPolicy",
]
