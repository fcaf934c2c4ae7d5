"""Rate limits, fault injection and spec validation."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from ghl_desktop.sandbox.server import RunningSandbox
from ghl_desktop.sandbox.validation import ERRATA, SPEC_DIR, SpecValidator
from tests.sandbox.api_helpers import CONTACTS, auth, inbound, location_install, state, upsert

RATE_HEADERS = ("X-RateLimit-Limit-Daily", "X-RateLimit-Daily-Remaining", "X-RateLimit-Interval-Milliseconds",
                "X-RateLimit-Max", "X-RateLimit-Remaining")


@pytest.mark.asyncio
async def test_burst_limit_gives_429_with_headers_and_recovers_after_the_window(sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    async with sandbox_factory(rate_limit_per_10s=5) as sb, httpx.AsyncClient(base_url=sb.url) as client:
        loc = sb.location_ids[0]
        token = (await location_install(client, sb, loc))["access_token"]
        remaining = []
        for i in range(5):
            r = await upsert(client, token, loc, f"+1415555012{i}")
            assert r.status_code == 200
            assert all(h in r.headers for h in RATE_HEADERS)
            remaining.append(int(r.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]
        limited = await upsert(client, token, loc, "+14155550129")
        assert limited.status_code == 429
        assert limited.json() == {"statusCode": 429, "message": "Too Many Requests"}
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert limited.headers["X-RateLimit-Max"] == "5"
        assert limited.headers["X-RateLimit-Interval-Milliseconds"] == "10000"
        # another location has its own bucket
        other = sb.location_ids[1]
        other_token = (await location_install(client, sb, other))["access_token"]
        assert (await upsert(client, other_token, other, "+14155550130")).status_code == 200
        await client.post("/_sandbox/clock", json={"advance_seconds": 10})
        assert (await upsert(client, token, loc, "+14155550129")).status_code == 200
        assert sb.state.stats["rate_limited"] == 1
        summary = (await state(client))["rate_limits"][f"{sb.client_id}:{loc}"]
        assert summary["requests"] == 6 and summary["limited"] == 1
        assert summary["last"] - summary["first"] >= 10


@pytest.mark.asyncio
async def test_daily_quota_and_short_window(sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    async with sandbox_factory(rate_limit_daily=3, rate_limit_window_seconds=0.5) as sb, \
            httpx.AsyncClient(base_url=sb.url) as client:
        loc = sb.location_ids[0]
        token = (await location_install(client, sb, loc))["access_token"]
        codes = [(await upsert(client, token, loc, "+14155550131")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = await upsert(client, token, loc, "+14155550131")
        assert r.headers["X-RateLimit-Daily-Remaining"] == "0"
        assert r.headers["X-RateLimit-Interval-Milliseconds"] == "500"


@pytest.mark.asyncio
async def test_faults_error_rate_and_latency(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        token = (await location_install(client, sandbox, loc))["access_token"]
        r = await client.post("/_sandbox/faults", json={"error_rate": 1.0})
        assert r.json()["error_rate"] == 1.0 and r.json()["rate_limit_per_10s"] == 100  # others kept
        failing = await upsert(client, token, loc, "+14155550140")
        assert failing.status_code in (500, 502, 503, 504)
        assert (await state(client))["contacts"] == []
        await client.post("/_sandbox/faults", json={"error_rate": 0, "latency_ms": 400})
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/contacts/upsert", headers=auth(token, CONTACTS), timeout=0.05,
                              json={"locationId": loc, "phone": "+14155550140"})
        await client.post("/_sandbox/faults", json={"latency_ms": 0})
        assert (await upsert(client, token, loc, "+14155550140")).status_code == 200
        bad = await client.post("/_sandbox/faults", json={"nonsense": 1})
        assert bad.status_code == 400


@pytest.mark.asyncio
async def test_lost_response_fault_does_the_work_but_answers_504(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        token = (await location_install(client, sandbox, loc))["access_token"]
        contact = (await upsert(client, token, loc, "+14155550141")).json()["contact"]["id"]
        await client.post("/_sandbox/faults", json={"lost_response_rate": 1})
        r = await inbound(client, sandbox, token, contact, "did it arrive?", altId="wamid-lost")
        assert r.status_code == 504
        stored = [m for m in (await state(client))["messages"] if m["altId"] == "wamid-lost"]
        assert len(stored) == 1  # HighLevel has it; a blind retry would duplicate it


@pytest.mark.asyncio
async def test_bad_body_is_422_with_message_array_and_counted(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        token = (await location_install(client, sandbox, loc))["access_token"]
        assert (await state(client))["validation_failures"] == 0
        r = await client.post("/conversations/messages/inbound", headers=auth(token), json={
            "type": "Telegram", "message": 5, "conversationProviderId": sandbox.provider_id})
        assert r.status_code == 422
        body = r.json()
        assert body["statusCode"] == 422 and body["error"] == "Unprocessable Entity"
        assert isinstance(body["message"], list) and len(body["message"]) >= 2
        assert any("Telegram" in m for m in body["message"])
        missing_param = await client.get("/conversations/search", headers=auth(token))
        assert missing_param.status_code == 422 and "locationId" in missing_param.json()["message"][0]
        bad_status = await client.put("/conversations/messages/abc/status", headers=auth(token),
                                      json={"status": "seen"})
        assert bad_status.status_code == 422
        unknown = await client.get("/conversations/nothing/here/at/all", headers=auth(token))
        assert unknown.status_code == 404
        snap = await state(client)
        assert snap["validation_failures"] == 4
        assert all(f["refused"] for f in snap["validation_failure_details"])
        assert snap["messages"] == []


@pytest.mark.asyncio
async def test_errata_direction_string_and_contact_id_alone_are_valid(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        token = (await location_install(client, sandbox, loc))["access_token"]
        contact = (await upsert(client, token, loc, "+14155550150")).json()["contact"]["id"]
        r = await inbound(client, sandbox, token, contact)  # contactId only, direction "inbound"
        assert r.status_code == 200
        wrong_direction = await inbound(client, sandbox, token, contact, direction="sideways")
        assert wrong_direction.status_code == 422
        neither = await client.post("/conversations/messages/inbound", headers=auth(token), json={
            "type": "Custom", "conversationProviderId": sandbox.provider_id, "message": "x"})
        assert neither.status_code == 422
        assert (await state(client))["validation_failures"] == 2


def test_errata_are_documented_and_the_spec_is_otherwise_enforced() -> None:
    assert all(e.evidence and e.summary and e.kind in ("fix", "lenient") for e in ERRATA)
    validator = SpecValidator()
    ok = validator.validate("POST", "/conversations/messages/inbound", {}, {"Version": "2021-04-15",
                            "Authorization": "Bearer x", "Content-Type": "application/json"}, "application/json",
                            b'{"type":"Custom","contactId":"c","conversationProviderId":"p","direction":"inbound"}')
    assert ok.errors == [] and ok.deviations == []
    assert ok.operation == "POST /conversations/messages/inbound"
    bad = validator.validate("POST", "/contacts/upsert", {}, {"Version": "2021-07-28", "Authorization": "Bearer x"},
                             "application/json", b'{"phone": "+1"}')
    assert any("locationId" in e for e in bad.errors)


@pytest.mark.asyncio
async def test_concurrent_requests_are_served(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        token = (await location_install(client, sandbox, loc))["access_token"]
        results = await asyncio.gather(*(upsert(client, token, loc, f"+1415555{2000 + i}") for i in range(20)))
        assert [r.status_code for r in results] == [200] * 20
        assert len((await state(client))["contacts"]) == 20


def _string_fields(schema_name: str) -> set[str]:
    spec = json.loads((SPEC_DIR / "apps" / "contacts.json").read_text(encoding="utf-8"))
    props = spec["components"]["schemas"][schema_name]["properties"]
    return {name for name, prop in props.items() if prop.get("type") == "string" and not prop.get("nullable")}


@pytest.mark.asyncio
async def test_unset_contact_fields_are_left_out_not_null(sandbox: RunningSandbox) -> None:
    """The spec types a contact's name, email, source... as (non-nullable) strings: a contact created
    with a phone only has them absent, never ``null``, in every answer that carries a contact."""
    strings = _string_fields("GetContectByIdSchema")
    assert {"email", "firstName", "lastName", "name", "source"} <= strings
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc = sandbox.location_ids[0]
        token = (await location_install(client, sandbox, loc))["access_token"]
        created = await upsert(client, token, loc, "+14155550177")
        contact_id = created.json()["contact"]["id"]
        again = await upsert(client, token, loc, "+14155550177")
        fetched = await client.get(f"/contacts/{contact_id}", headers=auth(token, CONTACTS))
        duplicate = await client.get("/contacts/search/duplicate", headers=auth(token, CONTACTS),
                                     params={"locationId": loc, "number": "+14155550177"})
        for answer in (created, again, fetched, duplicate):
            assert answer.status_code == 200, answer.text
            contact = answer.json()["contact"]
            nulls = sorted(key for key, value in contact.items() if value is None)
            assert not nulls, f"{answer.request.url.path} answered null for {nulls}"
            assert contact["phone"] == "+14155550177" and "email" not in contact and "name" not in contact
            assert all(isinstance(contact[key], str) for key in strings & contact.keys())
        # a field once set is there
        named = await upsert(client, token, loc, "+14155550177", name="Ada", email="ada@example.com")
        assert named.json()["contact"]["name"] == "Ada" and named.json()["contact"]["email"] == "ada@example.com"


def test_starting_a_sandbox_does_not_wait_for_the_validator() -> None:
    """Sandbox mode's start (bench/startup.py): the sandbox's modules import without openapi-core, and
    a Sandbox built in a fresh process leaves the validator to a thread of its own; a request's
    validation then waits for that build on its worker thread (the other tests here show it validates)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import ghl_desktop.sandbox_mode, ghl_desktop.sandbox.server\n"
        "print('openapi_core' in sys.modules)\n"
        "from ghl_desktop.sandbox.runtime import Sandbox, SandboxConfig\n"
        "from ghl_desktop.sandbox.validation import SpecValidator, _SHARED\n"
        "sandbox = Sandbox(SandboxConfig())\n"
        "import threading\n"
        "print(any(t.name == 'sandbox-spec-validator' for t in threading.enumerate()) or SpecValidator in _SHARED)\n"
        "print(sandbox.validator is SpecValidator.shared() and sandbox.validator.path_known('/contacts/'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"], out.stdout
