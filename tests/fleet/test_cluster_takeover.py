"""Number ownership across worker processes (issue 14), on the harness's real PostgreSQL, against a standalone
sandbox over loopback: 3 ``headless --sandbox-url --db-url --worker`` processes, 1 location, 6 numbers.

- the numbers spread evenly (2 per worker, shown by ``numbers list``'s WORKER column);
- one worker is SIGKILLed while customers keep writing: its numbers are connected again by the others
  once its leases expire, the restarted worker gets its share back, and a clean stop hands its numbers
  over at once;
- no number is ever connected twice at once (the sandbox's ``max_concurrent_sessions`` stays 1),
  every inbound message reaches HighLevel exactly once and every agent reply reaches the customer's
  phone exactly once, whichever worker took the webhook and whichever holds the number;
- a forced token expiry while the three workers post to HighLevel costs exactly one refresh.

Timings are shortened through the environment (heartbeat 1 s, takeover 5 s); the waits below are
liveness bounds, not speed checks."""

from __future__ import annotations

import functools
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghl_desktop.adapters.crypto import ENV_KEY
from ghl_desktop.adapters.storage import open_database
from ghl_desktop.adapters.storage.ownership import ownership_repo
from ghl_desktop.sandbox.consent import approve_links
from ghl_desktop.webhooks.endpoint import PROVIDER_PATH
from tests.fixtures.processes import CliProcess, free_port, standalone_sandbox, until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NUMBERS = [f"+1555020000{i}" for i in range(6)]
CUSTOMERS = [f"+1555030000{i}" for i in range(6)]  # customer i writes to number i
WORKERS = ["w1", "w2", "w3"]
TIMING = {
    "GHL_DESKTOP_HEARTBEAT_SECONDS": "1", "GHL_DESKTOP_TAKEOVER_SECONDS": "5",
    "GHL_DESKTOP_JOB_LEASE_SECONDS": "5", "GHL_DESKTOP_JOB_POLL_INTERVAL": "0.2",
    "GHL_DESKTOP_SEND_MIN_GAP": "0", "GHL_DESKTOP_SEND_JITTER": "0", "GHL_DESKTOP_SESSION_WAIT": "1",
    "GHL_DESKTOP_RECONNECT_BACKOFF": "0.5", "GHL_DESKTOP_RECONNECT_BACKOFF_MAX": "2",
}


_until = functools.partial(until, within=90.0, interval=0.25)


@pytest.fixture
def oauth_port() -> int:
    return free_port()


@pytest.fixture
def sandbox_url(oauth_port: int) -> Iterator[str]:
    with standalone_sandbox("--redirect-uri", f"http://127.0.0.1:{oauth_port}/oauth/callback") as url:
        yield url


class Cluster:
    def __init__(self, sandbox_url: str, pg_url: str, tmp: Path, oauth_port: int) -> None:
        self.url = sandbox_url
        self.pg_url = pg_url
        self.tmp = tmp
        base = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}
        self.env = {**base, **TIMING, ENV_KEY: secrets.token_hex(32), "GHL_OAUTH_REDIRECT_PORT": str(oauth_port)}
        self.http = httpx.Client(base_url=sandbox_url, timeout=30)
        self.workers: dict[str, CliProcess] = {}
        self.hooks: dict[str, str] = {}

    def env_for(self, name: str) -> dict[str, str]:
        home = self.tmp / name  # every process its own data dir, as on separate machines
        return {**self.env, "GHL_DESKTOP_HOME": str(home)}

    def cli(self, name: str, *args: str) -> CliProcess:
        return CliProcess([*args, "--sandbox-url", self.url, "--db-url", self.pg_url], env=self.env_for(name),
                          timeout=120)

    # --- set-up through the operator commands ---

    def connect_location(self) -> str:
        location = self.http.get("/_sandbox/state").json()["locations"][0]
        connect = self.cli("operator", "locations", "connect")
        consent = connect.expect("consent: ")
        with httpx.Client(follow_redirects=False, timeout=30) as http:
            page = http.get(consent)
            links = [link for link in approve_links(page.text) if "locationId=" in link]
            approve = http.get(httpx.URL(consent).join(links[0]))
            http.get(approve.headers["location"]).raise_for_status()
        assert connect.expect("connected: ").split()[0] == location["id"]
        assert connect.finish() == 0, connect.stderr
        return str(location["id"])

    def link(self, location: str, phone: str) -> None:
        link = self.cli(f"link-{phone[-1]}", "numbers", "link", "--location", location)
        qr = link.expect("qr: ")
        self.http.post("/_sandbox/whatsapp/scan", json={"qr": qr, "phone": phone}).raise_for_status()
        assert link.expect("linked: ") == phone
        assert link.finish() == 0, link.stderr

    # --- workers ---

    def start(self, name: str) -> None:
        proc = CliProcess(["headless", "--sandbox-url", self.url, "--db-url", self.pg_url, "--worker", name],
                          env=self.env_for(name), timeout=120)
        self.hooks[name] = proc.expect("webhooks: ")
        proc.expect("ready")
        self.workers[name] = proc

    def kill(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.proc.send_signal(signal.SIGKILL)
        proc.close()

    def stop(self, name: str) -> None:
        assert self.workers.pop(name).close() == 0  # SIGTERM: a clean stop

    def close(self) -> None:
        for name in list(self.workers):
            self.workers.pop(name).close()
        self.http.close()

    # --- what the cluster shows ---

    def holders(self) -> dict[str, str]:
        with open_database(self.pg_url, migrate=False) as db:
            by_session = ownership_repo(db).holders()
            phones = {s.id: s.phone for s in db.sessions.list()}
        return {str(phones[sid]): worker for sid, worker in by_session.items()}

    def numbers(self) -> dict[str, dict[str, Any]]:
        return {n["phone"]: n for n in self.http.get("/_sandbox/whatsapp/state").json()["linked_numbers"]}

    def spread(self, workers: list[str]) -> dict[str, str] | None:
        """The holders when every number is held by one of ``workers``, evenly, and connected."""
        holders = self.holders()
        counts = Counter(holders.values())
        even = len(NUMBERS) // len(workers)
        numbers = self.numbers()
        if (sorted(holders) == sorted(NUMBERS) and set(counts) == set(workers)
                and all(c == even for c in counts.values())
                and all(numbers[p]["state"] == "connected" for p in NUMBERS)):
            return holders
        return None

    # --- traffic ---

    def inbound(self, round_: int, per_number: int) -> list[str]:
        texts = []
        for i, (customer, number) in enumerate(zip(CUSTOMERS, NUMBERS, strict=True)):
            for k in range(per_number):
                text = f"r{round_} c{i} m{k}"
                self.http.post(f"/_sandbox/phones/{customer}/send", json={"to": number, "text": text},
                               ).raise_for_status()
                texts.append(text)
        return texts

    def hl_messages(self) -> list[dict[str, Any]]:
        return list(self.http.get("/_sandbox/state").json()["messages"])

    def contact_of(self, phone: str) -> str:
        def find() -> str | None:
            for contact in self.http.get("/_sandbox/state").json()["contacts"]:
                if contact["phone"] == phone and contact["mergedInto"] is None:
                    return str(contact["id"])
            return None

        return _until(find, f"HighLevel contact for {phone}")

    def replies(self, location: str, round_: int) -> list[tuple[str, str]]:
        sent = []
        for i, customer in enumerate(CUSTOMERS):
            text = f"reply r{round_} to c{i}"
            answer = self.http.post(f"/_sandbox/locations/{location}/reply",
                                    json={"contactId": self.contact_of(customer), "message": text})
            assert answer.status_code == 201, answer.text
            sent.append((customer, text))
        return sent

    def inbox_texts(self, customer: str) -> list[str]:
        return [str(m.get("text")) for m in self.http.get(f"/_sandbox/phones/{customer}/inbox").json()]


#: the issue's figures (600 inbound, 120 replies; about 3 minutes on 2 busy cores); GHL_TEST_CLUSTER_QUICK=1
#: runs a quicker pass of the same story while working on it
FULL = os.environ.get("GHL_TEST_CLUSTER_QUICK") != "1"
PER_NUMBER, REPLIES = (20, 4) if FULL else (3, 1)  # per phase: inbound per number, replies per customer


def test_three_workers_share_six_numbers_and_survive_kills(sandbox_url: str, pg_url: str, tmp_path: Path,
                                                           oauth_port: int) -> None:
    """5 phases of traffic: steady; w2 SIGKILLed; w2 back; w2 SIGKILLed again; w2 back and w3 stopped cleanly."""
    c = Cluster(sandbox_url, pg_url, tmp_path, oauth_port)
    texts: list[str] = []
    replies: list[tuple[str, str]] = []
    takeovers: list[float] = []
    try:
        for phone in NUMBERS + CUSTOMERS:
            c.http.post("/_sandbox/phones", json={"phone": phone, "name": f"Phone {phone[-2:]}"}).raise_for_status()
        location = c.connect_location()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda p: c.link(location, p), NUMBERS))

        for name in WORKERS:
            c.start(name)
        # replies come to w1's endpoint (any worker's would do: the outbound job goes to the number's holder)
        c.http.post("/_sandbox/config", json={"webhook_url": c.hooks["w1"] + PROVIDER_PATH}).raise_for_status()
        first = _until(lambda: c.spread(WORKERS), "6 numbers spread 2/2/2 and connected")
        listing = c.cli("operator", "numbers", "list")
        assert listing.finish() == 0, listing.stderr
        assert sorted((ln.split()[0], ln.split()[3]) for ln in listing.lines) == sorted(first.items())

        def phase(n: int) -> None:
            texts.extend(c.inbound(n, PER_NUMBER))
            for k in range(REPLIES):
                replies.extend(c.replies(location, n * 10 + k))

        def kill_w2(n: int) -> None:
            before = c.holders()
            c.kill("w2")
            killed = time.monotonic()
            phase(n)  # customers keep writing (to w2's numbers too: they wait on WhatsApp for the takeover)
            # the bound: every number connected again within 45 s of the kill (takeover here: 5 s)
            after = _until(lambda: c.spread(["w1", "w3"]), f"kill {n}: w2's numbers connected again by w1 and w3",
                           within=45)
            takeovers.append(time.monotonic() - killed)
            assert all(after[p] in ("w1", "w3") for p, w in before.items() if w == "w2")

        phase(1)
        kill_w2(2)
        c.start("w2")  # back: it gets its share again
        _until(lambda: c.spread(WORKERS), "rebalanced 2/2/2 after w2 restarted")
        # a forced expiry while all three post to HighLevel: one refresh for the whole cluster
        refreshes = c.http.get("/_sandbox/state").json()["stats"].get("oauth_refreshes_by_location", {})
        assert c.http.post("/_sandbox/tokens/expire", json={"locationId": location}).json()["expired"] >= 1
        phase(3)
        kill_w2(4)
        c.start("w2")
        _until(lambda: c.spread(WORKERS), "rebalanced 2/2/2 after w2 restarted again")
        c.stop("w3")  # a clean stop: its numbers are handed over without waiting for the expiry
        phase(5)
        _until(lambda: c.spread(["w1", "w2"]), "w3's numbers taken by w1 and w2 after its clean stop")

        def all_in() -> bool:
            bodies = Counter(m["body"] for m in c.hl_messages() if m["direction"] == "inbound")
            return all(bodies[t] >= 1 for t in texts)

        _until(all_in, "every inbound message in HighLevel", within=300)

        def all_replied() -> bool:
            inbox = {cu: Counter(c.inbox_texts(cu)) for cu in CUSTOMERS}
            return all(inbox[customer][text] >= 1 for customer, text in replies)

        _until(all_replied, "every reply on its customer's phone", within=300)

        def ticks() -> bool:  # each reply's delivery tick reached HighLevel
            sent = {m["body"]: m for m in c.hl_messages() if m["direction"] == "outbound"}
            return all(text in sent and sent[text]["status"] in ("delivered", "read") for _, text in replies)

        _until(ticks, "every reply delivered (its tick) in HighLevel", within=120)
        time.sleep(2)  # a late duplicate would land now
        bodies = Counter(m["body"] for m in c.hl_messages() if m["direction"] == "inbound")
        assert {t: bodies[t] for t in texts} == dict.fromkeys(texts, 1)  # each exactly once
        for customer in CUSTOMERS:
            inbox = c.http.get(f"/_sandbox/phones/{customer}/inbox").json()
            mine = {text for cu, text in replies if cu == customer}
            got = [m for m in inbox if m.get("text") in mine]
            assert sorted(m["text"] for m in got) == sorted(mine)  # each reply exactly once ...
            assert {m["from"] for m in got} == {NUMBERS[CUSTOMERS.index(customer)]}  # ... from the number written to
        numbers = c.numbers()
        assert {p: numbers[p]["max_concurrent_sessions"] for p in NUMBERS} == dict.fromkeys(NUMBERS, 1)
        stats = c.http.get("/_sandbox/state").json()["stats"]
        assert stats["oauth_refreshes_by_location"][location] - refreshes.get(location, 0) == 1
        print(f"cluster: {len(texts)} inbound, {len(replies)} replies, takeover after SIGKILL "
              f"{', '.join(f'{t:.1f} s' for t in takeovers)} (takeover setting 5 s)")
    finally:
        c.close()
