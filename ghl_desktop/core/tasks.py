"""Background tasks kept, logged and closed in one way.

Why one helper: asyncio keeps only a weak reference to a task, so a task nobody holds can vanish
mid-run, and a failure nobody retrieves surfaces (if at all) as "Task exception was never retrieved"
at garbage collection. Every owner of background work (the app, the sessions service, the event bus,
the sandbox) holds its tasks in a :class:`BackgroundTasks`: a reference is kept until the task ends,
a failure is logged with its traceback when it happens, and the owner cancels and awaits the rest
when it closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any


class BackgroundTasks:
    """A set of running tasks. ``spawn`` starts one; ``cancel_all`` / ``wait`` end them."""

    def __init__(self, log: logging.Logger, what: str = "background task",
                 on_error: Callable[[asyncio.Task[Any], BaseException], None] | None = None) -> None:
        self._log = log
        self._what = what
        self._on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` in the background on the running loop, keeping it until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here: never "Task exception was never retrieved"
        if exc is None:
            return
        self._log.error("%s %s failed", self._what, task.get_name(), exc_info=exc)
        if self._on_error is not None:
            try:
                self._on_error(task, exc)
            except Exception:
                self._log.exception("the failure handler of %s %s failed", self._what, task.get_name())

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(set(self._tasks))

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def snapshot(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    async def wait(self, within: float | None = None) -> set[asyncio.Task[Any]]:
        """Wait for the tasks running now to end, at most ``within`` seconds; returns those still running."""
        if not self._tasks:
            return set()
        _done, pending = await asyncio.wait(set(self._tasks), timeout=within)
        return set(pending)

    async def drain(self) -> None:
        """Wait until no task is left, including ones started meanwhile."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> list[tuple[asyncio.Task[Any], BaseException]]:
        """Cancel every task and await them; returns the ones that ended with an error meanwhile."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return [(task, result) for task, result in zip(tasks, results, strict=True)
                if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError)]


__all__ = ["BackgroundTasks"]
