"""A million stored messages open and scroll to the end with Python memory (tracemalloc, every thread)
under 100 MB more than a thousand: the log keeps ids, not rows. The time it takes is a bench figure
(bench/message_log.py), not asserted here."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from ghl_desktop.adapters.storage import open_database
from ghl_desktop.core.events import EventBus
from ghl_desktop.services.message_log import MessageLogService
from ghl_desktop.ui.bridge import ServiceBridge
from ghl_desktop.ui.message_log_models import CACHE_ROWS, LOADING_CELL
from ghl_desktop.ui.panels.message_log import MessageLogPanel
from tests.fixtures.message_log import bulk_messages, seed_directory

MB = 1024 * 1024


def open_and_scroll(qtbot: Any, loop: asyncio.AbstractEventLoop, path: Path, count: int) -> tuple[int, int]:
    """(Python bytes held after opening the log and scrolling to its end, peak bytes on the way)."""
    db = open_database(f"sqlite:///{path}")
    try:
        seed_directory(db)
        bulk_messages(db, count)
        bus = EventBus()
        bridge = ServiceBridge(bus)
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        panel = MessageLogPanel(MessageLogService(db.message_log, run=db.aio.run, bus=bus), bridge)
        qtbot.addWidget(panel)
        panel.resize(1200, 700)
        panel.show()
        qtbot.waitExposed(panel)
        loop.run_until_complete(asyncio.wait_for(panel.wait_idle(), 120))
        assert panel.model.rowCount() == count
        panel.view.scrollToBottom()
        panel.view.selectRow(count - 1)
        for _ in range(3):
            QApplication.processEvents()
        loop.run_until_complete(asyncio.wait_for(panel.wait_idle(), 120))  # the last page, read off the loop
        last = panel.model.index(count - 1, 0).data()
        assert last and last != LOADING_CELL and panel.model.cached_rows() <= CACHE_ROWS
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        panel.close()
        bridge.detach()
        return held - base, peak - base
    finally:
        db.close()


@pytest.mark.slow
def test_a_million_rows_cost_under_100_mb_more_than_a_thousand(qtbot: Any, qloop: asyncio.AbstractEventLoop,
                                                               tmp_path: Path) -> None:
    small_held, small_peak = open_and_scroll(qtbot, qloop, tmp_path / "small.db", 1_000)
    big_held, big_peak = open_and_scroll(qtbot, qloop, tmp_path / "big.db", 1_000_000)
    print(f"held {small_held / MB:.1f} vs {big_held / MB:.1f} MB, peak {small_peak / MB:.1f} vs {big_peak / MB:.1f} MB")
    assert big_held - small_held < 100 * MB
    assert big_peak - small_peak < 100 * MB
    # and it can fail: the ids alone are 8 MB, so the million really was loaded
    assert big_held - small_held > 7 * MB
