"""Capped, jittered exponential backoff.

Why jitter: fifty numbers dropped by the same network blip must not all redial in the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """``initial * multiplier**n``, capped at ``maximum``, each delay scaled by a random factor in
    ``[1 - jitter, 1 + jitter]`` (and capped again)."""

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
        base = min(self.maximum, self.initial * self.multiplier**self.attempts)
        self.attempts += 1
        factor = 1.0 + self.rng.uniform(-self.jitter, self.jitter)
        return min(self.maximum, base * factor)

    def reset(self) -> None:
        self.attempts = 0
