"""History on link survives a crash (issue 15): the headless bridge is SIGKILLed in the middle of a history
import and started again on the same data dir → every message of the history lands in the sandbox's
HighLevel exactly once (by WhatsApp id and by text), each chat in order. The history is seeded the way
the issue says: into ``<data dir>/sandbox`` before the app's first start."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghl_desktop.config import load_settings
from ghl_desktop.headless import SANDBOX_LINKED_PHONE
from ghl_desktop.sandbox_mode import running_sandbox_mode
from tests.e2e.headless_proc import HeadlessProcess

pytestmark = [pytest.mark.timeout(600)]

COUNT = 60
PHONES = ("+4915112345678", "+4915187654321", "+4915199999999")
CHILD_ENV = {
    "GHL_DESKTOP_HISTORY_DAYS": "30",
    "GHL_DESKTOP_JOB_LEASE_SECONDS": "3",  # the killed run's leased job is taken over after 3 s
    "GHL_DESKTOP_JOB_POLL_INTERVAL": "0.1",
    "GHL_DESKTOP_JOB_BACKOFF_BASE": "0.1",
    "GHL_DESKTOP_JOB_BACKOFF_CAP": "2",
    "GHL_DESKTOP_RECONNECT_BACKOFF": "0.1",
    "GHL_DESKTOP_RECONNECT_BACKOFF_MAX": "1",
    "GHL_DESKTOP_LOG_LEVEL": "WARNING",
}


def history() -> list[dict[str, Any]]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    chats: dict[str, list[dict[str, Any]]] = {p: [] for p in PHONES}
    for i in range(COUNT):
        chats[PHONES[i % 3]].append({"from_me": i % 5 == 4, "text": f"old: {i:03d}",
                                     "timestamp": (start + timedelta(minutes=i)).isoformat()})
    return [{"with": p, "messages": m} for p, m in chats.items()]


async def seed(home: Path) -> None:
    """What WhatsApp's history sync will offer at the first link, kept in the sandbox's state."""
    settings = load_settings({"GHL_DESKTOP_HOME": str(home)})
    async with running_sandbox_mode(settings) as mode, httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(f"{mode.url}/_sandbox/whatsapp/{SANDBOX_LINKED_PHONE}/history",
                                 json={"chats": history()})
        assert answer.status_code == 201, answer.text


def imported(http: httpx.Client, url: str) -> list[dict[str, Any]]:
    answer = http.get(f"{url}/_sandbox/state")
    answer.raise_for_status()
    return sorted((m for m in answer.json()["messages"] if str(m["body"]).startswith("old: ")),
                  key=lambda m: m["seq"])


def wait_for(check: Any, limit: float) -> Any:
    """A liveness bound, not a speed goal."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not reached within {limit} s")


def test_a_history_import_killed_mid_way_lands_every_message_once_after_the_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    asyncio.run(seed(home))
    runs: list[HeadlessProcess] = []
    with httpx.Client(timeout=30) as http:
        try:
            first = HeadlessProcess(home, tmp_path, env=CHILD_ENV, run=0).start()
            runs.append(first)
            url = first.wait_line("sandbox: ", 120, prefix=True).split(" ", 1)[1].strip()
            # a slow HighLevel (150 ms per answer) so that the import is still running when the kill comes
            http.post(f"{url}/_sandbox/faults", json={"latency_ms": 150}).raise_for_status()
            first.wait_line("ready", 120)
            wait_for(lambda: len(imported(http, url)) >= 5, 120)
            before = len(imported(http, url))
            first.kill()  # the sandbox runs inside the child: it goes down too, and comes back from its state
            assert before < COUNT - 5, "the import was about to finish before the kill: the test proves nothing"

            second = HeadlessProcess(home, tmp_path, env=CHILD_ENV, run=1).start()
            runs.append(second)
            assert second.wait_ready(120) == url
            got = wait_for(lambda: (lambda m: m if len(m) >= COUNT else None)(imported(http, url)), 180)
            bodies = [m["body"] for m in got]
            assert sorted(bodies) == [f"old: {i:03d}" for i in range(COUNT)]  # each once, none lost
            alt_ids = [m["altId"] for m in got]
            assert len(set(alt_ids)) == COUNT
            by_contact: dict[str, list[str]] = {}
            for m in got:
                by_contact.setdefault(m["contactId"], []).append(m["body"])
            assert len(by_contact) == 3
            for texts in by_contact.values():
                assert texts == sorted(texts)  # each chat reached HighLevel in its own order
            assert second.terminate() == 0
        finally:
            for proc in runs:
                proc.stop_quietly()
