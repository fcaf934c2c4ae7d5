"""Every async end-to-end test runs under the blocked-loop detector (tests/fixtures/loop_watch.py):
a stall of the event loop longer than 20 ms fails it, with the stack that held the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

# Imported at collection, not inside the first test's loop: a module's first import (reading and
# compiling it) is a one-time cost of the process that would land on whichever test runs first.
# httpx imports httpcore only when it builds its first transport; the harness starts the simulated
# WhatsApp network lazily.
import httpcore  # noqa: F401
import pytest

import ghl_desktop.sandbox.whatsapp  # noqa: F401
from ghl_desktop.sandbox.validation import SpecValidator
from tests.conftest import _qasync_loop

HERE = Path(__file__).resolve().parent


#: Tolerated for every e2e test: a stall where, in every sample the watchdog took, the loop thread was
#: inside ``QApplication.exec()`` with no Python frame above it. No code of ours (nor of a library we
#: call) ran on the loop then; it is Qt's own dispatch, seen only as 150-250 ms on a 2-core machine at
#: a load of 9 (the thread waiting for a CPU). Any stall with one of our frames in it still fails.
QT_OWN_WORK = ("innermost:qasync/__init__.py", "Qt's own event dispatch, no Python frame above exec()")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents and item.get_closest_marker("loop_watch") is None:
            item.add_marker(pytest.mark.loop_watch(allow=[QT_OWN_WORK]))


@pytest.fixture(scope="session", autouse=True)
def _warm_up() -> Iterator[None]:
    """One-time costs of the process, paid here before any test's loop is watched: the sandbox's OpenAPI
    validator (four specs parsed once per process: SpecValidator.shared), and a first run of the Qt
    event loop the async tests share (its first exec() sets up Qt's dispatcher; seen at 380 ms, in C++,
    inside whichever test ran first)."""
    SpecValidator.shared()
    loop = _qasync_loop()
    try:
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()
    yield
