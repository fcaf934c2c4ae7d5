"""The blocked-loop detector (ghl_desktop.core.loop_watch): it catches a call that blocks the loop
thread and names it, and stays quiet while the loop only awaits."""

from __future__ import annotations

import asyncio
import time

import pytest

from ghl_desktop.core import loop_watch
from ghl_desktop.core.loop_watch import LoopWatch, threshold_from_env


def _blocks_the_loop() -> None:
    time.sleep(0.05)  # a blocking call on the loop thread: 50 ms, the threshold is 20


async def _scenario(block: bool) -> list[loop_watch.Block]:
    watch = LoopWatch(asyncio.get_running_loop(), 0.02).start()
    try:
        await asyncio.sleep(0.05)  # the watch is pinging a free loop
        if block:
            _blocks_the_loop()
        else:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # the loop answers again: the stall is closed and measured
    finally:
        blocks = watch.stop()
    assert watch.pings > 0
    return blocks


def test_a_blocking_call_on_the_loop_is_caught_with_its_stack() -> None:
    blocks = asyncio.run(_scenario(block=True))
    assert len(blocks) == 1
    (block,) = blocks
    assert block.duration > 0.02 and block.stalled > 0.02
    assert block.matches("test_loop_watch.py") and block.matches("in _blocks_the_loop")
    assert block.stack[-1].name == "_blocks_the_loop" and "time.sleep(0.05)" in block.stack[-1].line
    text = block.describe()
    assert text.startswith("event loop blocked for ") and "_blocks_the_loop" in text and "time.sleep(0.05)" in text


def test_a_preempted_gil_holder_is_the_machines_fault_a_sleep_a_lock_or_cpu_work_are_not() -> None:
    net = loop_watch.net_stall
    # the loop thread slept 40 of the 50 ms after the threshold; nobody else waited for a CPU: a sleep,
    # a lock, the disk — all of it counts
    assert net(0.07, 0.0, window=0.05, own_cpu=0.01, others_queue_wait=0.0) == pytest.approx(0.07)
    # the same sleep while another thread of ours (the GIL holder) sat 40 ms in the run queue
    assert net(0.07, 0.0, window=0.05, own_cpu=0.01, others_queue_wait=0.04) == pytest.approx(0.03)
    # credited at most for the time the loop thread slept: its own CPU work is never excused
    assert net(0.07, 0.0, window=0.05, own_cpu=0.05, others_queue_wait=0.2) == pytest.approx(0.07)
    assert net(0.07, 0.0, window=0.05, own_cpu=0.01, others_queue_wait=0.2) == pytest.approx(0.03)
    # and, as before, the loop thread's own waits for a CPU
    assert net(0.07, 0.03, window=0.05, own_wait_in_window=0.03, others_queue_wait=0.0) == pytest.approx(0.04)


def test_awaiting_does_not_fire() -> None:
    assert asyncio.run(_scenario(block=False)) == []


def test_the_handler_gets_each_stall_and_pause_excludes_one() -> None:
    seen: list[loop_watch.Block] = []

    async def main() -> list[loop_watch.Block]:
        watch = LoopWatch(asyncio.get_running_loop(), 0.02, on_block=seen.append).start()
        try:
            await asyncio.sleep(0.05)
            with watch.pause():
                time.sleep(0.05)  # noqa: ASYNC251  # blocking on purpose, excluded
            await asyncio.sleep(0.05)
            assert watch.blocks == []
            _blocks_the_loop()
            await asyncio.sleep(0.05)
        finally:
            blocks = watch.stop()
        return blocks

    blocks = asyncio.run(main())
    assert [b.stack[-1].name for b in blocks] == ["_blocks_the_loop"] and seen == blocks


def test_a_loop_that_is_not_running_is_not_blocked() -> None:
    loop = asyncio.new_event_loop()
    try:
        with LoopWatch(loop, 0.02) as watch:
            time.sleep(0.08)  # the loop is idle between runs, not stalled
        assert watch.pings == 0 and watch.blocks == []
    finally:
        loop.close()


@pytest.mark.parametrize(("raw", "expected"), [("20", 0.02), ("", None), ("0", None), ("x", None), ("7.5", 0.0075)])
def test_the_debug_mode_reads_milliseconds(raw: str, expected: float | None) -> None:
    assert threshold_from_env({loop_watch.ENV: raw}) == expected
    assert threshold_from_env({}) is None


def test_the_app_debug_mode_logs_the_stall(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        watch = loop_watch.watch_from_env(environ={loop_watch.ENV: "20"})
        assert watch is not None
        try:
            await asyncio.sleep(0.03)
            _blocks_the_loop()
            await asyncio.sleep(0.05)
        finally:
            watch.stop()

    with caplog.at_level("WARNING", logger="ghl.loop"):
        asyncio.run(main())
    assert any("event loop blocked for" in r.getMessage() and "_blocks_the_loop" in r.getMessage()
               for r in caplog.records)
    assert loop_watch.watch_from_env(environ={}) is None
