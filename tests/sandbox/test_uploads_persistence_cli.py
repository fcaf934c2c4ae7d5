"""Attachment uploads, state persistence across restarts, and the `ghl-desktop sandbox` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ghl_desktop.sandbox.server import RunningSandbox
from tests.sandbox.api_helpers import auth, inbound, location_install, state, upsert

ROOT = Path(__file__).resolve().parents[2]


async def _conversation(client: httpx.AsyncClient, sb: RunningSandbox) -> tuple[str, str, str, str]:
    loc = sb.location_ids[0]
    token = (await location_install(client, sb, loc))["access_token"]
    contact = (await upsert(client, token, loc, "+14155550170")).json()["contact"]["id"]
    conv = (await inbound(client, sb, token, contact)).json()["conversationId"]
    return loc, token, contact, conv


@pytest.mark.asyncio
async def test_multipart_upload_serves_a_public_url_and_checks_type_and_size(sandbox_factory) -> None:  # type: ignore[no-untyped-def]
    async with sandbox_factory(upload_max_bytes=1000) as sb, httpx.AsyncClient(base_url=sb.url) as client:
        loc, token, contact, conv = await _conversation(client, sb)
        fields = {"conversationId": conv, "contactId": contact, "locationId": loc}
        r = await client.post("/conversations/messages/upload", headers=auth(token), data=fields,
                              files={"fileAttachment": ("photo.jpg", b"\xff\xd8jpegdata", "image/jpeg")})
        assert r.status_code == 200
        url = r.json()["uploadedFiles"]["photo.jpg"]
        public = await client.get(url)  # no token: a public link
        assert public.status_code == 200 and public.content == b"\xff\xd8jpegdata"
        assert public.headers["content-type"] == "image/jpeg"
        voice = await client.post("/conversations/messages/upload", headers=auth(token), data=fields,
                                  files={"fileAttachment": ("voice.ogg", b"OggS", "audio/ogg")})
        assert voice.status_code == 415 and voice.json()["status"] == 415
        big = await client.post("/conversations/messages/upload", headers=auth(token), data=fields,
                                files={"fileAttachment": ("big.pdf", b"x" * 1001, "application/pdf")})
        assert big.status_code == 413
        no_conv = await client.post("/conversations/messages/upload", headers=auth(token),
                                    data={"contactId": contact, "locationId": loc},
                                    files={"fileAttachment": ("a.png", b"x", "image/png")})
        assert no_conv.status_code == 422


@pytest.mark.asyncio
async def test_large_upload_initiate_put_complete_with_channel_limits(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, _, conv = await _conversation(client, sandbox)
        base = {"locationId": loc, "conversationId": conv, "filename": "clip.mp4", "contentType": "video/mp4"}
        too_big = await client.post("/conversations/messages/upload/initiate", headers=auth(token),
                                    json={**base, "channel": "SMS", "fileSize": 6 * 1024 * 1024})
        assert too_big.status_code == 413
        init = await client.post("/conversations/messages/upload/initiate", headers=auth(token),
                                 json={**base, "channel": "WHATSAPP", "fileSize": 6 * 1024 * 1024})
        assert init.status_code == 200
        ticket = init.json()
        assert ticket["maxFileSize"] == 100 * 1024 * 1024 and ticket["uploadUrl"].startswith(sandbox.url)
        done = {"uploadId": ticket["uploadId"], "filePath": ticket["filePath"], "locationId": loc,
                "conversationId": conv, "filename": "clip.mp4"}
        early = await client.post("/conversations/messages/upload/complete", headers=auth(token), json=done)
        assert early.status_code == 404  # nothing was PUT yet
        forged = await client.put(ticket["uploadUrl"].replace("Signature=", "Signature=0"), content=b"x")
        assert forged.status_code == 403
        data = os.urandom(6 * 1024 * 1024)
        put = await client.put(ticket["uploadUrl"], content=data, headers={"Content-Type": "video/mp4"})
        assert put.status_code == 200
        complete = await client.post("/conversations/messages/upload/complete", headers=auth(token), json=done)
        assert complete.status_code == 200
        body = complete.json()
        assert body["metadata"] == {"size": len(data), "contentType": "video/mp4"}
        fetched = await client.get(body["uploadedFiles"]["clip.mp4"])
        assert fetched.content == data


@pytest.mark.asyncio
async def test_state_survives_a_restart(sandbox_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state_dir = tmp_path / "sandbox-state"
    async with sandbox_factory(state_dir=str(state_dir)) as sb, httpx.AsyncClient(base_url=sb.url) as client:
        _loc, token, contact, conv = await _conversation(client, sb)
        tokens = await location_install(client, sb, sb.location_ids[1])
        creds = (sb.client_id, sb.client_secret, sb.provider_id, sb.public_key_pem)
        before = await state(client)
    assert (state_dir / "state.json").exists()
    async with sandbox_factory(state_dir=str(state_dir)) as sb2, httpx.AsyncClient(base_url=sb2.url) as client:
        assert (sb2.client_id, sb2.client_secret, sb2.provider_id, sb2.public_key_pem) == creds
        after = await state(client)
        assert after["contacts"] == before["contacts"] and after["messages"] == before["messages"]
        assert after["locations"] == before["locations"]
        # tokens minted before the restart still work, refresh tokens still rotate
        again = await inbound(client, sb2, token, contact, "after restart")
        assert again.status_code == 200 and again.json()["conversationId"] == conv
        r = await client.post("/oauth/token", data={"client_id": sb2.client_id, "client_secret": sb2.client_secret,
                                                    "grant_type": "refresh_token",
                                                    "refresh_token": tokens["refresh_token"]})
        assert r.status_code == 200


@pytest.mark.asyncio
async def test_reset_forgets_data_but_keeps_credentials(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        loc, token, _, _ = await _conversation(client, sandbox)
        client_id = sandbox.client_id
        await client.post("/_sandbox/faults", json={"error_rate": 0.5})
        r = await client.post("/_sandbox/reset")
        assert r.status_code == 200
        snap = await state(client)
        assert snap["contacts"] == [] and snap["messages"] == [] and snap["validation_failures"] == 0
        assert snap["faults"]["error_rate"] == 0.0 and snap["app"]["clientId"] == client_id
        assert (await upsert(client, token, loc, "+14155550171")).status_code == 401


def test_cli_prints_the_url_first_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the with block closes the pipes (an unclosed pipe is a ResourceWarning, an error under filterwarnings)
    with subprocess.Popen([sys.executable, "-m", "ghl_desktop", "sandbox", "--port", "0", "--locations", "3",
                           "--state-dir", str(tmp_path / "s")], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        _stop_on_sigterm(proc)


def _stop_on_sigterm(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("sandbox: http://127.0.0.1:"), first
        url = first.split(" ", 1)[1]
        lines = [proc.stdout.readline().strip() for _ in range(4)]
        assert lines[0].startswith("client_id: ") and lines[3].startswith("company_id: ")
        snap = httpx.get(f"{url}/_sandbox/state", timeout=10).json()
        assert len(snap["locations"]) == 3
        assert lines[0] == f"client_id: {snap['app']['clientId']}"
        assert lines[2] == f"conversation_provider_id: {snap['app']['conversationProviderId']}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_refuses_unreadable_state_and_keeps_the_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    state_dir.mkdir()
    (state_dir / "state.json").write_text("{not json", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "ghl_desktop", "sandbox", "--state-dir", str(state_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "cannot read sandbox state" in proc.stderr
    assert (state_dir / "state.json").read_text(encoding="utf-8") == "{not json"
