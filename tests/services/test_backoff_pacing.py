"""Backoff arithmetic and pacing order (the timing behaviour itself is shown on the simulated network
in test_sessions.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from ghl_desktop.services.backoff import Backoff
from ghl_desktop.services.pacing import PacedSender


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(initial=1.0, maximum=10.0, multiplier=2.0, jitter=0.0)
    assert [b.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.attempts == 6
    b.reset()
    assert b.next_delay() == 1.0


def test_backoff_jitter_stays_within_its_band_and_under_the_cap() -> None:
    b = Backoff(initial=1.0, maximum=5.0, multiplier=2.0, jitter=0.25, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(200)]
    assert 0.75 <= delays[0] <= 1.25
    assert all(d <= 5.0 for d in delays)
    assert len({round(d, 6) for d in delays[10:]}) > 10  # actually spread, not one value


@pytest.mark.parametrize("kwargs", [{"initial": 0}, {"initial": 5, "maximum": 1}, {"jitter": 1.0},
                                    {"multiplier": 0.5}])
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_paced_sends_run_one_at_a_time_in_call_order() -> None:
    pacer = PacedSender(min_gap=0.01, jitter=0.0)
    running = 0
    order: list[int] = []

    async def send(i: int) -> int:
        nonlocal running
        running += 1
        assert running == 1
        await asyncio.sleep(0)
        order.append(i)
        running -= 1
        return i

    results = await asyncio.gather(*(pacer.run(lambda i=i: send(i)) for i in range(8)))  # type: ignore[misc]
    assert results == order == list(range(8))


def test_pacer_rejects_negative_gaps() -> None:
    with pytest.raises(ValueError):
        PacedSender(min_gap=-1)
