"""The simulated network's delivery queue and its persistence, at the state level (a fake WebSocket):
delivery in queue order, acks in any order, redelivery of what is unacked after a reconnect, the
phones' ticks only moving forward, and the snapshot + journal surviving a crash (no shutdown)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from ghl_desktop.sandbox.whatsapp import LinkedNumber, NetworkConfig, SimPhone, WhatsAppNetwork
from ghl_desktop.sandbox.whatsapp import state as state_module
from ghl_desktop.sandbox.whatsapp.model import STATE_FILE, _Conn

LINKED = "+15550001000"
ALICE = "+4917011112222"


class FakeWs:
    closed = False

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_json(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def qids(self) -> list[str]:
        return [f["qid"] for f in self.frames if f["op"] == "event"]


def network(state_dir: Path | None = None) -> WhatsAppNetwork:
    net = WhatsAppNetwork(state_dir, NetworkConfig())
    if LINKED not in net.linked:
        net.linked[LINKED] = LinkedNumber(phone=LINKED, device="dev")
        net.phones[ALICE] = SimPhone(phone=ALICE, name="Alice")
        net.save()
    return net


def connect(net: WhatsAppNetwork) -> FakeWs:
    ws = FakeWs()
    conn = _Conn(ws, "s1")  # type: ignore[arg-type]
    conn.phone = LINKED
    net._live[LINKED] = conn
    return ws


async def customer_sends(net: WhatsAppNetwork, message_id: str) -> str:
    """What POST /_sandbox/phones/{phone}/send does with a text."""
    net.add_sent(net.phones[ALICE], {"id": message_id, "to": LINKED, "kind": "text", "text": message_id,
                                     "status": "sent", "timestamp": 0.0, "media": None})
    return await net.enqueue(net.linked[LINKED], "message", {"id": message_id, "kind": "text", "text": message_id})


def statuses(net: WhatsAppNetwork) -> dict[str, str]:
    return {e["id"]: e["status"] for e in net.phones[ALICE].sent}


def dump(net: WhatsAppNetwork) -> dict[str, Any]:
    return {"qid": net._qid, "phones": [asdict(p) for p in net.phones.values()],
            "linked": [asdict(n) for n in net.linked.values()], "groups": net.groups, "history": net.history}


@pytest.mark.asyncio
async def test_acks_in_any_order_and_a_reconnect_redelivers_the_rest_in_order() -> None:
    net = network()
    ws = connect(net)
    qids = [await customer_sends(net, f"m{i}") for i in range(8)]
    assert ws.qids() == qids  # each pushed once, in queue order
    for qid in (qids[5], qids[0], qids[7], qids[3]):  # out of order; one twice
        net._ack(net.linked[LINKED], qid)
    net._ack(net.linked[LINKED], qids[3])
    net._ack(net.linked[LINKED], "q999999")  # unknown: ignored
    assert [item["qid"] for item in net.linked[LINKED].queue] == [qids[i] for i in (1, 2, 4, 6)]
    assert statuses(net) == {f"m{i}": ("delivered" if i in (0, 3, 5, 7) else "sent") for i in range(8)}
    # a new connection gets everything unacked, in order, then what comes next
    ws2 = connect(net)
    await net._pump(net.linked[LINKED])
    later = await customer_sends(net, "m8")
    assert ws2.qids() == [qids[i] for i in (1, 2, 4, 6)] + [later]
    assert ws.qids() == qids  # the replaced connection got nothing more


@pytest.mark.asyncio
async def test_a_phone_tick_only_moves_forward() -> None:
    net = network()
    connect(net)
    qid = await customer_sends(net, "m1")
    assert net._mark_phone_sent("m1", "read") == 1
    net._ack(net.linked[LINKED], qid)  # the late ack's "delivered" does not take "read" back
    assert statuses(net) == {"m1": "read"}
    assert net._mark_phone_sent("m1", "played") == 1
    assert net._mark_phone_sent("m1", "read") == 0
    assert statuses(net) == {"m1": "played"}


@pytest.mark.asyncio
async def test_the_state_survives_a_crash_through_the_journal(tmp_path: Path) -> None:
    net = network(tmp_path)
    connect(net)
    qids = [await customer_sends(net, f"m{i}") for i in range(5)]
    net._ack(net.linked[LINKED], qids[2])
    net._ack(net.linked[LINKED], qids[0])
    net._mark_phone_sent("m4", "read")
    net.add_inbox(net.phones[ALICE], {"id": "out1", "from": LINKED, "chat": net.phones[ALICE].jid,
                                      "status": "sent", "text": "hi"})
    await net.phone_receipt(net.phones[ALICE], ["out1"], "delivered", None)  # queues a receipt
    net.set_presence(net.linked[LINKED], "chat@s.whatsapp.net", "composing")
    net._commit()
    assert json.loads((tmp_path / STATE_FILE).read_text())["linked"][0]["queue"] == []  # in the journal
    before = dump(net)
    # no shutdown: what a SIGKILL leaves
    again = network(tmp_path)
    assert dump(again) == before
    assert [i["qid"] for i in again.linked[LINKED].queue] == [qids[1], qids[3], qids[4], f"q{again._qid}"]
    # the restarted network continues: acks, new qids after the old ones, redelivery in order
    ws = connect(again)
    await again._pump(again.linked[LINKED])
    assert ws.qids() == [i["qid"] for i in before["linked"][0]["queue"]]
    again._ack(again.linked[LINKED], qids[3])
    assert statuses(again)["m3"] == "delivered"
    assert await customer_sends(again, "m5") == f"q{before['qid'] + 1}"
    third = network(tmp_path)
    assert dump(third) == dump(again)


@pytest.mark.asyncio
async def test_a_torn_last_line_and_an_older_generations_journal_are_ignored(tmp_path: Path) -> None:
    net = network(tmp_path)
    connect(net)
    await customer_sends(net, "m1")
    kept = dump(net)
    journal = tmp_path / state_module.JOURNAL_FILE
    # a write cut short by a crash
    journal.write_bytes(journal.read_bytes() + b'{"op": "enq", "number": "+15550001000", "item": {"qid": "q9')
    assert dump(network(tmp_path)) == kept
    # a snapshot of a newer generation next to the journal of the older one (the crash came between)
    net2 = network(tmp_path)
    older = journal.read_bytes()  # its events are in the snapshots net2 writes
    await customer_sends(net2, "m2")
    net2.save()
    journal.write_bytes(older)
    assert dump(network(tmp_path)) == dump(net2)


@pytest.mark.asyncio
async def test_a_snapshot_from_before_the_journal_loads(tmp_path: Path) -> None:
    old = {"qid": 7, "phones": [{"phone": ALICE, "name": "Alice", "lid": None, "share_phone": True, "online": True,
                                 "inbox": [], "sent": [{"id": "m7", "to": LINKED, "kind": "text", "text": "x",
                                                        "status": "sent", "timestamp": 0.0, "media": None}]}],
           "linked": [{"phone": LINKED, "device": "dev", "session": "s1", "logged_out": False,
                       "banned_until": None, "outdated": False, "refuse_connects": 0, "connect_attempts": 1,
                       "max_concurrent_sessions": 1, "presence": {},
                       "queue": [{"qid": "q7", "type": "message", "data": {"id": "m7", "kind": "text"}}]}],
           "groups": {}, "group_subjects": {}, "history": {}}
    (tmp_path / STATE_FILE).write_text(json.dumps(old))
    net = network(tmp_path)
    ws = connect(net)
    await net._pump(net.linked[LINKED])
    assert ws.qids() == ["q7"]
    net._ack(net.linked[LINKED], "q7")
    assert statuses(net) == {"m7": "delivered"}
    assert await customer_sends(net, "m8") == "q8"
    assert dump(network(tmp_path)) == dump(net)


@pytest.mark.asyncio
async def test_the_journal_is_folded_into_a_snapshot_once_it_outgrows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "JOURNAL_MIN_FOLD", 0)
    net = network(tmp_path)
    connect(net)
    generations = set()
    for i in range(60):
        qid = await customer_sends(net, f"m{i}")
        if i % 3:
            net._ack(net.linked[LINKED], qid)
        generations.add(json.loads((tmp_path / STATE_FILE).read_text())["journal_gen"])
        journal = (tmp_path / state_module.JOURNAL_FILE).stat().st_size
        assert journal <= 2 * (tmp_path / STATE_FILE).stat().st_size + 4096
    assert len(generations) > 2
    assert dump(network(tmp_path)) == dump(net)
