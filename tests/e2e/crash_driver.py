"""Drives the crash test: customers write, agents reply, while a killer thread SIGKILLs the headless
bridge at random moments and starts it again on the same data dir.

Why the driver is careful: a request in flight when the process dies may or may not have taken effect.
Like a person pressing "send" again only when the first one did not arrive, the driver looks before
it repeats (the phone's sent list; the sandbox's messages), so every duplicate the final check could
find is one the bridge made, never one the test made.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ghl_desktop.headless import SANDBOX_LINKED_PHONE
from tests.e2e.headless_proc import HeadlessProcess

T = TypeVar("T")


class ClusterDown(Exception):
    """The bridge stayed down past the liveness bound."""


@dataclass
class Cluster:
    """The headless process of the moment; ``up`` is clear from just before a kill until ``ready``."""

    home: Path
    log_dir: Path
    env: dict[str, str]
    url: str = ""
    runs: list[HeadlessProcess] = field(default_factory=list)
    up: threading.Event = field(default_factory=threading.Event)
    kills: list[float] = field(default_factory=list)

    @property
    def current(self) -> HeadlessProcess:
        return self.runs[-1]

    def start(self) -> str:
        proc = HeadlessProcess(self.home, self.log_dir, env=self.env, run=len(self.runs)).start()
        self.runs.append(proc)
        url = proc.wait_ready(120)
        if self.url:
            assert url == self.url, f"restart moved the sandbox from {self.url} to {url}"
        self.url = url
        self.up.set()
        return url

    def kill_and_restart(self) -> None:
        self.up.clear()
        self.current.kill()
        self.kills.append(time.monotonic())
        self.start()

    def wait_up(self, limit: float = 180.0) -> None:
        if not self.up.wait(limit):
            raise ClusterDown(f"the bridge did not come back within {limit} s")

    def stop_all(self) -> None:
        for proc in self.runs:
            proc.stop_quietly()


class Driver:
    """Customer and agent traffic against the sandbox of the running headless process."""

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.http = httpx.Client(timeout=60)
        self.progress = 0
        self.repeats = 0  # operations that had to be looked up (and maybe repeated) after a kill
        self.contacts: dict[str, str] = {}
        self.location_id: str | None = None

    def close(self) -> None:
        self.http.close()

    @property
    def url(self) -> str:
        return self.cluster.url

    def robust(self, action: Callable[[], T], already_done: Callable[[], T | None] | None = None) -> T:
        """Run ``action``; when the process dies under it, wait for the next run, look whether it took
        effect (``already_done``), and repeat it only if not."""
        for _ in range(50):
            self.cluster.wait_up()
            try:
                return action()
            except httpx.TransportError:
                self.repeats += 1
                self.cluster.wait_up()
                if already_done is not None:
                    done = self._lookup(already_done)
                    if done is not None:
                        return done
        raise AssertionError("an operation kept failing across 50 runs of the bridge")

    def _lookup(self, check: Callable[[], T | None]) -> T | None:
        for _ in range(50):
            self.cluster.wait_up()
            try:
                return check()
            except httpx.TransportError:
                continue
        raise AssertionError("could not look up an operation's outcome")

    # --- reads ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        def get() -> dict[str, Any]:
            answer = self.http.get(f"{self.url}/_sandbox/state")
            answer.raise_for_status()
            return dict(answer.json())

        return self.robust(get)

    def get_json(self, path: str) -> Any:
        def get() -> Any:
            answer = self.http.get(f"{self.url}{path}")
            answer.raise_for_status()
            return answer.json()

        return self.robust(get)

    # --- set-up --------------------------------------------------------------------------------

    def setup(self, phones: list[str], faults: dict[str, Any]) -> None:
        def post_faults() -> None:
            self.http.post(f"{self.url}/_sandbox/faults", json=faults).raise_for_status()

        self.robust(post_faults)
        for i, phone in enumerate(phones):
            def create(phone: str = phone, i: int = i) -> None:
                answer = self.http.post(f"{self.url}/_sandbox/phones", json={"phone": phone, "name": f"Customer {i}"})
                assert answer.status_code in (200, 201), answer.text
            self.robust(create)
        installed = [loc["id"] for loc in self.state()["locations"] if loc["installed"]]
        assert len(installed) == 1, installed
        self.location_id = installed[0]

    # --- traffic -------------------------------------------------------------------------------

    def inbound(self, phone: str, message_id: str, text: str) -> None:
        def send() -> bool:
            answer = self.http.post(f"{self.url}/_sandbox/phones/{phone}/send",
                                    json={"to": SANDBOX_LINKED_PHONE, "text": text, "id": message_id})
            assert answer.status_code == 201, answer.text
            return True

        def sent_already() -> bool | None:
            sent = self.http.get(f"{self.url}/_sandbox/phones/{phone}/sent").json()
            return True if any(m["id"] == message_id for m in sent) else None

        self.robust(send, sent_already)
        self.progress += 1

    def contact_of(self, phone: str, limit: float = 180.0) -> str:
        """The HighLevel contact the bridge made for ``phone`` (waits for its first message to land)."""
        deadline = time.monotonic() + limit
        while phone not in self.contacts:
            for contact in self.state()["contacts"]:
                if contact["phone"] and contact["mergedInto"] is None:
                    self.contacts.setdefault(contact["phone"], contact["id"])
            if phone in self.contacts:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no HighLevel contact for {phone} within {limit} s")
            time.sleep(0.5)
        return self.contacts[phone]

    def reply(self, phone: str, text: str) -> None:
        contact_id = self.contact_of(phone)

        def post() -> bool:
            answer = self.http.post(f"{self.url}/_sandbox/locations/{self.location_id}/reply",
                                    json={"contactId": contact_id, "message": text})
            assert answer.status_code == 201, answer.text
            delivery = answer.json()["delivery"]
            assert delivery["status"] in ("delivered", "retrying"), delivery
            return True

        def replied_already() -> bool | None:
            return True if any(m["body"] == text and m["direction"] == "outbound"
                               for m in self.state()["messages"]) else None

        self.robust(post, replied_already)
        self.progress += 1


def killer(cluster: Cluster, driver: Driver, thresholds: list[int], drain_kill_delay: float | None,
           rng: random.Random, errors: list[BaseException], total: int) -> None:
    """SIGKILL at random moments: after the driver passes each progress threshold (plus a random
    fraction of a second, so requests are cut mid-flight too), and once while the backlog drains."""
    try:
        for threshold in thresholds:
            while driver.progress < threshold:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.4))
            cluster.kill_and_restart()
        if drain_kill_delay is not None:
            while driver.progress < total:
                time.sleep(0.01)
            time.sleep(drain_kill_delay)
            cluster.kill_and_restart()
    except BaseException as error:  # surfaced by the test
        errors.append(error)
        cluster.up.set()
