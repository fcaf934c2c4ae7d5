"""Waiting without holding a job runner's slot (issue 12, ``budget_use``).

The job runner (services/jobs.py) runs at most ``concurrency`` jobs at once, for every location
together. A job whose location's HighLevel rate window is closed can only wait for time to pass; if it
kept its slot meanwhile, a few such jobs filled every slot and the other locations' jobs, with budget
to spare, could not start (bench/budget.py: a third of the budget unused). So the rate scheduler
(adapters/ghl/rate.py) waits for a closed window inside :func:`outside_slot`: under a runner the job
lends its slot out for the wait (the runner leases another job into it) and takes a slot back, before
any newly leased job, once the wait is over. The job keeps its lease and its place in its chat's order
all the while. Outside a runner (a direct call, a test) it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from contextvars import ContextVar

#: set per job task by the runner: returns a context manager that lends the job's slot while it is open
SLOT_LENDER: ContextVar[Callable[[], AbstractAsyncContextManager[None]] | None] = ContextVar(
    "ghl_slot_lender", default=None)


def outside_slot() -> AbstractAsyncContextManager[None]:
    """``async with outside_slot(): await <a wait only time ends>`` — the runner's slot is free meanwhile."""
    lend = SLOT_LENDER.get()
    return lend() if lend is not None else nullcontext()
