"""Capped, jittered exponential backoff with a retry count (the reconnect timer of a number).

Why jitter: fifty numbers dropped by the same network blip must not all redial in the same second.
The arithmetic is the product's one backoff function, :func:`ghl_desktop.core.backoff.backoff_delay`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ghl_desktop.core.backoff import backoff_delay


@dataclass
class Backoff:
    """``initial * multiplier**n``, capped at ``maximum``, each delay drawn from
    ``[(1 - jitter) × step, step]`` (full jitter with a floor; jitter 0 = the exact step)."""

    initial: float = 2.0
    maximum: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("backoff needs 0 < initial <= maximum, multiplier >= 1, 0 <= jitter < 1")

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempts, self.initial, self.maximum, multiplier=self.multiplier,
                              min_fraction=1.0 - self.jitter, rng=self.rng)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
