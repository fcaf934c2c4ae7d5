"""What the transport asks the engine to send, checked against a recording stand-in for neonize's
``NewAClient`` (sending needs a logged-in WhatsApp account, which a test cannot have). The stand-in
returns real neonize protobufs; the transport code under test is the real one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from neonize.proto import Neonize_pb2 as N
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as E
from neonize.utils.enum import ChatPresence, ChatPresenceMedia, ReceiptType

from ghl_desktop.adapters.whatsapp.neonize import EngineStatus, NeonizeTransport
from ghl_desktop.core.errors import NotOnWhatsApp, SessionLoggedOut, SessionNotConnected, WhatsAppError
from ghl_desktop.core.models import MessageKind
from ghl_desktop.core.whatsapp import (
    ConnectFailed,
    LoggedOut,
    MediaInfo,
    OutgoingMedia,
    PresenceKind,
    TransportEvent,
)
from tests.fakes import neonize_events as fx

ALICE = f"{fx.PHONE}@s.whatsapp.net"


class RecordingEngine:
    """Records calls the way neonize's NewAClient receives them; answers like WhatsApp would."""

    def __init__(self, *, fail_send: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_send = fail_send
        self.uuid = b"recording"
        self.me = N.Device(JID=fx.jid(fx.OTHER_PHONE, device=7))  # neonize sets this from Go's device event

    async def send_message(self, to: N.JID, message: E.Message) -> N.SendResponse:
        if self.fail_send:
            raise RuntimeError(self.fail_send)
        self.calls.append(("send_message", (to, message)))
        return N.SendResponse(ID="3EBSENT", Timestamp=1_700_000_500)

    async def edit_message(self, chat: N.JID, message_id: str, new_message: E.Message) -> N.SendResponse:
        self.calls.append(("edit_message", (chat, message_id, new_message)))
        return N.SendResponse(ID="3EBEDIT", Timestamp=1_700_000_600)

    async def revoke_message(self, chat: N.JID, sender: N.JID, message_id: str) -> N.SendResponse:
        self.calls.append(("revoke_message", (chat, sender, message_id)))
        return N.SendResponse(ID="3EBREV", Timestamp=1_700_000_700)

    async def get_me(self) -> N.Device:
        return N.Device(JID=fx.jid(fx.OTHER_PHONE, device=7))

    async def build_document_message(self, data: bytes, **kw: Any) -> E.Message:
        self.calls.append(("build_document_message", kw))
        return E.Message(
            documentMessage=E.DocumentMessage(
                fileName=kw.get("filename"), mimetype=kw.get("mimetype"), caption=kw.get("caption")
            )
        )

    async def build_audio_message(self, data: bytes, ptt: bool = False) -> E.Message:
        self.calls.append(("build_audio_message", {"ptt": ptt}))
        return E.Message(audioMessage=E.AudioMessage(PTT=ptt))

    async def build_image_message(self, data: bytes, caption: str | None = None) -> E.Message:
        self.calls.append(("build_image_message", {"caption": caption}))
        return E.Message(imageMessage=E.ImageMessage(caption=caption))

    async def mark_read(self, *ids: str, chat: N.JID, sender: N.JID, receipt: ReceiptType) -> None:
        self.calls.append(("mark_read", (ids, chat, sender, receipt)))

    async def send_chat_presence(self, jid: N.JID, state: ChatPresence, media: ChatPresenceMedia) -> None:
        self.calls.append(("send_chat_presence", (jid, state, media)))

    async def is_on_whatsapp(self, *numbers: str) -> list[N.IsOnWhatsAppResponse]:
        self.calls.append(("is_on_whatsapp", numbers))
        return [N.IsOnWhatsAppResponse(Query=numbers[0], JID=fx.jid(numbers[0]), IsIn=numbers[0] == fx.PHONE)]

    async def download_any(self, message: E.Message) -> bytes:
        self.calls.append(("download_any", message))
        return b"\x89PNG..."

    async def get_pn_from_lid(self, jid: N.JID) -> N.JID:
        self.calls.append(("get_pn_from_lid", jid))
        return fx.jid(fx.PHONE)

    async def logout(self) -> None:
        self.calls.append(("logout", None))


def logged_in_transport(
    tmp_path: Path, engine: RecordingEngine, events: list[TransportEvent] | None = None
) -> NeonizeTransport:
    async def handler(event: TransportEvent) -> None:
        if events is not None:
            events.append(event)

    transport = NeonizeTransport(f"send-{uuid.uuid4().hex[:6]}", tmp_path / "s.db", handler)
    transport._client = engine  # the logged-in engine client
    transport._logged_in = True
    transport.status = EngineStatus.CONNECTED
    return transport


@pytest.mark.asyncio
async def test_text_is_sent_verbatim_as_a_conversation(tmp_path: Path) -> None:
    engine = RecordingEngine()
    transport = logged_in_transport(tmp_path, engine)
    result = await transport.send_text(ALICE, "call @491701234567 now")
    ((name, (to, message)),) = engine.calls
    assert name == "send_message" and (to.User, to.Server) == (fx.PHONE, "s.whatsapp.net")
    assert message == E.Message(conversation="call @491701234567 now")  # no mention, no bot tag, no preview
    assert result.message_id == "3EBSENT" and result.timestamp == datetime.fromtimestamp(1_700_000_500, tz=UTC)


@pytest.mark.asyncio
async def test_reply_carries_the_quoted_id(tmp_path: Path) -> None:
    engine = RecordingEngine()
    transport = logged_in_transport(tmp_path, engine)
    await transport.send_text("+49 170 1234567", "yes", quoted_id="3EBQ")
    _, (to, message) = engine.calls[0]
    assert to.User == fx.PHONE
    assert message.extendedTextMessage.text == "yes"
    assert message.extendedTextMessage.contextInfo.stanzaID == "3EBQ"
    assert not message.extendedTextMessage.contextInfo.mentionedJID


@pytest.mark.asyncio
async def test_audio_degrades_to_a_document_without_ffmpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = RecordingEngine()
    transport = logged_in_transport(tmp_path, engine)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no ffmpeg/ffprobe reachable
    media = OutgoingMedia(data=b"OggS...", mimetype="audio/ogg", file_name="note.ogg", kind=MessageKind.VOICE)
    with caplog.at_level("WARNING", logger="ghl.whatsapp"):
        await transport.send_media(ALICE, media, quoted_id="3EBQ")
    assert [c[0] for c in engine.calls] == ["build_document_message", "send_message"]
    assert engine.calls[0][1]["filename"] == "note.ogg" and engine.calls[0][1]["mimetype"] == "audio/ogg"
    sent = engine.calls[1][1][1]
    assert sent.documentMessage.contextInfo.stanzaID == "3EBQ"
    assert any("ffmpeg" in r.getMessage() and "document" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_voice_note_uses_ptt_when_ffmpeg_is_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ffmpeg", "ffprobe"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    engine = RecordingEngine()
    transport = logged_in_transport(tmp_path, engine)
    await transport.send_media(ALICE, OutgoingMedia(data=b"x", mimetype="audio/ogg", kind=MessageKind.VOICE))
    await transport.send_media(
        ALICE, OutgoingMedia(data=b"x", mimetype="image/png", kind=MessageKind.IMAGE, caption="c")
    )
    assert engine.calls[0] == ("build_audio_message", {"ptt": True})
    assert engine.calls[2] == ("build_image_message", {"caption": "c"})


@pytest.mark.asyncio
async def test_reaction_edit_revoke_read_presence(tmp_path: Path) -> None:
    engine = RecordingEngine()
    transport = logged_in_transport(tmp_path, engine)
    await transport.send_reaction(ALICE, "3EBT", "👍", from_me=False)
    reaction = engine.calls[-1][1][1].reactionMessage
    assert (reaction.key.ID, reaction.key.fromMe, reaction.key.remoteJID, reaction.text) == ("3EBT", False, ALICE, "👍")
    await transport.send_reaction(ALICE, "3EBT", "", from_me=False)  # removal
    assert engine.calls[-1][1][1].reactionMessage.text == ""

    edited = await transport.edit(ALICE, "3EBMINE", "fixed")
    assert engine.calls[-1][0] == "edit_message" and engine.calls[-1][1][1:] == (
        "3EBMINE",
        E.Message(conversation="fixed"),
    )
    assert edited.message_id == "3EBEDIT"

    await transport.revoke(ALICE, "3EBMINE")
    name, (chat, sender, target) = engine.calls[-1]
    assert name == "revoke_message" and target == "3EBMINE" and sender.User == fx.OTHER_PHONE  # our own number

    await transport.mark_read(ALICE, ALICE, ["A", "B"])
    name, (ids, chat, sender, receipt) = engine.calls[-1]
    assert (name, ids, chat.User, receipt) == ("mark_read", ("A", "B"), fx.PHONE, ReceiptType.READ)

    await transport.send_presence(ALICE, PresenceKind.RECORDING)
    assert engine.calls[-1][1][1:] == (
        ChatPresence.CHAT_PRESENCE_COMPOSING,
        ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO,
    )
    await transport.send_presence(ALICE, PresenceKind.PAUSED)
    assert engine.calls[-1][1][1] == ChatPresence.CHAT_PRESENCE_PAUSED


@pytest.mark.asyncio
async def test_lookups_and_download(tmp_path: Path) -> None:
    engine = RecordingEngine()
    transport = logged_in_transport(tmp_path, engine)
    assert await transport.is_on_whatsapp("+49 170 1234567") == ALICE
    assert await transport.is_on_whatsapp("+15550000000") is None
    with pytest.raises(NotOnWhatsApp):
        await transport.require_on_whatsapp("+15550000000")
    assert await transport.resolve_lid(f"{fx.LID_USER}@lid") == "+491701234567"
    assert await transport.get_me() == f"{fx.OTHER_PHONE}@s.whatsapp.net"
    image = fx.image()
    assert await transport.download(MediaInfo(handle=image.SerializeToString())) == b"\x89PNG..."
    assert engine.calls[-1] == ("download_any", image)
    with pytest.raises(WhatsAppError):
        await transport.download(MediaInfo(handle=None))


@pytest.mark.asyncio
async def test_engine_errors_map_to_domain_errors(tmp_path: Path) -> None:
    transport = logged_in_transport(tmp_path, RecordingEngine(fail_send="websocket not connected"))
    with pytest.raises(SessionNotConnected):
        await transport.send_text(ALICE, "x")
    transport = logged_in_transport(tmp_path, RecordingEngine(fail_send="server returned error 479"))
    with pytest.raises(WhatsAppError) as info:
        await transport.send_text(ALICE, "x")
    assert not info.value.transient and "479" in str(info.value)


@pytest.mark.asyncio
async def test_logout_then_calls_say_logged_out(tmp_path: Path) -> None:
    events: list[TransportEvent] = []
    engine = RecordingEngine()
    transport = logged_in_transport(tmp_path, engine, events)
    await transport.logout()
    assert isinstance(events[-1], LoggedOut) and transport.status is EngineStatus.LOGGED_OUT
    with pytest.raises(SessionLoggedOut):
        await transport.send_text(ALICE, "x")


@pytest.mark.asyncio
async def test_pairing_code_only_during_the_qr_stage(tmp_path: Path) -> None:
    async def handler(event: TransportEvent) -> None:
        return None

    transport = NeonizeTransport(f"pair-{uuid.uuid4().hex[:6]}", tmp_path / "p.db", handler)
    await transport.attach()  # engine client exists but Go has no client for it yet
    with pytest.raises(SessionNotConnected):
        await transport.pair_phone("+49 170 1234567")  # refused instead of a Go nil dereference
    await transport.stop()


@pytest.mark.asyncio
async def test_qr_not_scanned_in_time_stops_the_session(tmp_path: Path) -> None:
    import ctypes
    import threading

    events: list[TransportEvent] = []
    failed = asyncio.Event()

    async def handler(event: TransportEvent) -> None:
        events.append(event)
        if isinstance(event, ConnectFailed):
            failed.set()

    transport = NeonizeTransport(
        f"qr-{uuid.uuid4().hex[:6]}", tmp_path / "q.db", handler, qr_timeout=0.1, drain_quiet=0.02
    )
    await transport.attach()
    buf = ctypes.create_string_buffer(b"2@code")
    thread = threading.Thread(target=transport.client._NewAClient__onQr, args=(0, ctypes.addressof(buf)))
    thread.start()
    thread.join()
    await asyncio.wait_for(failed.wait(), 10)
    assert transport._qr_task is not None
    await asyncio.wait_for(transport._qr_task, 10)  # the timeout's own stop()
    assert transport.status is EngineStatus.STOPPED
    assert any(isinstance(e, ConnectFailed) and "QR" in e.reason and e.permanent for e in events)
