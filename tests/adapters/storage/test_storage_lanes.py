"""The storage executor's two lanes (core.storage_lane): a waiting call of the loop's own (the WhatsApp
intake, the window) runs before the job runner's waiting calls; each call still runs whole and alone."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ghl_desktop.adapters.storage.offloop import StorageExecutor
from ghl_desktop.core.storage_lane import BACKGROUND


async def _in_lane(ex: StorageExecutor, background: bool, fn: object, *args: object) -> object:
    BACKGROUND.set(background)  # this task's own context
    return await ex.run(fn, *args)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_loops_calls_go_before_the_runners_waiting_ones() -> None:
    ex = StorageExecutor("sqlite")
    try:
        gate = threading.Event()
        order: list[str] = []
        loop = asyncio.get_running_loop()
        busy = loop.create_task(_in_lane(ex, True, gate.wait, 10))  # the one writer is busy
        await asyncio.sleep(0.05)
        later = [loop.create_task(_in_lane(ex, True, order.append, f"runner-{i}")) for i in range(3)]
        await asyncio.sleep(0.02)
        now = [loop.create_task(_in_lane(ex, False, order.append, f"intake-{i}")) for i in range(2)]
        await asyncio.sleep(0.02)
        gate.set()
        await asyncio.gather(busy, *later, *now)
        assert order == ["intake-0", "intake-1", "runner-0", "runner-1", "runner-2"]
        assert ex.call(lambda: "sync callers are served too") == "sync callers are served too"
    finally:
        ex.shutdown()


@pytest.mark.asyncio
async def test_a_cancelled_waiting_call_never_runs_and_errors_come_back() -> None:
    ex = StorageExecutor("sqlite")
    try:
        gate = threading.Event()
        ran: list[str] = []
        loop = asyncio.get_running_loop()
        busy = loop.create_task(_in_lane(ex, False, gate.wait, 10))
        await asyncio.sleep(0.05)
        doomed = loop.create_task(_in_lane(ex, False, ran.append, "doomed"))
        await asyncio.sleep(0.02)
        doomed.cancel()
        # the cancel reaches the executor's future through loop callbacks (already due: they run before
        # the sleep's timer); only then may the worker be freed
        await asyncio.sleep(0.05)
        gate.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await doomed

        def boom() -> None:
            raise ValueError("from the storage thread")

        with pytest.raises(ValueError, match="storage thread"):
            await ex.run(boom)
        assert await ex.run(lambda: "still serving") == "still serving"
        assert ran == []
    finally:
        ex.shutdown()
