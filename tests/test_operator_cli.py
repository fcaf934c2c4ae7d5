"""The operator commands (issue 14's CLI) as separate processes against a standalone sandbox over loopback:
``locations connect`` → ``numbers link`` (QR and pairing code) → ``numbers list`` → a ``headless
--sandbox-url`` worker that bridges the linked number without any automatic setup. On SQLite here and on
the harness's PostgreSQL (a cluster: tokens sealed in the database, no keyring)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from ghl_desktop.adapters.crypto import ENV_KEY
from ghl_desktop.sandbox.consent import approve_links
from ghl_desktop.webhooks.endpoint import PROVIDER_PATH
from tests.fixtures.processes import CliProcess, free_port, standalone_sandbox
from tests.fixtures.processes import until as _until

CUSTOMER = "+15550107777"


def _approve(consent_url: str) -> None:
    """What a person does on the consent page: pick the location, follow the redirect to the loopback."""
    with httpx.Client(follow_redirects=False, timeout=30) as http:
        page = http.get(consent_url)
        page.raise_for_status()
        links = [link for link in approve_links(page.text) if "locationId=" in link]
        assert links, page.text[:500]
        approve = http.get(httpx.URL(consent_url).join(links[0]))
        assert approve.status_code == 302, approve.text
        http.get(approve.headers["location"]).raise_for_status()


@pytest.fixture
def oauth_port() -> int:
    return free_port()


@pytest.fixture
def sandbox_url(oauth_port: int) -> Any:
    # the exact redirect URI the operator's process listens on is registered, as on HighLevel
    with standalone_sandbox("--redirect-uri", f"http://127.0.0.1:{oauth_port}/oauth/callback") as url:
        yield url


def _env(home: Path, oauth_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHL_")}  # no real credentials, no DB URL
    env.update({"GHL_DESKTOP_HOME": str(home), "GHL_OAUTH_REDIRECT_PORT": str(oauth_port)})
    return env


def _journey(sandbox_url: str, env: dict[str, str], extra: list[str]) -> None:
    http = httpx.Client(base_url=sandbox_url, timeout=30)
    try:
        state = http.get("/_sandbox/state").json()
        location = state["locations"][0]

        connect = CliProcess(["locations", "connect", "--sandbox-url", sandbox_url, *extra], env=env)
        consent = connect.expect("consent: ")
        assert consent.startswith(sandbox_url + "/oauth/chooselocation?"), consent
        _approve(consent)
        assert connect.expect("connected: ") == f"{location['id']} {location['name']}"
        assert connect.finish() == 0, connect.stderr

        for phone in ("+15550100001", "+15550100002", CUSTOMER):
            http.post("/_sandbox/phones", json={"phone": phone, "name": f"Phone {phone[-4:]}"}).raise_for_status()

        link = CliProcess(["numbers", "link", "--location", location["id"], "--sandbox-url", sandbox_url, *extra],
                          env=env)
        qr = link.expect("qr: ")
        http.post("/_sandbox/whatsapp/scan", json={"qr": qr, "phone": "+15550100001"}).raise_for_status()
        assert link.expect("linked: ") == "+15550100001"
        assert link.finish() == 0, link.stderr

        pair = CliProcess(["numbers", "link", "--location", location["id"], "--pair-phone", "+15550100002",
                           "--sandbox-url", sandbox_url, *extra], env=env)
        code = pair.expect("pair-code: ")
        http.post("/_sandbox/whatsapp/pair-code", json={"phone": "+15550100002", "code": code}).raise_for_status()
        assert pair.expect("linked: ") == "+15550100002"
        assert pair.finish() == 0, pair.stderr
        assert not [line for line in pair.lines if line.startswith("qr: ")]  # the code is what was asked for

        listing = CliProcess(["numbers", "list", *extra], env=env)
        assert listing.finish() == 0, listing.stderr
        rows = sorted(line.split()[:2] for line in listing.lines)
        assert rows == [["+15550100001", location["id"]], ["+15550100002", location["id"]]], listing.lines

        # a worker on the same database bridges the linked numbers; nothing is linked or connected again
        worker = CliProcess(["headless", "--sandbox-url", sandbox_url, *extra], env=env)
        try:
            hooks = worker.expect("webhooks: ")
            worker.expect("ready")
            http.post("/_sandbox/config", json={"webhook_url": hooks + PROVIDER_PATH}).raise_for_status()

            def both_connected() -> bool:
                numbers = http.get("/_sandbox/whatsapp/state").json()["linked_numbers"]
                live = {n["phone"] for n in numbers if n["state"] == "connected"}
                return {"+15550100001", "+15550100002"} <= live

            _until(both_connected, "both linked numbers connected by the worker")
            http.post(f"/_sandbox/phones/{CUSTOMER}/send",
                      json={"to": "+15550100001", "text": "hello from the operator test"}).raise_for_status()

            def arrived() -> list[dict[str, Any]]:
                return [m for m in http.get("/_sandbox/state").json()["messages"]
                        if m["body"] == "hello from the operator test"]

            assert len(_until(arrived, "the customer's message in HighLevel")) == 1
            numbers = http.get("/_sandbox/whatsapp/state").json()["linked_numbers"]
            assert sorted(n["phone"] for n in numbers) == ["+15550100001", "+15550100002"]
            # the link commands let go of their connection: the worker's is the only one there ever was at once
            assert [n["max_concurrent_sessions"] for n in numbers] == [1, 1]
        finally:
            assert worker.close() == 0, worker.stderr
        assert all(not line.startswith(("qr: ", "consent: ")) for line in worker.lines), worker.lines
    finally:
        http.close()


def test_connect_link_and_run_a_worker_on_sqlite(sandbox_url: str, oauth_port: int, tmp_path: Path) -> None:
    _journey(sandbox_url, _env(tmp_path / "home", oauth_port), [])


@pytest.mark.postgres
def test_connect_link_and_run_a_worker_on_postgres(sandbox_url: str, oauth_port: int, tmp_path: Path,
                                                   pg_url: str) -> None:
    env = _env(tmp_path / "home", oauth_port)
    env[ENV_KEY] = secrets.token_hex(32)
    _journey(sandbox_url, env, ["--db-url", pg_url])


def test_errors_are_one_line_and_exit_2(sandbox_url: str, oauth_port: int, tmp_path: Path) -> None:
    env = _env(tmp_path / "home", oauth_port)
    unknown = CliProcess(["numbers", "link", "--location", "nope", "--sandbox-url", sandbox_url], env=env)
    assert unknown.finish() == 2
    assert "location nope is not connected" in unknown.stderr and "Traceback" not in unknown.stderr

    dead = f"http://127.0.0.1:{free_port()}"
    for args in (["locations", "connect", "--sandbox-url", dead], ["headless", "--sandbox-url", dead]):
        proc = CliProcess(args, env=env)
        assert proc.finish() == 2, proc.stderr
        assert f"--sandbox-url {dead}: not a running ghl-desktop sandbox" in proc.stderr
        assert "Traceback" not in proc.stderr
