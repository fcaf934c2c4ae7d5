"""SimulatedTransport hands messages of different chats to the handler concurrently (the intake can
store them in one commit), one chat's messages one after the other in order, and acks each only
after its own handler returned."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ghl_desktop.adapters.whatsapp.simulated import SimulatedTransport
from ghl_desktop.core.whatsapp import Connected, IncomingMessage, QrCode
from tests.sandbox.wa_harness import Network, running_network, wait_until

LINKED = "+15550001000"
ALICE = "+4917011112222"
BOB = "+4917033334444"


class Gated:
    """A handler whose messages of one chat wait for a gate; records start/end of every message."""

    def __init__(self, held_text_prefix: str) -> None:
        self.held = held_text_prefix
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.done: list[str] = []
        self.running: set[str] = set()  # chats with a handler in flight
        self.overlap = False  # two messages of one chat in the handler at once
        self.events: list[Any] = []

    async def __call__(self, event: Any) -> None:
        self.events.append(event)
        if not isinstance(event, IncomingMessage):
            return
        if event.chat in self.running:
            self.overlap = True
        self.running.add(event.chat)
        self.started.append(event.text or "")
        try:
            if (event.text or "").startswith(self.held):
                await self.gate.wait()
            await asyncio.sleep(0)
        finally:
            self.running.discard(event.chat)
        self.done.append(event.text or "")


async def _pair(network: Network, store: Path, handler: Gated) -> SimulatedTransport:
    transport = SimulatedTransport("s1", network.url, handler, store)
    await transport.start()
    await wait_until(lambda: any(isinstance(e, QrCode) for e in handler.events), what="QR")
    qr = next(e for e in handler.events if isinstance(e, QrCode))
    await network.post("/_sandbox/whatsapp/scan", {"qr": qr.code, "phone": LINKED})
    await wait_until(lambda: any(isinstance(e, Connected) for e in handler.events), what="connected")
    return transport


@pytest.mark.asyncio
async def test_chats_are_handled_concurrently_in_order_per_chat_and_acked_after_their_own_store(
        tmp_path: Path) -> None:
    async with running_network() as network:
        handler = Gated("alice")
        transport = await _pair(network, tmp_path / "s.json", handler)
        try:
            await network.add_phone(ALICE, "Alice")
            await network.add_phone(BOB, "Bob")
            alice = [await network.phone_send(ALICE, {"to": LINKED, "text": f"alice {i}"}) for i in range(3)]
            bob = [await network.phone_send(BOB, {"to": LINKED, "text": f"bob {i}"}) for i in range(3)]
            queue = network.net.linked[LINKED].queue
            # Bob's chat is not held up by Alice's message still being stored; his are acked
            await wait_until(lambda: handler.done == [f"bob {i}" for i in range(3)], what="bob's messages handled")
            await wait_until(lambda: [q["data"]["id"] for q in queue] == alice, what="bob's acked, alice's kept")
            # Alice's: only the first is in the handler, the next wait for it (order per chat)
            assert [t for t in handler.started if t.startswith("alice")] == ["alice 0"]
            handler.gate.set()
            await wait_until(lambda: queue == [], what="all acked")
            assert [t for t in handler.done if t.startswith("alice")] == [f"alice {i}" for i in range(3)]
            assert not handler.overlap
            assert len(bob) == 3
        finally:
            await transport.stop()


@pytest.mark.asyncio
async def test_a_stop_while_messages_are_in_flight_leaves_them_unacked_for_the_next_connection(
        tmp_path: Path) -> None:
    store = tmp_path / "s.json"
    async with running_network() as network:
        handler = Gated("")  # every message waits
        transport = await _pair(network, store, handler)
        await network.add_phone(ALICE, "Alice")
        await network.add_phone(BOB, "Bob")
        ids = [await network.phone_send(ALICE, {"to": LINKED, "text": "a"}),
               await network.phone_send(BOB, {"to": LINKED, "text": "b"})]
        await wait_until(lambda: sorted(handler.started) == ["a", "b"], what="both in the handler at once")
        await transport.stop()
        assert sorted(q["data"]["id"] for q in network.net.linked[LINKED].queue) == sorted(ids)

        again = Gated("never")
        t2 = SimulatedTransport("s1", network.url, again, store)
        await t2.start()
        try:
            await wait_until(lambda: network.net.linked[LINKED].queue == [], what="redelivered and acked")
            assert sorted(again.done) == ["a", "b"]
        finally:
            await t2.stop()
