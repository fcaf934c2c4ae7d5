"""Issue 14/15 sandbox side, driven over the raw WebSocket protocol (docs/sandbox-whatsapp-protocol.md):
polls, votes, view-once, ephemeral, calls (+ reject_call), history sync, concurrent sessions."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ghl_desktop.sandbox.whatsapp.model import WS_PATH
from tests.sandbox.wa_harness import Network, running_network

LINKED = "+15550001000"
ALICE = "+4917011112222"


class RawClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.req = 0

    async def frame(self, op: str | None = None) -> dict[str, Any]:
        while True:
            msg = await self.ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data: dict[str, Any] = json.loads(msg.data)
            if op is None or data.get("op") == op:
                return data

    async def event(self) -> dict[str, Any]:
        data = await self.frame("event")
        await self.ws.send_str(json.dumps({"op": "ack", "qid": data["qid"]}))
        return data

    async def call(self, method: str, **args: Any) -> dict[str, Any]:
        self.req += 1
        await self.ws.send_str(json.dumps({"op": "call", "req": self.req, "method": method, "args": args}))
        return await self.frame("reply")


async def linked_client(network: Network, session: str = "s1") -> tuple[RawClient, str]:
    ws = await network.http.ws_connect(f"{network.url}{WS_PATH}?session={session}")
    client = RawClient(ws)
    await client.frame("qr")
    await network.post("/_sandbox/whatsapp/scan", {"session": session, "phone": LINKED})
    paired = await client.frame("paired")
    await client.frame("connected")
    return client, str(paired["device"])


@pytest.mark.asyncio
async def test_poll_vote_view_once_and_ephemeral_reach_the_device() -> None:
    async with running_network() as network:
        client, _ = await linked_client(network)
        await network.add_phone(ALICE, "Alice")
        poll_id = await network.phone_send(ALICE, {"to": LINKED, "kind": "poll",
                                                   "poll": {"name": "Lunch?", "options": ["Pizza", "Sushi"]}})
        ev = await client.event()
        assert ev["type"] == "message"
        assert ev["data"]["id"] == poll_id and ev["data"]["kind"] == "poll"
        assert ev["data"]["poll"] == {"name": "Lunch?", "options": ["Pizza", "Sushi"], "selectable_count": 1}
        assert ev["data"]["push_name"] == "Alice"
        await network.phone_send(ALICE, {"to": LINKED, "kind": "poll_vote", "target_id": poll_id,
                                         "options": ["Sushi"]})
        vote = (await client.event())["data"]
        assert (vote["kind"], vote["target_id"], vote["options"]) == ("poll_vote", poll_id, ["Sushi"])
        picture = base64.b64encode(b"GIF89a").decode()
        await network.phone_send(ALICE, {"to": LINKED, "kind": "view_once",
                                         "media": {"data": picture, "mimetype": "image/gif"}, "ephemeral": True})
        once = (await client.event())["data"]
        assert (once["kind"], once["view_once"], once["ephemeral"], once["ephemeral_seconds"]) == (
            "image", True, True, 604800)
        await network.phone_send(ALICE, {"to": LINKED, "text": "plain"})
        plain = (await client.event())["data"]
        assert "view_once" not in plain and "ephemeral" not in plain
        await client.ws.close()


@pytest.mark.asyncio
async def test_new_send_kinds_refuse_bad_input() -> None:
    async with running_network() as network:
        client, _ = await linked_client(network)
        await network.add_phone(ALICE, "Alice")
        send = f"/_sandbox/phones/{ALICE}/send"
        for body, words in [
            ({"kind": "poll"}, "poll needs"),
            ({"kind": "poll", "poll": {"name": "x", "options": ["one"]}}, "2 to 12"),
            ({"kind": "poll", "poll": {"name": "x", "options": ["a", "a"]}}, "distinct"),
            ({"kind": "poll_vote", "options": ["a"]}, "target_id"),
            ({"kind": "poll_vote", "target_id": "X", "options": "a"}, "options"),
            ({"kind": "view_once"}, "needs media"),
            ({"kind": "view_once", "media": {"data": "AA==", "mimetype": "application/pdf"}}, "view_once media"),
            ({"text": "hi", "ephemeral": "yes"}, "ephemeral"),
            ({"text": "hi", "ephemeral": True, "ephemeral_seconds": -1}, "ephemeral_seconds"),
        ]:
            data = await network.post(send, {"to": LINKED, **body}, expect=400)
            assert words in data["error"], (body, data)
        await client.ws.close()


@pytest.mark.asyncio
async def test_a_call_offers_then_terminates_and_the_app_can_reject_it() -> None:
    async with running_network() as network:
        client, _ = await linked_client(network)
        await network.add_phone(ALICE, "Alice")
        data = await network.post(f"/_sandbox/phones/{ALICE}/call", {"to": LINKED, "video": True,
                                                                     "outcome": "missed"}, expect=201)
        offer = await client.event()
        assert offer["type"] == "call_offer"
        assert (offer["data"]["call_id"], offer["data"]["video"], offer["data"]["push_name"]) == (
            data["id"], True, "Alice")
        assert offer["data"]["from"] == "4917011112222@s.whatsapp.net"
        end = await client.event()
        assert end["type"] == "call_terminate" and end["data"]["reason"] == "missed"
        reply = await client.call("reject_call", call_id=data["id"])
        assert reply["ok"] is True
        sent = await network.get(f"/_sandbox/phones/{ALICE}/sent")
        assert [(s["kind"], s["status"]) for s in sent] == [("call", "rejected")]
        assert network.net.calls[data["id"]]["rejected_by_app"] is True
        bad = await client.call("reject_call", call_id="nope")
        assert (bad["ok"], bad["error"]) == (False, "not_found")
        for body, words in [({"to": LINKED, "outcome": "hung"}, "outcome"), ({"to": LINKED, "video": 1}, "video"),
                            ({"to": "+19995550123"}, "not a linked number")]:
            err = await network.post(f"/_sandbox/phones/{ALICE}/call", body, expect=None)
            assert words in err["error"], (body, err)
        await client.ws.close()


@pytest.mark.asyncio
async def test_seeded_history_is_synced_in_chunks_once_after_link(tmp_path: Path) -> None:
    state_dir = tmp_path / "net"
    messages = [{"from_me": i % 2 == 0, "text": f"m{i}", "timestamp": f"2026-01-01T10:{i:02d}:00Z"}
                for i in range(30)]
    async with running_network(state_dir) as network:
        await network.post(f"/_sandbox/whatsapp/{LINKED}/history",
                           {"chats": [{"with": ALICE, "messages": messages},
                                      {"with": "+4917099990000", "messages": messages[:5]}]}, expect=201)
    async with running_network(state_dir) as network:  # seeded before the app's first start: persisted
        client, _ = await linked_client(network)
        chunks = [await client.event() for _ in range(2)]
        assert [c["type"] for c in chunks] == ["history_sync", "history_sync"]
        assert [(c["data"]["chunk"], c["data"]["total_chunks"], c["data"]["progress"]) for c in chunks] == [
            (0, 2, 50), (1, 2, 100)]
        got = [(conv["chat"], m["text"]) for c in chunks for conv in c["data"]["conversations"]
               for m in conv["messages"]]
        assert len(got) == 35 and got[0] == ("4917011112222@s.whatsapp.net", "m0")
        assert got[-1] == ("4917099990000@s.whatsapp.net", "m4")
        first = chunks[0]["data"]["conversations"][0]["messages"][0]
        assert first["from_me"] is True and first["timestamp"] == 1767261600.0
        await client.ws.close()
        # consumed once: a second link gets none
        assert network.net.history == {}
        again, _ = await linked_client(network, "s2")
        await network.add_phone(ALICE, "Alice")
        await network.phone_send(ALICE, {"to": LINKED, "text": "after"})
        assert (await again.event())["type"] == "message"
        await again.ws.close()
    for body, words in [({}, "chats"), ({"chats": [{"with": "x", "messages": []}]}, "chats[0].with"),
                        ({"chats": [{"with": ALICE, "messages": [{"from_me": 1, "text": "a",
                                                                  "timestamp": "2026-01-01T00:00:00Z"}]}]},
                         "from_me"),
                        ({"chats": [{"with": ALICE, "messages": [{"from_me": True, "text": "a",
                                                                  "timestamp": "yesterday"}]}]}, "ISO-8601"),
                        ({"chats": [{"with": ALICE, "messages": [{"from_me": True, "text": "a",
                                                                  "timestamp": "2026-01-01T00:00:00"}]}]},
                         "time zone")]:
        async with running_network() as network:
            err = await network.post(f"/_sandbox/whatsapp/{LINKED}/history", body, expect=400)
            assert words in err["error"], (body, err)


@pytest.mark.asyncio
async def test_a_second_connection_of_the_device_replaces_the_first_and_is_counted() -> None:
    async with running_network() as network:
        first, device = await linked_client(network)
        state = (await network.state())["linked_numbers"][0]
        assert state["max_concurrent_sessions"] == 1
        ws = await network.http.ws_connect(
            f"{network.url}{WS_PATH}?session=s1&jid=15550001000@s.whatsapp.net&device={device}")
        second = RawClient(ws)
        await second.frame("connected")
        assert (await first.frame())["op"] == "stream_replaced"
        state = (await network.state())["linked_numbers"][0]
        assert (state["max_concurrent_sessions"], state["state"]) == (2, "connected")
        await first.ws.close()
        await ws.close()
