"""The simulated WhatsApp transport: a :class:`WhatsAppTransport` over the sandbox's simulated network.

Why it exists: the sessions service, the bridge and the UI must run end to end without a phone. It
behaves like the neonize transport where the rest of the product can tell:

* the same domain events (QR codes that rotate, paired, connected, every drop kind, messages,
  receipts) arrive through the handler in order, on the event loop; messages of different chats
  may be handled concurrently (one chat's messages one after the other, in order), every other
  event alone, after the messages before it;
* an incoming message (or receipt) is acknowledged to the network only AFTER its handler returned,
  so a client that dies before storing it gets it again on the next connection;
* the paired identity lives in a small engine store file (JSON, mode 0600) at ``store_path``, so a
  new process resumes without a scan; ``logout`` forgets it;
* it never reconnects by itself: a drop is reported as ``Disconnected`` (or ``ConnectFailed`` when
  the network cannot be reached) and the sessions service decides when to try again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from ghl_desktop.core.convert import phone_from_jid
from ghl_desktop.core.errors import (
    NotOnWhatsApp,
    SessionLoggedOut,
    SessionNotConnected,
    WhatsAppError,
    WhatsAppTransientError,
)
from ghl_desktop.core.models import MessageKind, WhatsAppSession
from ghl_desktop.core.whatsapp import (
    CallEvent,
    CallOutcome,
    ClientOutdated,
    Connected,
    ConnectFailed,
    Disconnected,
    EventHandler,
    HistoryChat,
    HistorySync,
    IncomingMessage,
    KeepAliveLost,
    KeepAliveRestored,
    LoggedOut,
    MediaInfo,
    OutgoingMedia,
    Paired,
    PresenceKind,
    QrCode,
    Receipt,
    ReceiptKind,
    SendResult,
    StreamReplaced,
    TemporarilyBanned,
    TransportEvent,
    TransportOptions,
)

WS_PATH = "/_sandbox/whatsapp/ws"
MAX_FRAME = 160 * 1024 * 1024
_STOP = object()
#: messages (of different chats) handed to the handler at once, each acked after its own handler returned
MESSAGES_IN_FLIGHT = 64
_CALLS_KEPT = 256  # offers remembered for their terminate (video flag, push name, phone)
_CALL_OUTCOMES = {"missed": CallOutcome.MISSED, "rejected": CallOutcome.REJECTED, "answered": CallOutcome.ANSWERED}


def _to_jid(chat: str) -> str:
    """Accept ``+E.164``, bare digits or a JID."""
    if "@" in chat:
        return chat
    digits = "".join(ch for ch in chat if ch.isdigit())
    return f"{digits}@s.whatsapp.net"


def _ts(value: Any) -> datetime:
    return datetime.fromtimestamp(float(value or 0.0), tz=UTC)


class DeviceStore(Protocol):
    """Where a paired device's identity lives instead of the engine store file (a cluster of workers:
    the database, so any worker resumes the number without a new scan)."""

    async def load(self) -> dict[str, Any] | None: ...
    async def save(self, data: dict[str, Any]) -> None: ...


class SecretDeviceStore:
    """The device identity as one secret (``wa-device:<session id>``) of a SecretStore — on PostgreSQL the
    cluster's sealed ``fleet_secrets`` store — its blocking calls run by ``run`` (the storage executor)."""

    def __init__(self, secrets: Any, run: Callable[..., Any], session_id: str) -> None:
        self._secrets = secrets
        self._run = run
        self.key = f"wa-device:{session_id}"

    async def load(self) -> dict[str, Any] | None:
        raw = await self._run(self._secrets.get, self.key)
        data = json.loads(raw) if raw else None
        return data if isinstance(data, dict) else None

    async def save(self, data: dict[str, Any]) -> None:
        await self._run(self._secrets.set, self.key, json.dumps(data))


class SimulatedTransport:
    """One linked number on the simulated network (see the module docstring)."""

    def __init__(
        self,
        session_id: str,
        network_url: str,
        handler: EventHandler,
        store_path: Path,
        *,
        options: TransportOptions | None = None,
        rpc_timeout: float = 30.0,
        connect_timeout: float = 20.0,
        heartbeat: float | None = 20.0,
        device_store: DeviceStore | None = None,
    ) -> None:
        self.session_id = session_id
        #: with a device store the identity lives there (loaded at each start, saved when it changes)
        self._device = device_store
        self._device_data: dict[str, Any] = {}
        self._device_dirty = False
        self.network_url = network_url.rstrip("/")
        self.handler = handler
        self.store_path = Path(store_path)
        self.options = options or TransportOptions()
        self.rpc_timeout = rpc_timeout
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.log = logging.getLogger(f"ghl.whatsapp.{session_id}")
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._req = 0
        self._stopping = False
        self._calls: dict[str, tuple[bool, str | None, str | None]] = {}  # call id -> (video, push, phone)

    # --- engine store -------------------------------------------------------------------------------

    def _read_store(self) -> dict[str, Any]:
        if self._device is not None:
            return dict(self._device_data)
        try:
            data = json.loads(self.store_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise WhatsAppError(f"engine store {self.store_path} is unreadable: {exc}") from exc
        return data if isinstance(data, dict) else {}

    def _write_store(self, data: dict[str, Any]) -> None:
        if self._device is not None:
            self._device_data, self._device_dirty = dict(data), True
            return
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.store_path.with_name(self.store_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.store_path)

    @property
    def paired_jid(self) -> str | None:
        jid = self._read_store().get("jid")
        return jid if isinstance(jid, str) else None

    # --- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (showing QR codes when unpaired). Returns once connected or once the failure has
        been reported as ``ConnectFailed``; may be called again after a drop or ``stop``."""
        await self._close_connection()
        self._stopping = False
        if self._device is not None:
            self._device_data, self._device_dirty = dict(await self._device.load() or {}), False
        store = self._read_store()
        if self._dispatcher is None or self._dispatcher.done():
            self._events = asyncio.Queue()
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        params = {"session": self.session_id, "jid": store.get("jid") or "", "device": store.get("device") or ""}
        try:
            async with asyncio.timeout(self.connect_timeout):
                self._ws = await self._http.ws_connect(
                    self.network_url + WS_PATH,
                    params=params,
                    proxy=self.options.proxy,
                    max_msg_size=MAX_FRAME,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    autoping=True,
                    heartbeat=self.heartbeat,  # a silently dead link is noticed and reported as a drop
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.log.info("could not reach the simulated network: %s", exc)
            self._events.put_nowait(ConnectFailed(reason=f"network unreachable: {exc}", permanent=False))
            return
        except ValueError as exc:  # e.g. a proxy scheme aiohttp cannot speak (socks5://)
            self._events.put_nowait(ConnectFailed(reason=f"unusable proxy or URL: {exc}", permanent=True))
            return
        self._reader = asyncio.get_running_loop().create_task(self._read(self._ws))

    async def stop(self) -> None:
        """Close the connection and stop delivering events (unacked messages stay on the network)."""
        self._stopping = True
        await self._close_connection()
        if self._dispatcher is not None and self._dispatcher is not asyncio.current_task():
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._dispatcher
        self._dispatcher = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _close_connection(self) -> None:
        ws, self._ws = self._ws, None
        reader, self._reader = self._reader, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        self._fail_pending(SessionNotConnected("the connection to WhatsApp closed"))

    def _fail_pending(self, exc: Exception) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    # --- reading ------------------------------------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Replies complete their calls at once; everything else goes, in order, to the dispatcher
        (so a handler that calls back into the transport never deadlocks the reader)."""
        final = False
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(frame.data)
                except ValueError:
                    self.log.warning("ignored a malformed frame from the network")
                    continue
                op = payload.get("op")
                if op == "reply":
                    fut = self._pending.pop(int(payload.get("req", -1)), None)
                    if fut is not None and not fut.done():
                        if payload.get("ok"):
                            fut.set_result(payload.get("result"))
                        else:
                            fut.set_exception(_call_error(payload))
                    continue
                event = self._to_event(payload)
                await self._save_device()  # a pairing is stored before anything acts on it
                if event is None:
                    continue
                if isinstance(event, (LoggedOut, StreamReplaced, TemporarilyBanned, ClientOutdated)) or (
                    isinstance(event, ConnectFailed) and event.permanent
                ):
                    final = True
                self._events.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken socket is a drop, never a crash of the app
            self.log.info("connection error: %s", exc)
        if self._ws is ws:
            self._ws = None
        self._fail_pending(SessionNotConnected("the connection to WhatsApp closed"))
        if not final and not self._stopping:
            self._events.put_nowait(Disconnected(reason="connection closed"))

    def _to_event(self, p: dict[str, Any]) -> Any:
        op = p.get("op")
        if op == "qr":
            return QrCode(code=str(p["code"]), expires_in=float(p.get("expires_in", 20.0)))
        if op == "qr_timeout":
            return ConnectFailed(reason="QR code expired", permanent=True)
        if op == "paired":
            self._write_store({"jid": p["jid"], "phone": p.get("phone"), "device": p.get("device")})
            return Paired(jid=str(p["jid"]), phone=p.get("phone"))
        if op == "connected":
            return Connected(jid=p.get("jid"))
        if op == "logged_out":
            self._forget_identity()
            where = "on connect" if p.get("on_connect") else "while connected"
            return LoggedOut(reason=f"{p.get('reason') or 'logged out'} ({where})")
        if op == "stream_replaced":
            return StreamReplaced()
        if op == "temp_ban":
            expires = p.get("expires_at")
            return TemporarilyBanned(code=int(p.get("code", 0)), expires_at=_ts(expires) if expires else None)
        if op == "client_outdated":
            return ClientOutdated()
        if op == "keepalive_lost":
            return KeepAliveLost()
        if op == "keepalive_restored":
            return KeepAliveRestored()
        if op == "event":
            return _Queued(qid=str(p["qid"]), event=self._wire_event(p.get("type"), p.get("data") or {}))
        self.log.debug("ignored frame %s", op)
        return None

    async def _save_device(self) -> None:
        if self._device is not None and self._device_dirty:
            self._device_dirty = False
            await self._device.save(dict(self._device_data))

    def _forget_identity(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            store = self._read_store()
            store.pop("jid", None)
            store.pop("device", None)
            self._write_store(store)

    def _wire_event(self, kind: Any, d: dict[str, Any]) -> TransportEvent | None:
        if kind == "receipt":
            chat = d.get("chat_alt") or d["chat"]
            return Receipt(
                chat=str(chat),
                message_ids=tuple(str(i) for i in d.get("ids", ())),
                kind=ReceiptKind(d.get("kind", "delivered")),
                timestamp=_ts(d.get("timestamp")),
                sender=d.get("sender"),
            )
        if kind in ("call_offer", "call_terminate"):
            return self._call_event(kind, d)
        if kind == "history_sync":
            return self._history_event(d)
        if kind != "message":
            return None
        return self._message(d)

    def _call_event(self, kind: str, d: dict[str, Any]) -> CallEvent:
        """One CallEvent per wire event: ``offered`` for the offer, then the terminate's outcome
        (the offer's video flag, push name and phone are remembered for it)."""
        call_id = str(d["call_id"])
        caller = str(d.get("from") or "")
        if kind == "call_offer":
            phone = phone_from_jid(d.get("from_alt")) or phone_from_jid(caller)
            known = (bool(d.get("video")), d.get("push_name"), phone)
            self._calls[call_id] = known
            while len(self._calls) > _CALLS_KEPT:
                self._calls.pop(next(iter(self._calls)))
            outcome = CallOutcome.OFFERED
        else:
            known = self._calls.pop(call_id) if call_id in self._calls else (
                bool(d.get("video")), None, phone_from_jid(caller))
            outcome = _CALL_OUTCOMES.get(str(d.get("reason")), CallOutcome.MISSED)
        video, push_name, phone = known
        return CallEvent(call_id=call_id, caller=caller, caller_phone=phone, video=video, outcome=outcome,
                         timestamp=_ts(d.get("timestamp")), push_name=push_name)

    def _history_event(self, d: dict[str, Any]) -> HistorySync:
        own = self.paired_jid
        chats = []
        for conv in d.get("conversations") or ():
            chat = str(conv.get("chat") or "")
            is_group = chat.endswith("@g.us")
            phone = None if is_group else phone_from_jid(chat)
            messages = tuple(
                IncomingMessage(
                    id=str(m["id"]),
                    chat=chat,
                    sender=(own or "") if m.get("from_me") else chat,
                    sender_phone=phone_from_jid(own) if m.get("from_me") else phone,
                    sender_lid=None,
                    push_name=None,
                    timestamp=_ts(m.get("timestamp")),
                    kind=MessageKind.TEXT,
                    text=m.get("text"),
                    from_me=bool(m.get("from_me")),
                    is_group=is_group,
                    from_history=True,
                )
                for m in sorted(conv.get("messages") or (), key=lambda m: float(m.get("timestamp") or 0.0))
            )
            chats.append(HistoryChat(chat=chat, phone=phone, name=conv.get("name"), messages=messages,
                                     is_group=is_group))
        progress = d.get("progress")
        return HistorySync(chats=tuple(chats), sync_type="INITIAL_BOOTSTRAP", chunk_order=int(d.get("chunk") or 0),
                           progress=int(progress) if progress is not None else None)

    @staticmethod
    def _message(d: dict[str, Any]) -> IncomingMessage:
        """A ``message`` wire event (every kind, incl. poll / poll_vote / view-once / ephemeral)."""
        sender = str(d.get("sender") or "")
        is_group = bool(d.get("is_group"))
        sender_alt = d.get("sender_alt")
        sender_lid = sender if sender.endswith("@lid") else None
        sender_phone = phone_from_jid(sender_alt) or phone_from_jid(sender)
        chat = str(d.get("chat") or sender)
        if not is_group and chat.endswith("@lid"):
            # as the neonize normalizer does: a 1:1 LID chat is the phone's chat when WhatsApp told us
            alt = d.get("chat_alt") if d.get("from_me") else sender_alt
            if alt:
                chat = str(alt)
        media = d.get("media")
        poll = d.get("poll")
        try:
            message_kind = MessageKind(d.get("kind", "text"))
        except ValueError:
            message_kind = MessageKind.UNSUPPORTED
        return IncomingMessage(
            id=str(d["id"]),
            chat=chat,
            sender=sender,
            sender_phone=sender_phone,
            sender_lid=sender_lid,
            push_name=d.get("push_name"),
            timestamp=_ts(d.get("timestamp")),
            kind=message_kind,
            text=d.get("text"),
            media=MediaInfo(
                mimetype=media.get("mimetype"),
                file_name=media.get("file_name"),
                size=media.get("size"),
                seconds=media.get("seconds"),
                handle=str(media["handle"]).encode("ascii"),
            )
            if isinstance(media, dict)
            else None,
            quoted_id=d.get("quoted_id"),
            target_id=d.get("target_id"),
            reaction=d.get("reaction"),
            latitude=d.get("latitude"),
            longitude=d.get("longitude"),
            location_name=d.get("location_name"),
            vcard=d.get("vcard"),
            contact_name=d.get("contact_name"),
            from_me=bool(d.get("from_me")),
            is_group=is_group,
            poll_name=poll.get("name") if isinstance(poll, dict) else None,
            poll_options=tuple(str(o) for o in poll.get("options") or ()) if isinstance(poll, dict) else (),
            poll_selected=tuple(str(o) for o in d.get("options") or ()) if message_kind is MessageKind.POLL_VOTE
            else (),
            view_once=bool(d.get("view_once")),
            ephemeral=bool(d.get("ephemeral")),
            expiration=int(d.get("ephemeral_seconds") or 604800) if d.get("ephemeral") else None,
        )

    async def _dispatch(self) -> None:
        """Hand events to the handler; ack a queued event only after ITS handler returned (the durable
        hand-off). A handler failure leaves the event unacked: the network redelivers it on the next
        connection.

        Messages of different chats are handled concurrently (up to :data:`MESSAGES_IN_FLIGHT`), so
        the intake can store several in one commit; the messages of one chat are handled one after
        the other, in order. Every other event (receipts, calls, history, connection news) waits until
        the messages before it were handled, and is handled alone."""
        chats: dict[str, asyncio.Task[None]] = {}  # chat -> its newest message task
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while True:
                item = await self._events.get()
                if isinstance(item, _Queued) and isinstance(item.event, IncomingMessage):
                    while len(in_flight) >= MESSAGES_IN_FLIGHT:
                        await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    chat = item.event.chat
                    task = asyncio.get_running_loop().create_task(self._handle_message(item, chats.get(chat)))
                    chats[chat] = task
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    task.add_done_callback(functools.partial(_forget_chat, chats, chat))
                    continue
                if in_flight:  # what came before this event is handled first
                    await asyncio.wait(set(in_flight))
                if isinstance(item, _Queued):
                    if item.event is not None and not await self._handled(item.event):
                        continue
                    await self._send_frame({"op": "ack", "qid": item.qid})
                    continue
                await self._handled(item)
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(set(in_flight))

    async def _handle_message(self, item: _Queued, before: asyncio.Task[None] | None) -> None:
        """One message: after the chat's previous one, through the handler, then acked."""
        if before is not None:
            await asyncio.wait((before,))
        assert item.event is not None
        if await self._handled(item.event):
            await self._send_frame({"op": "ack", "qid": item.qid})

    async def _handled(self, event: Any) -> bool:
        """Run the handler for ``event``; False (logged) when it failed."""
        try:
            await self.handler(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            what = "; left unacked" if isinstance(event, (IncomingMessage, Receipt, CallEvent, HistorySync)) else ""
            self.log.exception("handler failed for %s%s", type(event).__name__, what)
            return False
        return True

    async def _send_frame(self, frame: dict[str, Any]) -> bool:
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_json(frame)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        return True

    # --- calls --------------------------------------------------------------------------------------

    async def _call(self, method: str, **args: Any) -> Any:
        ws = self._ws
        if ws is None or ws.closed:
            raise SessionNotConnected("not connected to WhatsApp")
        self._req += 1
        req = self._req
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req] = fut
        if not await self._send_frame({"op": "call", "req": req, "method": method, "args": args}):
            self._pending.pop(req, None)
            raise SessionNotConnected("not connected to WhatsApp")
        try:
            return await asyncio.wait_for(fut, self.rpc_timeout)
        except TimeoutError as exc:
            self._pending.pop(req, None)
            raise WhatsAppTransientError(f"WhatsApp did not answer {method} in {self.rpc_timeout:.0f} s") from exc

    async def logout(self) -> None:
        """Unlink this device on the network and forget it locally."""
        self._stopping = True  # the network closes the socket after its reply: not a drop
        try:
            with contextlib.suppress(SessionNotConnected):
                await self._call("logout")
        finally:
            self._forget_identity()
            with contextlib.suppress(Exception):
                await self._save_device()
            await self._close_connection()
            if self._http is not None:  # a logged-out transport is not used again: release its session
                await self._http.close()
                self._http = None

    async def pair_phone(self, phone: str) -> str:
        return str(await self._call("pair_phone", phone=phone))

    async def _send(self, **args: Any) -> SendResult:
        result = await self._call("send", **args)
        return SendResult(message_id=str(result["id"]), timestamp=_ts(result["timestamp"]))

    async def send_text(
        self, chat: str, text: str, *, quoted_id: str | None = None, message_id: str | None = None
    ) -> SendResult:
        return await self._send(to=_to_jid(chat), kind="text", text=text, quoted_id=quoted_id, id=message_id)

    async def send_media(
        self, chat: str, media: OutgoingMedia, *, quoted_id: str | None = None, message_id: str | None = None
    ) -> SendResult:
        return await self._send(
            to=_to_jid(chat),
            kind=media.kind.value,
            text=media.caption,
            data=base64.b64encode(media.data).decode("ascii"),
            mimetype=media.mimetype,
            file_name=media.file_name,
            quoted_id=quoted_id,
            id=message_id,
        )

    async def send_reaction(self, chat: str, target_id: str, emoji: str, *, from_me: bool) -> SendResult:
        return await self._send(to=_to_jid(chat), kind="reaction", target_id=target_id, emoji=emoji,
                                target_from_me=from_me)

    async def edit(self, chat: str, target_id: str, text: str) -> SendResult:
        return await self._send(to=_to_jid(chat), kind="edit", target_id=target_id, text=text)

    async def revoke(self, chat: str, target_id: str) -> SendResult:
        return await self._send(to=_to_jid(chat), kind="revoke", target_id=target_id)

    async def mark_read(self, chat: str, sender: str, message_ids: list[str]) -> None:
        await self._call("read", chat=chat, sender=sender, ids=list(message_ids))

    async def send_presence(self, chat: str, presence: PresenceKind) -> None:
        await self._call("presence", chat=_to_jid(chat), state=presence.value)

    async def resolve_lid(self, lid: str) -> str | None:
        result = await self._call("resolve_lid", lid=lid)
        return str(result) if result else None

    async def is_on_whatsapp(self, phone: str) -> str | None:
        result = await self._call("is_on_whatsapp", phone=phone)
        return str(result) if result else None

    async def reject_call(self, caller: str, call_id: str) -> None:
        await self._call("reject_call", caller=_to_jid(caller), call_id=call_id)

    async def group_subject(self, jid: str) -> str | None:
        """The group's subject as the network has it (``group_info``), else None."""
        try:
            info = await self._call("group_info", jid=jid)
        except WhatsAppError:
            return None
        subject = info.get("subject") if isinstance(info, dict) else None
        return str(subject) if subject else None

    async def download(self, media: MediaInfo) -> bytes:
        if not media.handle:
            raise WhatsAppError("this media has no download handle")
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        url = f"{self.network_url}/_sandbox/whatsapp/media/{media.handle.decode('ascii')}"
        try:
            async with self._http.get(url, proxy=self.options.proxy) as resp:
                if resp.status == 404:
                    raise WhatsAppError("the media is no longer available")
                if resp.status != 200:
                    raise WhatsAppTransientError(f"media download answered HTTP {resp.status}")
                return await resp.read()
        except aiohttp.ClientError as exc:
            raise WhatsAppTransientError(f"media download failed: {exc}") from exc


def _forget_chat(chats: dict[str, asyncio.Task[None]], chat: str, task: asyncio.Task[None]) -> None:
    """A chat's message task finished: forget it unless a newer one of the chat is waiting on it."""
    if chats.get(chat) is task:
        del chats[chat]


class _Queued:
    """An event the network keeps until acked."""

    __slots__ = ("event", "qid")

    def __init__(self, qid: str, event: TransportEvent | None) -> None:
        self.qid = qid
        self.event = event


def _call_error(payload: dict[str, Any]) -> Exception:
    code = payload.get("error")
    message = str(payload.get("message") or code)
    if code == "not_on_whatsapp":
        return NotOnWhatsApp(message)
    if code == "not_connected":
        return SessionLoggedOut(message)
    return WhatsAppError(message)


def simulated_transport_factory(
    network_url: str, *, device_stores: Callable[[WhatsAppSession], DeviceStore] | None = None, **kwargs: Any
) -> Callable[[WhatsAppSession, EventHandler], SimulatedTransport]:
    """A transport factory for the sessions service: one :class:`SimulatedTransport` per session,
    with the session's store path and proxy (``device_stores``: the device identity there instead of
    the store file — a cluster's database)."""

    def make(session: WhatsAppSession, handler: EventHandler) -> SimulatedTransport:
        return SimulatedTransport(
            session.id,
            network_url,
            handler,
            Path(session.store_path),
            options=TransportOptions(proxy=session.proxy),
            device_store=None if device_stores is None else device_stores(session),
            **kwargs,
        )

    return make
