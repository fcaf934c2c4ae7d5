"""Guards against a Qt binding that corrupts the refcounts of None/True/False.

PySide6 6.12.0 drops one reference to None (or True/False) on every Python slot, timer callback or
virtual override call. On Python 3.11 those singletons are not immortal, so a long-running app
aborts with "deallocating None" after a few thousand event-loop callbacks — every qasync callback
goes through such a path. pyproject.toml excludes that version; these checks catch a regression."""

from __future__ import annotations

import asyncio
import sys

import pytest
from PySide6.QtCore import QCoreApplication, QObject, Qt, QTimer, Signal

CALLS = 1500


def _refs() -> tuple[int, int, int]:
    return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)


def _lost(before: tuple[int, int, int], after: tuple[int, int, int]) -> int:
    return max(b - a for b, a in zip(before, after, strict=True))


class _Pinger(QObject):
    ping = Signal()


def test_python_slots_do_not_leak_singleton_references(qapp: QCoreApplication) -> None:
    pinger = _Pinger()
    count = [0]

    def slot() -> None:
        count[0] += 1

    pinger.ping.connect(slot, Qt.ConnectionType.DirectConnection)
    before = _refs()
    for _ in range(CALLS):
        pinger.ping.emit()
    after = _refs()
    assert count[0] == CALLS
    assert _lost(before, after) < CALLS // 10, (before, after)


def test_timer_callbacks_do_not_leak_singleton_references(qapp: QCoreApplication) -> None:
    fired = [0]

    def tick() -> None:
        fired[0] += 1

    before = _refs()
    for _ in range(CALLS):
        QTimer.singleShot(0, tick)
    deadline = 0
    while fired[0] < CALLS and deadline < 10_000:
        QCoreApplication.processEvents()
        deadline += 1
    after = _refs()
    assert fired[0] == CALLS
    assert _lost(before, after) < CALLS // 10, (before, after)


@pytest.mark.asyncio
async def test_the_qasync_loop_does_not_leak_singleton_references() -> None:
    before = _refs()
    for _ in range(CALLS):
        await asyncio.sleep(0)
    after = _refs()
    assert _lost(before, after) < CALLS // 10, (before, after)
