"""``ghl-desktop headless --sandbox`` in a real child process: first start, messages flowing, SIGTERM
finishing the work in flight, a restart that resumes (same port, no new scan, no new OAuth) and no
secret in clear among the app's own files."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ghl_desktop.adapters.storage import open_database
from ghl_desktop.headless import SANDBOX_LINKED_PHONE
from tests.e2e.headless_proc import HeadlessProcess

pytestmark = pytest.mark.timeout(300)

CUSTOMER = "+4915112340001"
T = TypeVar("T")


def eventually(check: Callable[[], T | None], limit: float = 60.0, interval: float = 0.1) -> T:
    """Poll until ``check`` returns something truthy (a liveness bound, not a speed goal)."""
    deadline = time.monotonic() + limit
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {limit} s (last value {last!r})")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[HeadlessProcess]]:
    started: list[HeadlessProcess] = []
    yield started
    for proc in started:
        proc.stop_quietly()


def start(home: Path, runs: list[HeadlessProcess], tmp: Path) -> HeadlessProcess:
    proc = HeadlessProcess(home, tmp, run=len(runs)).start()
    runs.append(proc)
    return proc


def state(http: httpx.Client, url: str) -> dict[str, Any]:
    answer = http.get(f"{url}/_sandbox/state")
    answer.raise_for_status()
    return dict(answer.json())


def send(http: httpx.Client, url: str, text: str) -> str:
    message_id = "3EB0" + uuid.uuid4().hex[:16].upper()
    answer = http.post(f"{url}/_sandbox/phones/{CUSTOMER}/send",
                       json={"to": SANDBOX_LINKED_PHONE, "text": text, "id": message_id})
    assert answer.status_code == 201, answer.text
    return message_id


def alt_counts(http: httpx.Client, url: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in state(http, url)["messages"]:
        if message.get("altId"):
            counts[message["altId"]] = counts.get(message["altId"], 0) + 1
    return counts


def test_headless_sandbox_starts_bridges_stops_cleanly_and_resumes(home: Path, runs: list[HeadlessProcess],
                                                                   tmp_path: Path) -> None:
    first = start(home, runs, tmp_path)
    url = first.wait_ready()
    assert url.startswith("http://127.0.0.1:")
    with httpx.Client(timeout=30) as http:
        answer = http.post(f"{url}/_sandbox/phones", json={"phone": CUSTOMER, "name": "Carla"})
        assert answer.status_code == 201, answer.text
        hello = send(http, url, "hello from a simulated phone")
        eventually(lambda: alt_counts(http, url).get(hello))
        message = next(m for m in state(http, url)["messages"] if m.get("altId") == hello)
        assert message["direction"] == "inbound" and message["body"] == "hello from a simulated phone"

        # an agent's reply reaches the phone: the webhook path works in the child too
        location_id = message["locationId"]
        answer = http.post(f"{url}/_sandbox/locations/{location_id}/reply",
                           json={"contactId": message["contactId"], "message": "hi Carla"})
        assert answer.status_code == 201, answer.text
        eventually(lambda: [m for m in http.get(f"{url}/_sandbox/phones/{CUSTOMER}/inbox").json()
                            if m["text"] == "hi Carla"])

        # work in flight when SIGTERM arrives is finished, not abandoned; the rest waits, stored
        burst = [send(http, url, f"burst {i}") for i in range(15)]
        assert first.terminate() == 0
        assert any("finishing work in flight" in line for line in first.lines)
        assert any("bridge stopped" in line for line in first.lines)
        db = open_database(f"sqlite:///{home / 'ghl-desktop.db'}", migrate=False)
        try:
            assert db.jobs.count("running") == 0  # no lease left behind: each job finished or went back
            assert db.jobs.count("dead") == 0
            session_ids = [s.id for s in db.sessions.list()]
        finally:
            db.close()
        assert len(session_ids) == 1

        # restart on the same data dir: same port, no new OAuth, no new scan, and messages continue
        second = start(home, runs, tmp_path)
        assert second.wait_ready() == url
        assert not [line for line in second.lines if "waiting for the HighLevel redirect" in line
                    or "connected HighLevel location" in line or " created for location" in line]
        network = http.get(f"{url}/_sandbox/whatsapp/state").json()
        assert [n["session"] for n in network["linked_numbers"]] == session_ids
        after = send(http, url, "after the restart")

        def all_arrived() -> dict[str, int] | None:
            counts = alt_counts(http, url)
            return counts if all(counts.get(i) for i in [hello, after, *burst]) else None

        counts = eventually(all_arrived)
        assert all(counts[i] == 1 for i in [hello, after, *burst])  # each exactly once
        snapshot = state(http, url)
        installs = [d for d in snapshot["webhook_deliveries"] if d["kind"] == "INSTALL"]
        assert len(installs) == 1  # one OAuth install, ever
        assert second.terminate() == 0

    # no secret in clear in the app's own files (the sandbox's folder is the pretend HighLevel)
    sandbox_state = json.loads((home / "sandbox" / "state.json").read_text("utf-8"))
    secrets = [sandbox_state["app"]["client_secret"]] + [t["token"] for t in sandbox_state["tokens"]]
    assert len(secrets) >= 3  # the client secret, an access and a refresh token at least
    own_files = [p for p in home.rglob("*") if p.is_file() and "sandbox" not in p.relative_to(home).parts]
    assert any(p.name == "ghl-desktop.db" for p in own_files) and any(p.suffix == ".vault" for p in own_files)
    for path in own_files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret in clear in {path.relative_to(home)}"
            # a JWT's signature part alone would be enough to misuse a leaked token
            assert secret.rsplit(".", 1)[-1].encode() not in data, f"a token part in {path.relative_to(home)}"


def test_timing_knobs_from_the_environment() -> None:
    from ghl_desktop.runtime import RuntimeOptions, runtime_options_from_env

    base = RuntimeOptions()
    assert runtime_options_from_env(base, {}) is base
    tuned = runtime_options_from_env(base, {"GHL_DESKTOP_SEND_MIN_GAP": "0", "GHL_DESKTOP_JOB_LEASE_SECONDS": "2.5",
                                            "GHL_DESKTOP_JOB_CONCURRENCY": "3"})
    assert tuned.sessions.send_min_gap == 0.0 and tuned.runner.lease_seconds == 2.5 and tuned.runner.concurrency == 3
    assert tuned.sessions.send_jitter == base.sessions.send_jitter  # what is not set keeps its default
    assert base.runner.transient_retry_seconds >= 3600  # the app rides out an hour-long HighLevel outage
    for bad in ({"GHL_DESKTOP_SEND_MIN_GAP": "soon"}, {"GHL_DESKTOP_JOB_CONCURRENCY": "0"},
                {"GHL_DESKTOP_JOB_LEASE_SECONDS": "-1"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            runtime_options_from_env(base, bad)


def test_a_bad_timing_knob_stops_headless_with_a_clear_error(home: Path) -> None:
    import subprocess
    import sys

    from tests.e2e.headless_proc import REPO, headless_env

    done = subprocess.run([sys.executable, "-m", "ghl_desktop", "headless", "--sandbox"], cwd=REPO,
                          env=headless_env(home, {"GHL_DESKTOP_SEND_MIN_GAP": "fast"}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "GHL_DESKTOP_SEND_MIN_GAP must be a number, not 'fast'" in done.stderr
    assert not (home / "sandbox").exists()  # nothing was started
