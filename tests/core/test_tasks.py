"""The one background-task helper (issue 11 item 13): kept referenced, failures logged when they
happen (never "Task exception was never retrieved"), cancelled and awaited together."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import pytest

from ghl_desktop.core.events import EventBus
from ghl_desktop.core.tasks import BackgroundTasks

log = logging.getLogger("test.tasks")


@pytest.mark.asyncio
async def test_a_failure_is_logged_once_with_its_traceback_and_never_left_unretrieved(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    failures: list[BaseException] = []
    try:
        tasks = BackgroundTasks(log, "test job", on_error=lambda _task, exc: failures.append(exc))

        async def boom() -> None:
            raise RuntimeError("boom")

        task = tasks.spawn(boom(), name="exploder")
        del task
        await tasks.drain()
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert not unhandled
    assert [str(f) for f in failures] == ["boom"]
    [record] = [r for r in caplog.records if r.name == "test.tasks"]
    assert record.levelno == logging.ERROR and "test job exploder failed" in record.getMessage()
    assert record.exc_info is not None and len(tasks) == 0


@pytest.mark.asyncio
async def test_tasks_are_kept_until_they_end_and_cancel_all_awaits_them() -> None:
    tasks = BackgroundTasks(log)
    cleaned = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    tasks.spawn(forever(), name="forever")  # no reference kept by the caller
    gc.collect()
    await asyncio.sleep(0)
    assert len(tasks) == 1 and [t.get_name() for t in tasks] == ["forever"]
    assert await tasks.wait(within=0.01) == set(tasks.snapshot())  # still running
    assert await tasks.cancel_all() == []
    assert cleaned.is_set() and not tasks


@pytest.mark.asyncio
async def test_the_event_bus_keeps_and_logs_async_handlers_with_it(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[str] = []

    async def good(event: str) -> None:
        await asyncio.sleep(0)
        seen.append(event)

    async def bad(_event: str) -> None:
        raise ValueError("handler bug")

    bus.subscribe(str, good)
    bus.subscribe(str, bad)
    bus.publish("hello")
    await bus.drain()
    assert seen == ["hello"]
    assert any("async event handler" in r.getMessage() and r.exc_info for r in caplog.records
               if r.name == "ghl.events")
