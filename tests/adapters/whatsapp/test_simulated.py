"""SimulatedTransport against the simulated network over real loopback WebSockets."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path

import pytest

from ghl_desktop.adapters.whatsapp.simulated import SimulatedTransport
from ghl_desktop.core.errors import NotOnWhatsApp, SessionNotConnected
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import (
    Connected,
    ConnectFailed,
    IncomingMessage,
    OutgoingMedia,
    Paired,
    PresenceKind,
    QrCode,
    Receipt,
    ReceiptKind,
)
from tests.sandbox.wa_harness import Network, Recorder, running_network, wait_until

LINKED = "+15550001000"
ALICE = "+4917011112222"


async def paired_transport(network: Network, store: Path, phone: str = LINKED,
                           recorder: Recorder | None = None) -> tuple[SimulatedTransport, Recorder]:
    rec = recorder or Recorder()
    transport = SimulatedTransport("s1", network.url, rec, store)
    await transport.start()
    qr = await rec.next(QrCode)
    await network.post("/_sandbox/whatsapp/scan", {"qr": qr.code, "phone": phone})
    await rec.next(Connected)
    return transport, rec


@pytest.mark.asyncio
async def test_qr_codes_rotate_and_a_scan_pairs_and_is_remembered(tmp_path: Path) -> None:
    store = tmp_path / "s1.json"
    async with running_network() as network:
        rec = Recorder()
        transport = SimulatedTransport("s1", network.url, rec, store)
        await transport.start()
        first = await rec.next(QrCode)
        second = await rec.next(QrCode, 2)
        assert first.code != second.code and first.code.startswith("SIMQR:")
        assert first.expires_in > second.expires_in  # the first code lives longer, as on WhatsApp
        # a rotated-away code no longer pairs
        gone = await network.post("/_sandbox/whatsapp/scan", {"qr": first.code, "phone": LINKED}, expect=410)
        assert "expired" in gone["error"]
        latest = rec.of(QrCode)[-1]
        await network.post("/_sandbox/whatsapp/scan", {"qr": latest.code, "phone": LINKED})
        paired = await rec.next(Paired)
        assert paired.jid == "15550001000@s.whatsapp.net" and paired.phone == LINKED
        connected = await rec.next(Connected)
        assert connected.jid == paired.jid
        assert await network.linked_state(LINKED) == "connected"
        # the engine store remembers the device, readable by the owner only
        assert json.loads(store.read_text())["jid"] == paired.jid
        assert stat.S_IMODE(store.stat().st_mode) == 0o600
        await transport.stop()
        assert await network.linked_state(LINKED) == "offline"

        # a new transport object with the same store resumes without any QR code
        rec2 = Recorder()
        again = SimulatedTransport("s1", network.url, rec2, store)
        await again.start()
        await rec2.next(Connected)
        assert rec2.of(QrCode) == []
        await again.stop()


@pytest.mark.asyncio
async def test_unscanned_qr_codes_run_out(tmp_path: Path) -> None:
    async with running_network() as network:
        rec = Recorder()
        transport = SimulatedTransport("s1", network.url, rec, tmp_path / "s.json")
        await transport.start()
        failed = await rec.next(ConnectFailed)
        assert failed.permanent and "QR" in failed.reason
        assert len(rec.of(QrCode)) == network.net.config.qr_count
        await transport.stop()


@pytest.mark.asyncio
async def test_pair_by_phone_code(tmp_path: Path) -> None:
    async with running_network() as network:
        rec = Recorder()
        transport = SimulatedTransport("s1", network.url, rec, tmp_path / "s.json")
        await transport.start()
        await rec.next(QrCode)
        code = await transport.pair_phone(LINKED)
        assert len(code) == 9 and code[4] == "-"
        wrong = await network.post("/_sandbox/whatsapp/pair-code", {"phone": LINKED, "code": "AAAA-AAAA"}, expect=400)
        assert wrong["error"] == "wrong pairing code"
        await network.post("/_sandbox/whatsapp/pair-code", {"phone": LINKED, "code": code.lower()})
        assert (await rec.next(Paired)).phone == LINKED
        await rec.next(Connected)
        await transport.stop()


@pytest.mark.asyncio
async def test_every_message_kind_arrives_as_the_right_incoming_message(tmp_path: Path) -> None:
    async with running_network() as network:
        transport, rec = await paired_transport(network, tmp_path / "s.json")
        await network.add_phone(ALICE, "Alice")
        await network.add_phone("+447700900123", "Lid Larry", lid="987654321012345")
        await network.add_phone("+33612345678", "Hidden Hugo", lid_only=True)
        png = b"\x89PNG fake image bytes"
        b64 = base64.b64encode(png).decode()

        async def send(body: dict[str, object], sender: str = ALICE) -> str:
            return await network.phone_send(sender, {"to": LINKED, **body})

        text_id = await send({"text": "hello"})
        await send({"text": "answer", "reply_to": text_id})
        await send({"text": "look", "media": {"data": b64, "mimetype": "image/png", "kind": "image"}})
        await send({"media": {"data": b64, "mimetype": "video/mp4", "caption": "clip"}})
        await send({"media": {"data": b64, "mimetype": "audio/mpeg"}})
        await send({"kind": "voice", "media": {"data": b64, "seconds": 7}})
        await send({"kind": "document", "text": "the contract",
                    "media": {"data": b64, "mimetype": "application/pdf", "file_name": "contract.pdf"}})
        await send({"media": {"data": b64, "mimetype": "image/webp"}})
        await send({"kind": "reaction", "target_id": "3EB0OURS", "emoji": "👍"})
        await send({"kind": "reaction", "target_id": "3EB0OURS", "emoji": ""})
        await send({"kind": "edit", "target_id": text_id, "text": "hello again"})
        await send({"kind": "revoke", "target_id": text_id})
        await send({"location": {"latitude": 52.52, "longitude": 13.405, "name": "Berlin"}})
        await send({"contact": {"name": "Bob", "phone": "+4915199999999"}})
        await send({"text": "in the group", "group": "120363000000000001@g.us"})
        await send({"text": "via lid"}, sender="+447700900123")
        await send({"text": "lid only"}, sender="+33612345678")
        typed = await network.post(f"/_sandbox/whatsapp/{LINKED}/send-from-phone",
                                   {"to": ALICE, "text": "typed on the phone"}, expect=201)

        got = await rec.next(IncomingMessage, 18)
        msgs = rec.of(IncomingMessage)
        assert got.id == typed["id"]
        by_kind = [m.kind for m in msgs]
        assert by_kind == [
            MessageKind.TEXT, MessageKind.TEXT, MessageKind.IMAGE, MessageKind.VIDEO, MessageKind.AUDIO,
            MessageKind.VOICE, MessageKind.DOCUMENT, MessageKind.STICKER, MessageKind.REACTION,
            MessageKind.REACTION, MessageKind.EDIT, MessageKind.REVOKE, MessageKind.LOCATION,
            MessageKind.CONTACT, MessageKind.TEXT, MessageKind.TEXT, MessageKind.TEXT, MessageKind.TEXT,
        ]
        hello, reply, image, video, audio, voice, doc, sticker, react, unreact, edit, revoke, loc, card, \
            group, via_lid, lid_only, mine = msgs
        alice_jid = "4917011112222@s.whatsapp.net"
        assert (hello.id, hello.chat, hello.sender, hello.sender_phone, hello.push_name, hello.text) == (
            text_id, alice_jid, alice_jid, ALICE, "Alice", "hello")
        assert hello.sender_lid is None and not hello.from_me and not hello.is_group
        assert reply.quoted_id == text_id
        assert image.text == "look" and image.media is not None and image.media.mimetype == "image/png"
        assert image.media.size == len(png) and await transport.download(image.media) == png
        assert video.text == "clip" and video.media is not None and video.media.mimetype == "video/mp4"
        assert audio.media is not None and audio.media.mimetype == "audio/mpeg"
        assert voice.media is not None and voice.media.seconds == 7
        assert doc.text == "the contract" and doc.media is not None and doc.media.file_name == "contract.pdf"
        assert sticker.media is not None and sticker.media.mimetype == "image/webp"
        assert (react.target_id, react.reaction) == ("3EB0OURS", "👍")
        assert (unreact.target_id, unreact.reaction) == ("3EB0OURS", "")  # removal
        assert (edit.target_id, edit.text) == (text_id, "hello again")
        assert revoke.target_id == text_id
        assert (loc.latitude, loc.longitude, loc.location_name) == (52.52, 13.405, "Berlin")
        assert card.contact_name == "Bob" and card.vcard is not None and "+4915199999999" in card.vcard
        assert group.is_group and group.chat == "120363000000000001@g.us" and group.sender_phone == ALICE
        # LID-addressed with SenderAlt: the phone is known, the chat is the phone's chat
        assert via_lid.sender == "987654321012345@lid" and via_lid.sender_lid == "987654321012345@lid"
        assert via_lid.sender_phone == "+447700900123" and via_lid.chat == "447700900123@s.whatsapp.net"
        # LID only: never a made-up phone number
        assert lid_only.sender.endswith("@lid") and lid_only.sender_phone is None
        assert lid_only.chat == lid_only.sender
        assert await transport.resolve_lid(lid_only.sender) is None
        assert await transport.resolve_lid(via_lid.sender) == "+447700900123"
        assert mine.from_me and mine.chat == alice_jid and mine.text == "typed on the phone"
        # the app answers in the group: every member gets it, the receipt names group and member
        answer = await transport.send_text("120363000000000001@g.us", "hello group")
        [in_group] = [e for e in await network.get(f"/_sandbox/phones/{ALICE}/inbox") if e["id"] == answer.message_id]
        assert in_group["chat"] == "120363000000000001@g.us"
        receipt = await rec.next(Receipt)
        assert (receipt.chat, receipt.sender, receipt.message_ids) == (
            "120363000000000001@g.us", "4917011112222@s.whatsapp.net", (answer.message_id,))
        # every message was acknowledged after the handler stored it
        await wait_until(lambda: network.net.linked[LINKED].queue == [], what="all acked")
        sent = await network.get(f"/_sandbox/phones/{ALICE}/sent")
        assert {s["status"] for s in sent} == {"delivered"}
        await transport.stop()


@pytest.mark.asyncio
async def test_app_messages_reach_the_phone_with_delivery_and_read_receipts(tmp_path: Path) -> None:
    async with running_network() as network:
        transport, rec = await paired_transport(network, tmp_path / "s.json")
        await network.add_phone(ALICE, "Alice")
        await network.add_phone("+4917099998888", "Offline Olga", online=False)
        assert await transport.is_on_whatsapp(ALICE) == "4917011112222@s.whatsapp.net"
        assert await transport.is_on_whatsapp("+19998887777") is None

        first = await transport.send_text(ALICE, "hi @4917011112222", message_id="3EB0CHOSEN01")
        assert first.message_id == "3EB0CHOSEN01"
        again = await transport.send_text(ALICE, "hi @4917011112222", message_id="3EB0CHOSEN01")
        assert again.message_id == first.message_id  # a retried id is deduped by the recipient
        pdf = OutgoingMedia(data=b"%PDF-1.4", mimetype="application/pdf", file_name="q.pdf",
                            kind=MessageKind.DOCUMENT, caption="quote")
        media = await transport.send_media("4917011112222@s.whatsapp.net", pdf, quoted_id="3EB0X")
        react = await transport.send_reaction(ALICE, first.message_id, "❤️", from_me=True)
        await transport.edit(ALICE, first.message_id, "hi there")
        await transport.revoke(ALICE, media.message_id)
        await transport.send_presence(ALICE, PresenceKind.COMPOSING)

        inbox = await network.get(f"/_sandbox/phones/{ALICE}/inbox")
        assert [e["kind"] for e in inbox] == ["text", "document", "reaction", "edit", "revoke"]
        text, doc = inbox[0], inbox[1]
        assert text["text"] == "hi there" and text["edited"] and text["my_reaction"] == "❤️"
        assert text["from"] == LINKED
        assert doc["revoked"] and doc["quoted_id"] == "3EB0X" and doc["text"] == "quote"
        assert doc["media"]["file_name"] == "q.pdf" and doc["media"]["size"] == 8
        fetched = await network.get(doc["media"]["url"])
        assert fetched == b"%PDF-1.4"
        assert inbox[2]["id"] == react.message_id and inbox[2]["reaction"] == "❤️"
        await wait_until(lambda: len(rec.of(Receipt)) >= 5, what="delivery receipts")
        delivered = {i for r in rec.of(Receipt) if r.kind is ReceiptKind.DELIVERED for i in r.message_ids}
        assert first.message_id in delivered and media.message_id in delivered
        statuses = {e["id"]: e["status"] for e in await network.get(f"/_sandbox/phones/{ALICE}/inbox")}
        assert set(statuses.values()) == {"delivered"}

        await network.post(f"/_sandbox/phones/{ALICE}/read", {"ids": [first.message_id]})
        read = await rec.next(Receipt, 6)
        assert read.kind is ReceiptKind.READ and read.message_ids == (first.message_id,)
        assert read.chat == "4917011112222@s.whatsapp.net"
        statuses = {e["id"]: e["status"] for e in await network.get(f"/_sandbox/phones/{ALICE}/inbox")}
        assert statuses[first.message_id] == "read" and statuses[media.message_id] == "delivered"

        # a phone that is offline keeps the message at "sent" until it comes online
        olga = await transport.send_text("+4917099998888", "are you there?")
        assert [e["status"] for e in await network.get("/_sandbox/phones/+4917099998888/inbox")] == ["sent"]
        await network.post("/_sandbox/phones/+4917099998888/online", {"online": True})
        assert [e["status"] for e in await network.get("/_sandbox/phones/+4917099998888/inbox")] == ["delivered"]
        late = await rec.next(Receipt, 7)
        assert late.message_ids == (olga.message_id,) and late.kind is ReceiptKind.DELIVERED

        with pytest.raises(NotOnWhatsApp):
            await transport.send_text("+19998887777", "nobody home")

        # the app marks the customer's message read: the phone sees its message read
        incoming = await network.phone_send(ALICE, {"to": LINKED, "text": "read me"})
        msg = await rec.next(IncomingMessage)
        await transport.mark_read(msg.chat, msg.sender, [msg.id])
        sent = await network.get(f"/_sandbox/phones/{ALICE}/sent")
        assert [(s["id"], s["status"]) for s in sent] == [(incoming, "read")]
        state = await network.state()
        assert state["linked_numbers"][0]["presence"] == {"4917011112222@s.whatsapp.net": "composing"}
        await transport.stop()
        with pytest.raises(SessionNotConnected):
            await transport.send_text(ALICE, "after stop")


@pytest.mark.asyncio
async def test_a_client_that_dies_before_storing_gets_the_messages_again_in_order(tmp_path: Path) -> None:
    store = tmp_path / "s.json"
    async with running_network() as network:
        transport, rec = await paired_transport(network, store)
        await network.add_phone(ALICE, "Alice")
        rec.block = asyncio.Event()  # the handler never finishes storing
        ids = [await network.phone_send(ALICE, {"to": LINKED, "text": f"m{i}"}) for i in range(3)]
        await wait_until(lambda: any(isinstance(e, IncomingMessage) for e in rec.seen), what="handler busy")
        await transport.stop()  # the process "dies" while the handler is still busy
        assert [q["data"]["id"] for q in network.net.linked[LINKED].queue] == ids

        # a handler that fails leaves messages unacked as well
        failing = Recorder()
        failing.fail_on = lambda e: isinstance(e, IncomingMessage) and e.text == "m1"
        t2 = SimulatedTransport("s1", network.url, failing, store)
        await t2.start()
        await failing.next(IncomingMessage, 2)
        await wait_until(lambda: [q["data"]["id"] for q in network.net.linked[LINKED].queue] == [ids[1]],
                         what="only the failed one left")
        await t2.stop()

        rec3 = Recorder()
        t3 = SimulatedTransport("s1", network.url, rec3, store)
        await t3.start()
        again = await rec3.next(IncomingMessage)
        assert again.id == ids[1] and again.text == "m1"
        await wait_until(lambda: network.net.linked[LINKED].queue == [], what="acked")
        await t3.stop()
        # nothing is delivered a third time once acked
        rec4 = Recorder()
        t4 = SimulatedTransport("s1", network.url, rec4, store)
        await t4.start()
        await rec4.next(Connected)
        await t4.stop()
        assert rec4.of(IncomingMessage) == []
