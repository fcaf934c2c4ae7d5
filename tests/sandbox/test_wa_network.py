"""The simulated WhatsApp network: control API, drop kinds, replacement, persistence."""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ghl_desktop.adapters.whatsapp.simulated import SimulatedTransport
from ghl_desktop.core.whatsapp import (
    ClientOutdated,
    Connected,
    ConnectFailed,
    Disconnected,
    IncomingMessage,
    KeepAliveLost,
    KeepAliveRestored,
    LoggedOut,
    QrCode,
    StreamReplaced,
    TemporarilyBanned,
)
from ghl_desktop.sandbox.server import running_sandbox
from ghl_desktop.sandbox.whatsapp import setup_whatsapp_network, whatsapp_state
from tests.sandbox.wa_harness import Network, Recorder, running_network, wait_until

LINKED = "+15550001000"
ALICE = "+4917011112222"


async def link(network: Network, store: Path, session: str = "s1") -> tuple[SimulatedTransport, Recorder]:
    rec = Recorder()
    transport = SimulatedTransport(session, network.url, rec, store)
    await transport.start()
    await rec.next(QrCode)
    # a person can also scan "whatever session s1 shows" (no need to read the QR payload)
    await network.post("/_sandbox/whatsapp/scan", {"session": session, "phone": LINKED})
    await rec.next(Connected)
    return transport, rec


@pytest.mark.asyncio
async def test_control_api_refuses_bad_input_with_clear_errors(tmp_path: Path) -> None:
    async with running_network() as network:
        bad = await network.post("/_sandbox/phones", {"phone": "12", "name": "x"}, expect=400)
        assert "phone" in bad["error"]
        await network.post("/_sandbox/phones", [1, 2], expect=400)
        await network.add_phone(ALICE, "Alice")
        unknown = await network.post(f"/_sandbox/phones/{ALICE}/send", {"to": LINKED, "text": "x"}, expect=404)
        assert "not a linked number" in unknown["error"]
        transport, _ = await link(network, tmp_path / "s.json")
        base = f"/_sandbox/phones/{ALICE}/send"
        await network.post("/_sandbox/phones/+19990001111/send", {"to": LINKED, "text": "x"}, expect=404)
        assert "needs text" in (await network.post(base, {"to": LINKED}, expect=400))["error"]
        assert "unknown kind" in (await network.post(base, {"to": LINKED, "kind": "hologram"}, expect=400))["error"]
        assert "base64" in (await network.post(base, {"to": LINKED, "media": {"data": "***"}}, expect=400))["error"]
        assert "target_id" in (await network.post(base, {"to": LINKED, "kind": "reaction"}, expect=400))["error"]
        await network.post(base, {"to": LINKED, "location": {"latitude": "north"}}, expect=400)
        await network.post(f"/_sandbox/phones/{ALICE}/read", {"ids": ["nope"]}, expect=404)
        await network.post(f"/_sandbox/phones/{ALICE}/read", {"ids": []}, expect=400)
        assert "kind must be" in (await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "nuke"},
                                                     expect=400))["error"]
        await network.post("/_sandbox/whatsapp/pair-code", {"phone": LINKED, "code": "AAAA-BBBB"}, expect=404)
        await network.post("/_sandbox/whatsapp/scan", {"phone": LINKED}, expect=400)
        await network.post("/_sandbox/whatsapp/scan", {"qr": "SIMQR:nothing", "phone": LINKED}, expect=410)
        # nothing bad reached the client
        await transport.stop()
        assert network.net.linked[LINKED].queue == []


@pytest.mark.asyncio
async def test_media_by_url_is_fetched_like_a_phone_uploading_it(tmp_path: Path) -> None:
    async with running_network() as network:

        async def serve(_request: web.Request) -> web.Response:
            return web.Response(body=b"JPEGDATA", content_type="image/jpeg")

        files = web.Application()
        files.router.add_get("/cat.jpg", serve)
        runner = web.AppRunner(files)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            transport, rec = await link(network, tmp_path / "s.json")
            await network.add_phone(ALICE, "Alice")
            await network.phone_send(ALICE, {"to": LINKED, "media": {"url": f"http://127.0.0.1:{port}/cat.jpg",
                                                                      "mimetype": "image/jpeg"}})
            msg = await rec.next(IncomingMessage)
            assert msg.media is not None and await transport.download(msg.media) == b"JPEGDATA"
            await network.post(f"/_sandbox/phones/{ALICE}/send",
                               {"to": LINKED, "media": {"url": f"http://127.0.0.1:{port}/missing"}}, expect=400)
            await transport.stop()
        finally:
            await runner.cleanup()


@pytest.mark.asyncio
async def test_each_drop_kind_reaches_the_client_as_its_event(tmp_path: Path) -> None:
    store = tmp_path / "s.json"
    async with running_network() as network:
        transport, rec = await link(network, store)

        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "keepalive_lost"})
        await rec.next(KeepAliveLost)
        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "keepalive_restored"})
        await rec.next(KeepAliveRestored)

        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "disconnect", "refuse_connects": 1})
        assert (await rec.next(Disconnected)).reason
        await transport.start()  # refused once: an outage
        failed = await rec.next(ConnectFailed)
        assert not failed.permanent
        await transport.start()
        await rec.next(Connected, 2)

        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "replaced"})
        await rec.next(StreamReplaced)
        await transport.start()
        await rec.next(Connected, 3)

        result = await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "ban", "ban_seconds": 120})
        assert result["state"] == "banned"
        ban = await rec.next(TemporarilyBanned)
        assert ban.expires_at is not None and ban.code == 101
        await transport.start()  # still banned on connect
        await rec.next(TemporarilyBanned, 2)
        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "clear"})

        await transport.start()
        await rec.next(Connected, 4)
        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "outdated"})
        await rec.next(ClientOutdated)
        await transport.start()
        await rec.next(ClientOutdated, 2)
        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "clear"})

        await transport.start()
        await rec.next(Connected, 5)
        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "logout"})
        assert "unlinked" in (await rec.next(LoggedOut)).reason
        assert transport.paired_jid is None  # the engine store forgot the device
        assert await network.linked_state(LINKED) == "logged_out"
        # only the final events, never an extra Disconnected after them
        assert len(rec.of(Disconnected)) == 1
        # replaced/keepalive need a connected client
        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "replaced"}, expect=409)
        await transport.stop()


@pytest.mark.asyncio
async def test_a_second_client_with_the_same_device_replaces_the_first(tmp_path: Path) -> None:
    store = tmp_path / "s.json"
    async with running_network() as network:
        first, rec1 = await link(network, store)
        rec2 = Recorder()
        second = SimulatedTransport("s1", network.url, rec2, store)
        await second.start()
        await rec2.next(Connected)
        await rec1.next(StreamReplaced)
        # a stale device (unlinked meanwhile) is told so on connect
        await network.post(f"/_sandbox/whatsapp/{LINKED}/drop", {"kind": "logout"})
        await rec2.next(LoggedOut)
        rec3 = Recorder()
        stale = SimulatedTransport("s1", network.url, rec3, tmp_path / "copy.json")
        stale._write_store({"jid": "15550001000@s.whatsapp.net", "device": "0123456789abcdef"})
        await stale.start()
        assert "on connect" in (await rec3.next(LoggedOut)).reason
        for t in (first, second, stale):
            await t.stop()


@pytest.mark.asyncio
async def test_state_survives_a_network_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "net"
    store = tmp_path / "s.json"
    picture = base64.b64encode(b"GIF89a").decode()
    async with running_network(state_dir) as network:
        transport, _ = await link(network, store)
        await network.add_phone(ALICE, "Alice", lid="123456789")
        await transport.send_text(ALICE, "before restart")
        await transport.stop()
        # sent while the client is away: must wait on the network
        pending = await network.phone_send(ALICE, {"to": LINKED, "text": "while you were away",
                                                   "media": {"data": picture, "mimetype": "image/gif"}})
        assert (await network.state())["linked_numbers"][0]["pending"] == 1
    async with running_network(state_dir) as network:
        state = await network.state()
        assert [(n["phone"], n["state"], n["pending"]) for n in state["linked_numbers"]] == [(LINKED, "offline", 1)]
        assert [(p["phone"], p["name"], p["lid"]) for p in state["phones"]] == [(ALICE, "Alice", "123456789@lid")]
        inbox = await network.get(f"/_sandbox/phones/{ALICE}/inbox")
        assert [(e["text"], e["status"]) for e in inbox] == [("before restart", "delivered")]
        rec2 = Recorder()
        again = SimulatedTransport("s1", network.url, rec2, store)
        await again.start()
        msg = await rec2.next(IncomingMessage)
        assert msg.id == pending and msg.media is not None
        assert await again.download(msg.media) == b"GIF89a"
        await wait_until(lambda: network.net.linked[LINKED].queue == [], what="acked")
        await again.stop()


@pytest.mark.asyncio
async def test_whatsapp_state_for_the_sandbox_state_endpoint(tmp_path: Path) -> None:
    app = web.Application()
    setup_whatsapp_network(app, None)
    assert whatsapp_state(app) == {"linked_numbers": [], "phones": []}
    async with running_network() as network:
        transport, _ = await link(network, tmp_path / "s.json")
        await network.add_phone(ALICE, "Alice")
        state = whatsapp_state(network.app)
        assert [(n["phone"], n["state"]) for n in state["linked_numbers"]] == [(LINKED, "connected")]
        assert [(p["phone"], p["name"]) for p in state["phones"]] == [(ALICE, "Alice")]
        await transport.stop()


@pytest.mark.asyncio
async def test_the_network_mounts_on_the_highlevel_sandbox_app(tmp_path: Path) -> None:
    """The lead wires ``setup_whatsapp_network`` into ``running_sandbox``: both live on one port."""
    async with running_sandbox(setup=lambda app: setup_whatsapp_network(app, tmp_path / "wa")) as sandbox:
        async with aiohttp.ClientSession() as http:
            network = Network(sandbox.url, sandbox.app, http)
            transport, rec = await link(network, tmp_path / "s.json")
            await network.add_phone(ALICE, "Alice")
            big = base64.b64encode(b"x" * 3_000_000).decode()  # bigger than aiohttp's default body limit
            await network.phone_send(ALICE, {"to": LINKED, "kind": "document",
                                             "media": {"data": big, "file_name": "big.bin"}})
            msg = await rec.next(IncomingMessage)
            assert msg.media is not None and msg.media.size == 3_000_000
            assert whatsapp_state(sandbox.app)["linked_numbers"][0]["state"] == "connected"
            await transport.stop()
    assert (tmp_path / "wa" / "whatsapp-network.json").exists()
