"""The one backoff function (issue 11 item 13)."""

from __future__ import annotations

import random

import pytest

from ghl_desktop.core.backoff import backoff_ceiling, backoff_delay
from ghl_desktop.services.backoff import Backoff


def test_the_step_doubles_up_to_the_cap_without_overflow() -> None:
    assert [backoff_ceiling(n, 1.0, 10.0) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_ceiling(10**9, 0.5, 60.0) == 60.0
    assert backoff_ceiling(3, 1.0, 100.0, multiplier=3.0) == 27.0


def test_full_jitter_spreads_over_the_whole_step() -> None:
    rng = random.Random(11)
    sample = [backoff_delay(4, 1.0, 100.0, rng=rng) for _ in range(2000)]  # step 16
    assert all(0.0 <= d <= 16.0 for d in sample)
    assert min(sample) < 1.0 and max(sample) > 15.0  # the whole [0, 16], not [8, 16] (equal jitter)
    floor = [backoff_delay(4, 1.0, 100.0, min_fraction=0.5, rng=rng) for _ in range(200)]
    assert all(8.0 <= d <= 16.0 for d in floor)
    assert backoff_delay(4, 1.0, 100.0, min_fraction=1.0) == 16.0


@pytest.mark.parametrize("kwargs", [{"base": 0.0}, {"cap": 0.0}, {"multiplier": 0.5}, {"min_fraction": 1.5}])
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    args = {"base": 1.0, "cap": 10.0, **kwargs}
    with pytest.raises(ValueError):
        backoff_delay(1, args.pop("base"), args.pop("cap"), **args)  # type: ignore[arg-type]


def test_the_reconnect_timer_uses_it() -> None:
    b = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.5, rng=random.Random(3))
    delays = [b.next_delay() for _ in range(6)]
    steps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert all(0.5 * s <= d <= s for d, s in zip(delays, steps, strict=True))
