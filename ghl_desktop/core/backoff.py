"""The product's one backoff function: capped exponential growth with full jitter.

Why full jitter (a uniform draw between a floor and the capped step, AWS's "full jitter"): many
clients failing together (fifty numbers dropped by one network blip, every job hitting one HighLevel
outage) spread their retries over the whole window instead of hitting the server again in step.
``min_fraction`` keeps a floor under the draw where a near-zero wait would turn a flapping server
into a tight loop (0 = pure full jitter; 0.5 = "equal jitter"; 1 = no jitter).
"""

from __future__ import annotations

import random

_MAX_EXPONENT = 64  # 2**64 × any base is past every cap: no float overflow for huge attempt counts


def backoff_ceiling(attempt: int, base: float, cap: float, multiplier: float = 2.0) -> float:
    """The capped step before jitter: ``min(cap, base * multiplier**attempt)``, attempt from 0."""
    if base <= 0 or cap <= 0 or multiplier < 1:
        raise ValueError("backoff needs base > 0, cap > 0 and multiplier >= 1")
    return float(min(cap, base * multiplier ** min(max(0, attempt), _MAX_EXPONENT)))


def backoff_delay(attempt: int, base: float, cap: float, *, multiplier: float = 2.0, min_fraction: float = 0.0,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0 = the first retry): uniform between
    ``min_fraction × ceiling`` and ``ceiling`` (see :func:`backoff_ceiling`)."""
    if not 0.0 <= min_fraction <= 1.0:
        raise ValueError("min_fraction must be within 0..1")
    ceiling = backoff_ceiling(attempt, base, cap, multiplier)
    return (rng or random).uniform(min_fraction * ceiling, ceiling)


__all__ = ["backoff_ceiling", "backoff_delay"]
