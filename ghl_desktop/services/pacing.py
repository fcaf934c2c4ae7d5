"""Per-number send pacing: a minimum gap plus random jitter between two messages.

Why: WhatsApp's spam filters flag numbers that fire messages back to back. Every message a session
sends goes through its :class:`PacedSender` (``SessionService.send*`` is the only send path; there
is deliberately no "take a slot, then send yourself" call, which let sends overlap and measured the
gap from the previous send's start), so a burst (a campaign, a backlog after a reconnect)
leaves at a human-ish pace. The gap is measured from the END of the previous send (when WhatsApp
accepted it) to the start of the next, so the server sees at least ``min_gap`` between them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class PacedSender:
    def __init__(self, min_gap: float, jitter: float = 0.0, *, rng: random.Random | None = None) -> None:
        if min_gap < 0 or jitter < 0:
            raise ValueError("min_gap and jitter must be >= 0")
        self.min_gap = min_gap
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._lock = asyncio.Lock()
        self._last_done: float | None = None

    async def _wait_turn(self) -> None:
        if self._last_done is None:
            return
        gap = self.min_gap + (self._rng.uniform(0, self.jitter) if self.jitter else 0.0)
        loop = asyncio.get_running_loop()
        due = self._last_done + gap
        await asyncio.sleep(max(0.0, due - loop.time()))
        # Qt's coarse timers (qasync) may fire a few percent early: sleep off the remainder
        if (rest := due - loop.time()) > 0:
            await asyncio.sleep(rest + 0.001)

    async def run(self, send: Callable[[], Awaitable[T]]) -> T:
        """Wait for this number's turn, then send. Sends run one at a time, in call order."""
        async with self._lock:
            await self._wait_turn()
            try:
                return await send()
            finally:
                self._last_done = asyncio.get_running_loop().time()
