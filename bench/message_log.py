"""The message log at scale: time to open it and scroll to the end, and the Python memory it holds.

For each size (default 1,000 and 1,000,000 stored messages, generated into a real SQLite file by
tests/fixtures/message_log.py), the real MessageLogPanel is opened offscreen on the qasync loop:

  first_s     panel built → its newest rows painted at the view's full length (an index count and
              bounded index scans of both ends, before all ids are in)
  open_s      panel built → scrolled to the last row (as soon as the first rows are painted), selected
              and painted with its content, not the placeholder (log_open_s)
  ids_s       panel built → every id loaded (on a worker thread), filled in and painted
  filter_s    search "Maria" (contact name, in SQL) → ids applied
  sort_s      sort by contact (in SQL) → ids applied
  mem_mb      Python memory held after open + scroll (tracemalloc, every thread)

prints a table and appends one JSON line to bench/results/message_log.jsonl with log_open_s (open and
scroll to the end at the largest size) and log_mem_delta_mb (its memory minus the smallest size's), the commit,
the CPU count and the load average (bench/_common.record).

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/message_log.py [--sizes 1000 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication  # noqa: E402

from bench._common import RESULTS as RESULTS_DIR  # noqa: E402
from bench._common import record  # noqa: E402
from ghl_desktop.adapters.storage import open_database  # noqa: E402
from ghl_desktop.core.events import EventBus  # noqa: E402
from ghl_desktop.core.message_log import LogColumn, LogSort  # noqa: E402
from ghl_desktop.services.message_log import MessageLogService  # noqa: E402
from ghl_desktop.ui.bridge import ServiceBridge  # noqa: E402
from ghl_desktop.ui.message_log_models import LOADING_CELL  # noqa: E402
from ghl_desktop.ui.panels.message_log import MessageLogPanel  # noqa: E402
from ghl_desktop.ui.qloop import QEventLoop  # noqa: E402
from tests.fixtures.message_log import bulk_messages, seed_directory  # noqa: E402

RESULTS = RESULTS_DIR / "message_log.jsonl"
MB = 1024 * 1024


def _paint(app: QApplication) -> None:
    for _ in range(3):
        app.processEvents()


def _open(app: QApplication, loop: asyncio.AbstractEventLoop, service: MessageLogService, bridge: ServiceBridge,
          count: int) -> tuple[MessageLogPanel, float, float, float]:
    """(panel, seconds to the first rows painted at the view's full length, seconds to the last row
    painted after scrolling to the end as soon as the first rows were there, seconds until every id
    is in). The scroll does not wait for the whole id list: the log shows its length and both ends first."""
    start = time.perf_counter()
    panel = MessageLogPanel(service, bridge)
    panel.resize(1280, 720)
    panel.show()
    _paint(app)
    # the reads run on the storage executor (off the loop): the loop runs until the first rows are in
    loop.run_until_complete(_until(lambda: panel.model.rowCount() == count and _shown(panel, 0)))
    _paint(app)
    first_s = time.perf_counter() - start
    panel.view.scrollToBottom()
    panel.view.selectRow(count - 1)
    _paint(app)  # the last page came with the first (else: a placeholder until it is read)
    loop.run_until_complete(_until(lambda: _shown(panel, count - 1)))
    _paint(app)
    scrolled_s = time.perf_counter() - start
    loop.run_until_complete(panel.wait_idle())
    _paint(app)
    assert panel.model.rowCount() == count and panel.model.id_at(count // 2) > 0
    return panel, first_s, scrolled_s, time.perf_counter() - start


def _shown(panel: MessageLogPanel, row: int) -> bool:
    """The row's content is painted (not the placeholder of a page not read yet)."""
    value = panel.model.index(row, 0).data()
    return bool(value) and value != LOADING_CELL


async def _until(ready: Callable[[], bool], limit: float = 300) -> None:
    deadline = time.perf_counter() + limit
    while not ready():
        if time.perf_counter() > deadline:
            raise TimeoutError("the message log did not show the rows")
        await asyncio.sleep(0.001)


def _close(panel: MessageLogPanel) -> None:
    panel.close()
    panel.deleteLater()
    QApplication.processEvents()


def measure(app: QApplication, loop: asyncio.AbstractEventLoop, path: Path, count: int) -> dict[str, float]:
    """Timings first (tracemalloc slows every Python allocation ~10x, so it is off), then the memory
    of a second, fresh panel opened and scrolled under tracemalloc."""
    db = open_database(f"sqlite:///{path}")
    try:
        seed_directory(db)
        start = time.perf_counter()
        bulk_messages(db, count)
        insert_s = time.perf_counter() - start
        bus = EventBus()
        bridge = ServiceBridge(bus)
        service = MessageLogService(db.message_log, run=db.aio.run, bus=bus)  # as MessageLogService.for_app

        panel, first_s, open_s, ids_s = _open(app, loop, service, bridge, count)
        start = time.perf_counter()
        panel.search.setText("Maria")
        panel.apply_filters()
        loop.run_until_complete(panel.wait_idle())
        _paint(app)
        filter_s = time.perf_counter() - start
        start = time.perf_counter()
        panel.model.set_sort(LogSort(LogColumn.CONTACT, descending=False))
        loop.run_until_complete(panel.wait_idle())
        _paint(app)
        sort_s = time.perf_counter() - start
        _close(panel)

        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        panel, _, _, _ = _open(app, loop, service, bridge, count)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        _close(panel)
        bridge.detach()
        return {"insert_s": insert_s, "first_s": first_s, "open_s": open_s, "ids_s": ids_s, "filter_s": filter_s,
                "sort_s": sort_s, "mem_mb": held / MB}
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    app = QApplication.instance() or QApplication([])
    loop = QEventLoop(app)
    asyncio.set_event_loop(loop)
    results: dict[int, dict[str, float]] = {}
    print(f"{'messages':>10}{'insert s':>10}{'first s':>9}{'open s':>9}{'ids s':>10}{'filter s':>10}"
          f"{'sort s':>9}{'mem MB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        measure(app, loop, Path(tmp) / "warm-up.db", 10)  # imports, fonts, the style: not the log's cost
        for size in sorted(args.sizes):
            r = measure(app, loop, Path(tmp) / f"log-{size}.db", size)  # type: ignore[arg-type]
            results[size] = r
            print(f"{size:>10,}{r['insert_s']:>10.2f}{r['first_s']:>9.3f}{r['open_s']:>9.3f}{r['ids_s']:>10.3f}"
                  f"{r['filter_s']:>10.3f}{r['sort_s']:>9.3f}{r['mem_mb']:>9.1f}")
    loop.close()
    small, big = min(results), max(results)
    figures = {
        "messages": big, "baseline_messages": small,
        "log_open_s": round(results[big]["open_s"], 3),
        "log_all_ids_s": round(results[big]["ids_s"], 3),
        "log_mem_delta_mb": round(results[big]["mem_mb"] - results[small]["mem_mb"], 1),
        "log_first_rows_s": round(results[big]["first_s"], 3),
        "filter_s": round(results[big]["filter_s"], 3), "sort_s": round(results[big]["sort_s"], 3),
    }
    print(f"log_open_s={figures['log_open_s']} (open and scroll to the end at {big:,}; every id in after "
          f"{figures['log_all_ids_s']} s), "
          f"log_mem_delta_mb={figures['log_mem_delta_mb']} (vs {small:,})")
    record("message_log", figures, quick=big < 1_000_000, enabled=not args.no_record)
    if not args.no_record:
        print(f"appended to {RESULTS.relative_to(ROOT) if RESULTS.is_relative_to(ROOT) else RESULTS}")


if __name__ == "__main__":
    main()
