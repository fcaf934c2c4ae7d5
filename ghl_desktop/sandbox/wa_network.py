"""A simulated WhatsApp network, hosted by the sandbox server (aiohttp).

Why it exists: the product must be exercised end to end (pairing, every session state, every message
kind, receipts, durability) without a real phone or WhatsApp's servers. The network behaves like
WhatsApp where the app can tell the difference:

* an unpaired client sees rotating QR codes (first one long-lived, later ones shorter) and gives up
  after a fixed number of them; a person or a test "scans" one through the control API, or pairs with
  a phone-number code;
* each linked number has exactly one companion device; a second connection with the same device
  replaces the first (``stream_replaced``), an unlinked device is told it is logged out on connect;
* the network keeps every event (message, receipt) for a linked number until that client acks it,
  and redelivers what is unacked, in order, on the next connection;
* simulated customer phones send every message kind and receive what the app sends, with delivery
  receipts when they "receive" and read/played receipts when a test reads them.

Wire protocol (JSON text frames over ``GET /_sandbox/whatsapp/ws?session=&jid=&device=``):

server → client: ``qr {code, expires_in}``, ``qr_timeout``, ``paired {jid, phone, device}``,
``connected {jid, phone}``, ``logged_out {reason, on_connect}``, ``stream_replaced``,
``temp_ban {code, expires_at}``, ``client_outdated``, ``keepalive_lost``, ``keepalive_restored``,
``event {qid, type: message|receipt, data}``, ``reply {req, ok, result | error, message}``.

client → server: ``ack {qid}`` (after the client stored the event), ``call {req, method, args}`` with
methods ``send``, ``read``, ``presence``, ``is_on_whatsapp``, ``resolve_lid``, ``pair_phone``,
``logout``.

The HTTP control API is listed in :func:`setup_whatsapp_network` and in the README.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

log = logging.getLogger("ghl.sandbox.whatsapp")

WS_PATH = "/_sandbox/whatsapp/ws"
MAX_FRAME = 160 * 1024 * 1024  # a 100 MB document, base64-encoded, plus the envelope
PHONE_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"
GROUP_SERVER = "g.us"
STATE_FILE = "whatsapp-network.json"
MEDIA_DIR = "whatsapp-media"

MEDIA_KINDS = ("image", "video", "audio", "voice", "document", "sticker")
ALL_KINDS = (*MEDIA_KINDS, "text", "reaction", "edit", "revoke", "location", "contact")
DEFAULT_MIME = {
    "image": "image/jpeg",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "voice": "audio/ogg; codecs=opus",
    "document": "application/octet-stream",
    "sticker": "image/webp",
}
DROP_KINDS = (
    "disconnect",
    "logout",
    "ban",
    "replaced",
    "outdated",
    "keepalive_lost",
    "keepalive_restored",
    "clear",
)


@dataclass(frozen=True)
class NetworkConfig:
    """Timings of the simulated network. WhatsApp's own: first QR 60 s, then 20 s each, 6 codes."""

    qr_first_seconds: float = 60.0
    qr_next_seconds: float = 20.0
    qr_count: int = 6
    default_ban_seconds: float = 3600.0


class BadRequest(web.HTTPBadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(text=json.dumps({"error": message}), content_type="application/json")


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")


def _conflict(message: str) -> web.HTTPConflict:
    return web.HTTPConflict(text=json.dumps({"error": message}), content_type="application/json")


# --- numbers and JIDs -------------------------------------------------------------------------------

_DIGITS = re.compile(r"^\d{7,15}$")


def normalize_phone(value: object) -> str:
    """``"+1 (555) 010-0001"`` / ``"15550100001"`` / a phone JID → ``"+15550100001"``; else ValueError."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("phone must be a non-empty string")
    raw = value.strip()
    if "@" in raw:
        user, server = raw.split("@", 1)
        if server != PHONE_SERVER:
            raise ValueError(f"not a phone-number JID: {raw}")
        raw = user.split(":", 1)[0]
    digits = re.sub(r"[\s\-().]", "", raw)
    digits = digits[1:] if digits.startswith("+") else digits
    if not _DIGITS.match(digits):
        raise ValueError(f"not a phone number (7 to 15 digits, optional +): {value!r}")
    return "+" + digits


def phone_to_jid(phone: str) -> str:
    return f"{phone.lstrip('+')}@{PHONE_SERVER}"


def new_message_id() -> str:
    """Looks like a WhatsApp Web message id (``3EB0`` + hex)."""
    return "3EB0" + secrets.token_hex(8).upper()


# --- model --------------------------------------------------------------------------------------------


@dataclass
class SimPhone:
    """A simulated customer's phone."""

    phone: str
    name: str
    lid: str | None = None  # digits of its LID when the phone is LID-addressed
    share_phone: bool = True  # False ("lid_only"): WhatsApp never tells the app the phone number
    online: bool = True  # offline phones leave the app's messages at "sent"
    inbox: list[dict[str, Any]] = field(default_factory=list)  # what the app sent this phone
    sent: list[dict[str, Any]] = field(default_factory=list)  # what this phone sent (+ status)

    @property
    def jid(self) -> str:
        return phone_to_jid(self.phone)

    @property
    def address(self) -> str:
        """The JID a linked client sees this phone as."""
        return f"{self.lid}@{LID_SERVER}" if self.lid else self.jid


@dataclass
class LinkedNumber:
    """A WhatsApp number with one linked companion device (the app's session)."""

    phone: str
    device: str | None
    session: str | None = None
    logged_out: bool = False
    banned_until: float | None = None  # epoch seconds
    outdated: bool = False
    refuse_connects: int = 0
    connect_attempts: int = 0
    #: events waiting for the client's ack, oldest first: {qid, type, data}
    queue: list[dict[str, Any]] = field(default_factory=list)
    presence: dict[str, str] = field(default_factory=dict)

    @property
    def jid(self) -> str:
        return phone_to_jid(self.phone)


class _Conn:
    """One client WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, session: str) -> None:
        self.ws = ws
        self.session = session
        self.phone: str | None = None  # the linked number once attached
        self.qr_code: str | None = None
        self.qr_task: asyncio.Task[None] | None = None
        self.sent_qids: set[str] = set()
        self.lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_json(frame)

    async def close(self, frame: dict[str, Any] | None = None) -> None:
        if frame is not None:
            await self.send(frame)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close()


class WhatsAppNetwork:
    """All state of the simulated network; one per sandbox app."""

    def __init__(self, state_dir: Path | None, config: NetworkConfig) -> None:
        self.config = config
        self.state_dir = state_dir
        self.phones: dict[str, SimPhone] = {}
        self.linked: dict[str, LinkedNumber] = {}
        self.groups: dict[str, list[str]] = {}  # group jid -> member phones seen in it
        self._live: dict[str, _Conn] = {}  # linked phone -> its current connection
        self._conns: set[_Conn] = set()
        self._qr_index: dict[str, _Conn] = {}
        self._pair_codes: dict[str, tuple[str, _Conn]] = {}  # phone -> (code, waiting connection)
        self._media: dict[str, bytes] = {}
        self._qid = 0
        self.http: aiohttp.ClientSession | None = None
        if state_dir is not None:
            self._load()

    # --- persistence -------------------------------------------------------------------------------

    def _state_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / STATE_FILE

    def _load(self) -> None:
        path = self._state_path()
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise RuntimeError(f"{path} is not valid JSON ({exc}); move it away to start empty") from exc
        self._qid = int(data.get("qid", 0))
        for item in data.get("phones", []):
            phone = SimPhone(**item)
            self.phones[phone.phone] = phone
        for item in data.get("linked", []):
            number = LinkedNumber(**item)
            self.linked[number.phone] = number
        self.groups = {k: list(v) for k, v in data.get("groups", {}).items()}

    def save(self) -> None:
        """Write the whole state atomically (temp file, fsync, rename): a crash keeps old or new."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "qid": self._qid,
            "phones": [asdict(p) for p in self.phones.values()],
            "linked": [asdict(n) for n in self.linked.values()],
            "groups": self.groups,
        }
        _atomic_write(self._state_path(), json.dumps(data, ensure_ascii=False).encode("utf-8"))

    def put_media(self, data: bytes) -> str:
        handle = secrets.token_hex(12)
        self._media[handle] = data
        if self.state_dir is not None:
            (self.state_dir / MEDIA_DIR).mkdir(parents=True, exist_ok=True)
            _atomic_write(self.state_dir / MEDIA_DIR / handle, data)
        return handle

    def get_media(self, handle: str) -> bytes | None:
        if handle in self._media:
            return self._media[handle]
        if self.state_dir is not None and re.fullmatch(r"[0-9a-f]{24}", handle):
            path = self.state_dir / MEDIA_DIR / handle
            if path.exists():
                return path.read_bytes()
        return None

    def _next_qid(self) -> str:
        self._qid += 1
        return f"q{self._qid}"

    # --- views -------------------------------------------------------------------------------------

    def number_state(self, number: LinkedNumber) -> str:
        if number.logged_out:
            return "logged_out"
        if number.banned_until is not None and number.banned_until > time.time():
            return "banned"
        if number.outdated:
            return "outdated"
        return "connected" if number.phone in self._live else "offline"

    def state(self) -> dict[str, Any]:
        return {
            "linked_numbers": [
                {
                    "phone": n.phone,
                    "jid": n.jid,
                    "state": self.number_state(n),
                    "session": n.session,
                    "pending": len(n.queue),
                    "connect_attempts": n.connect_attempts,
                    "banned_until": n.banned_until,
                    "presence": dict(n.presence),
                }
                for n in self.linked.values()
            ],
            "phones": [
                {
                    "phone": p.phone,
                    "name": p.name,
                    "jid": p.jid,
                    "lid": f"{p.lid}@{LID_SERVER}" if p.lid else None,
                    "lid_only": bool(p.lid) and not p.share_phone,
                    "online": p.online,
                }
                for p in self.phones.values()
            ],
            "pending_qr": [
                {"session": c.session, "code": c.qr_code} for c in self._conns if c.qr_code is not None
            ],
            "pair_codes": [{"phone": phone, "session": c.session} for phone, (_, c) in self._pair_codes.items()],
        }

    # --- delivery to linked clients ----------------------------------------------------------------

    async def enqueue(self, number: LinkedNumber, kind: str, data: dict[str, Any]) -> str:
        """Keep the event until the client acks it; push it now when the client is connected."""
        qid = self._next_qid()
        number.queue.append({"qid": qid, "type": kind, "data": data})
        self.save()
        await self._pump(number)
        return qid

    async def _pump(self, number: LinkedNumber) -> None:
        """Send every queued event the current connection has not had yet, in queue order."""
        conn = self._live.get(number.phone)
        if conn is None:
            return
        async with conn.lock:
            for item in list(number.queue):
                if item["qid"] in conn.sent_qids:
                    continue
                conn.sent_qids.add(item["qid"])
                await conn.send({"op": "event", **item})

    def _ack(self, number: LinkedNumber, qid: str) -> None:
        for i, item in enumerate(number.queue):
            if item["qid"] == qid:
                del number.queue[i]
                if item["type"] == "message":
                    self._mark_phone_sent(item["data"]["id"], "delivered")
                self.save()
                return

    def _mark_phone_sent(self, message_id: str, status: str) -> int:
        """A phone's own message reached the app (delivered) or the app read it."""
        order = ("sent", "delivered", "read", "played")
        changed = 0
        for phone in self.phones.values():
            for entry in phone.sent:
                if entry["id"] == message_id and order.index(status) > order.index(entry["status"]):
                    entry["status"] = status
                    changed += 1
        return changed

    # --- connections -------------------------------------------------------------------------------

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        session = request.query.get("session", "")
        jid = request.query.get("jid") or None
        device = request.query.get("device") or None
        number: LinkedNumber | None = None
        if jid:
            try:
                phone = normalize_phone(jid)
            except ValueError as exc:
                raise BadRequest(str(exc)) from exc
            number = self.linked.get(phone)
            if number is not None:
                number.connect_attempts += 1
                if number.refuse_connects > 0:
                    number.refuse_connects -= 1
                    self.save()
                    raise web.HTTPServiceUnavailable(text="simulated outage")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        conn = _Conn(ws, session)
        self._conns.add(conn)
        try:
            if jid:
                await self._attach(conn, number, device)
            else:
                conn.qr_task = asyncio.get_running_loop().create_task(self._qr_loop(conn))
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(frame.data)
                except ValueError:
                    continue
                await self._on_frame(conn, payload)
        finally:
            self._detach(conn)
        return ws

    async def _attach(self, conn: _Conn, number: LinkedNumber | None, device: str | None) -> None:
        if number is None or number.logged_out or number.device is None or number.device != device:
            await conn.close({"op": "logged_out", "reason": "device not linked", "on_connect": True})
            return
        if number.banned_until is not None and number.banned_until > time.time():
            await conn.close({"op": "temp_ban", "code": 101, "expires_at": number.banned_until})
            return
        if number.outdated:
            await conn.close({"op": "client_outdated"})
            return
        old = self._live.get(number.phone)
        if old is not None and old is not conn:
            old.phone = None
            await old.close({"op": "stream_replaced"})
        conn.phone = number.phone
        number.session = conn.session or number.session
        self._live[number.phone] = conn
        self.save()
        await conn.send({"op": "connected", "jid": number.jid, "phone": number.phone})
        await self._pump(number)
        await self._deliver_leftovers(number)

    async def _deliver_leftovers(self, number: LinkedNumber) -> None:
        """Messages from this number that an online phone holds but never receipted: the process died
        between storing a send and delivering it (in sandbox mode the network runs in the app's
        process). A real phone would have received them; it does now."""
        for phone in list(self.phones.values()):
            if not phone.online:
                continue
            ids = [e["id"] for e in phone.inbox if e["status"] == "sent" and e["from"] == number.phone]
            if ids:
                await self.phone_receipt(phone, ids, "delivered", number.phone)

    def _detach(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        if conn.qr_task is not None:
            conn.qr_task.cancel()
        if conn.qr_code is not None:
            self._qr_index.pop(conn.qr_code, None)
            conn.qr_code = None
        for phone, (_, waiting) in list(self._pair_codes.items()):
            if waiting is conn:
                del self._pair_codes[phone]
        if conn.phone is not None and self._live.get(conn.phone) is conn:
            del self._live[conn.phone]

    async def _qr_loop(self, conn: _Conn) -> None:
        cfg = self.config
        for index in range(cfg.qr_count):
            lifetime = cfg.qr_first_seconds if index == 0 else cfg.qr_next_seconds
            code = "SIMQR:" + secrets.token_urlsafe(18)
            if conn.qr_code is not None:
                self._qr_index.pop(conn.qr_code, None)
            conn.qr_code = code
            self._qr_index[code] = conn
            await conn.send({"op": "qr", "code": code, "expires_in": lifetime})
            await asyncio.sleep(lifetime)
        if conn.qr_code is not None:
            self._qr_index.pop(conn.qr_code, None)
            conn.qr_code = None
        conn.qr_task = None
        await conn.close({"op": "qr_timeout"})

    async def link(self, conn: _Conn, phone: str) -> LinkedNumber:
        """The phone scanned this connection's QR (or typed its pairing code)."""
        if conn.qr_task is not None:
            conn.qr_task.cancel()
            conn.qr_task = None
        if conn.qr_code is not None:
            self._qr_index.pop(conn.qr_code, None)
            conn.qr_code = None
        self._pair_codes.pop(phone, None)
        number = self.linked.get(phone)
        if number is None:
            number = LinkedNumber(phone=phone, device=None)
            self.linked[phone] = number
        previous = self._live.get(phone)
        if previous is not None and previous is not conn:
            # one companion device per number here: the old one is unlinked
            previous.phone = None
            del self._live[phone]
            await previous.close({"op": "logged_out", "reason": "another device was linked", "on_connect": False})
        number.device = secrets.token_hex(8)
        number.logged_out = False
        number.outdated = False
        number.banned_until = None
        number.session = conn.session
        self.save()
        await conn.send({"op": "paired", "jid": number.jid, "phone": phone, "device": number.device})
        await self._attach(conn, number, number.device)
        return number

    # --- client calls ------------------------------------------------------------------------------

    async def _on_frame(self, conn: _Conn, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        if op == "ack":
            number = self.linked.get(conn.phone or "")
            if number is not None and isinstance(payload.get("qid"), str):
                self._ack(number, payload["qid"])
            return
        if op != "call":
            return
        req = payload.get("req")
        method = payload.get("method")
        args = payload.get("args") or {}
        after: list[Any] = []
        try:
            result = await self._call(conn, str(method), args, after)
            reply: dict[str, Any] = {"op": "reply", "req": req, "ok": True, "result": result}
        except _CallError as exc:
            reply = {"op": "reply", "req": req, "ok": False, "error": exc.code, "message": exc.message}
        await conn.send(reply)
        for step in after:
            await step()

    async def _call(self, conn: _Conn, method: str, args: dict[str, Any], after: list[Any]) -> Any:
        if method == "pair_phone":
            if conn.phone is not None or conn.qr_task is None:
                raise _CallError("bad_request", "this connection is already paired")
            try:
                phone = normalize_phone(args.get("phone"))
            except ValueError as exc:
                raise _CallError("bad_request", str(exc)) from exc
            alphabet = "ABCDEFGHJKLMNPQRSTVWXYZ123456789"
            code = "".join(secrets.choice(alphabet) for _ in range(8))
            code = f"{code[:4]}-{code[4:]}"
            self._pair_codes[phone] = (code, conn)
            return code
        if method == "is_on_whatsapp":
            try:
                phone = normalize_phone(args.get("phone"))
            except ValueError:
                return None
            if phone in self.phones or phone in self.linked:
                return phone_to_jid(phone)
            return None
        if method == "resolve_lid":
            lid = str(args.get("lid") or "").split("@", 1)[0]
            for p in self.phones.values():
                if p.lid and p.lid == lid and p.share_phone:
                    return p.phone
            return None
        number = self.linked.get(conn.phone or "")
        if number is None:
            raise _CallError("not_connected", "not paired")
        if method == "send":
            return await self._app_send(number, args, after)
        if method == "read":
            ids = [str(i) for i in args.get("ids") or []]
            kind = "played" if args.get("kind") == "played" else "read"
            changed = 0
            for message_id in ids:
                changed += self._mark_phone_sent(message_id, kind)
            self.save()
            return {"updated": changed}
        if method == "presence":
            number.presence[str(args.get("chat"))] = str(args.get("state"))
            return None
        if method == "logout":
            number.logged_out = True
            number.device = None
            number.queue.clear()
            self.save()

            async def close() -> None:
                self._live.pop(number.phone, None)
                conn.phone = None
                await conn.close()

            after.append(close)
            return None
        raise _CallError("bad_request", f"unknown method {method!r}")

    def _recipients(self, chat: str) -> tuple[list[SimPhone], str]:
        """Phones a message to ``chat`` reaches, and the chat JID as stored in their inboxes."""
        if chat.endswith("@" + GROUP_SERVER):
            members = [self.phones[p] for p in self.groups.get(chat, []) if p in self.phones]
            if not members:
                raise _CallError("not_on_whatsapp", f"unknown group {chat}")
            return members, chat
        if chat.endswith("@" + LID_SERVER):
            lid = chat.split("@", 1)[0]
            for p in self.phones.values():
                if p.lid == lid:
                    return [p], chat
            raise _CallError("not_on_whatsapp", f"{chat} is not on WhatsApp")
        try:
            phone = normalize_phone(chat)
        except ValueError as exc:
            raise _CallError("bad_request", str(exc)) from exc
        if phone not in self.phones:
            raise _CallError("not_on_whatsapp", f"{phone} is not on WhatsApp")
        return [self.phones[phone]], phone_to_jid(phone)

    async def _app_send(self, number: LinkedNumber, args: dict[str, Any], after: list[Any]) -> dict[str, Any]:
        kind = str(args.get("kind") or "text")
        if kind not in ALL_KINDS:
            raise _CallError("bad_request", f"unknown kind {kind!r}")
        recipients, chat = self._recipients(str(args.get("to") or ""))
        message_id = str(args.get("id") or new_message_id())
        now = time.time()
        media: dict[str, Any] | None = None
        if kind in MEDIA_KINDS:
            try:
                data = base64.b64decode(str(args.get("data") or ""), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _CallError("bad_request", "media data must be base64") from exc
            handle = self.put_media(data)
            media = {
                "kind": kind,
                "mimetype": args.get("mimetype") or DEFAULT_MIME[kind],
                "file_name": args.get("file_name"),
                "size": len(data),
                "handle": handle,
                "url": f"/_sandbox/whatsapp/media/{handle}",
            }
        entry_base = {
            "id": message_id,
            "from": number.phone,
            "from_jid": number.jid,
            "chat": chat,
            "kind": kind,
            "text": args.get("text"),
            "media": media,
            "quoted_id": args.get("quoted_id"),
            "target_id": args.get("target_id"),
            "reaction": args.get("emoji") if kind == "reaction" else None,
            "status": "sent",
            "timestamp": now,
            "received_at": now,
        }
        stored_ts = now
        fresh: list[SimPhone] = []
        for phone in recipients:
            existing = next((e for e in phone.inbox if e["id"] == message_id and e["from"] == number.phone), None)
            if existing is not None:  # the same id again: the recipient dedupes, as WhatsApp does
                stored_ts = existing["timestamp"]
                continue
            phone.inbox.append(dict(entry_base))
            self._apply_effect(phone, entry_base)
            fresh.append(phone)
        self.save()

        async def deliver() -> None:
            for phone in fresh:
                if phone.online:
                    await self._deliver_to_phone(phone, [message_id], number.phone)

        after.append(deliver)
        return {"id": message_id, "timestamp": stored_ts}

    @staticmethod
    def _apply_effect(phone: SimPhone, entry: dict[str, Any]) -> None:
        """Edits, revokes and reactions change the message they target, as the phone shows it."""
        target = next((e for e in phone.inbox if e["id"] == entry.get("target_id")), None)
        if target is None:
            return
        if entry["kind"] == "edit":
            target["text"] = entry["text"]
            target["edited"] = True
        elif entry["kind"] == "revoke":
            target["revoked"] = True
        elif entry["kind"] == "reaction":
            target["my_reaction"] = entry["reaction"] or None

    async def _deliver_to_phone(self, phone: SimPhone, ids: list[str], linked_phone: str) -> None:
        """The phone received these messages: status ``delivered`` and a receipt to the sender."""
        await self.phone_receipt(phone, ids, "delivered", linked_phone)

    async def phone_receipt(self, phone: SimPhone, ids: list[str], kind: str, only_from: str | None) -> int:
        """Move the phone's copies of ``ids`` to ``kind`` and queue a receipt to each linked sender."""
        order = ("sent", "delivered", "read", "played")
        by_sender: dict[tuple[str, str], list[str]] = {}
        for entry in phone.inbox:
            if entry["id"] not in ids or (only_from is not None and entry["from"] != only_from):
                continue
            if order.index(kind) > order.index(entry["status"]):
                entry["status"] = kind
                group = entry["chat"] if entry["chat"].endswith("@" + GROUP_SERVER) else ""
                by_sender.setdefault((entry["from"], group), []).append(entry["id"])
        # the new statuses and the receipts they owe are saved together: a crash in between would
        # leave a "delivered" message whose sender never hears of it
        notify: list[LinkedNumber] = []
        for (sender, group), message_ids in by_sender.items():
            number = self.linked.get(sender)
            if number is None or number.logged_out:
                continue
            notify.append(number)
            number.queue.append({
                "qid": self._next_qid(),
                "type": "receipt",
                "data": {
                    # in a group the receipt names the group and the member who read it
                    "chat": group or phone.address,
                    "chat_alt": phone.jid if not group and phone.lid and phone.share_phone else None,
                    "sender": phone.address,
                    "ids": message_ids,
                    "kind": kind,
                    "timestamp": time.time(),
                },
            })
        self.save()
        for number in notify:
            await self._pump(number)
        return sum(len(v) for v in by_sender.values())

    # --- messages from phones ----------------------------------------------------------------------

    async def build_message(self, body: dict[str, Any], *, sender: SimPhone | None, linked: LinkedNumber,
                            chat_phone: SimPhone | None) -> dict[str, Any]:
        """A wire message from a customer phone (``sender``) or typed on the linked phone itself
        (``sender`` None, ``chat_phone`` = the customer it was typed to)."""
        kind = body.get("kind")
        media_in = body.get("media")
        if kind is None:
            if isinstance(media_in, dict):
                kind = media_in.get("kind") or _kind_for_mime(str(media_in.get("mimetype") or ""))
            elif "location" in body:
                kind = "location"
            elif "contact" in body:
                kind = "contact"
            else:
                kind = "text"
        if kind not in ALL_KINDS:
            raise BadRequest(f"unknown kind {kind!r}; one of {', '.join(ALL_KINDS)}")
        text = body.get("text")
        if text is not None and not isinstance(text, str):
            raise BadRequest("text must be a string")
        group = body.get("group")
        message: dict[str, Any] = {
            "id": str(body.get("id") or new_message_id()),
            "kind": kind,
            "timestamp": time.time(),
            "text": text,
            "quoted_id": body.get("reply_to"),
            "from_me": sender is None,
            "is_group": bool(group),
        }
        if sender is not None:
            message["sender"] = sender.address
            message["sender_alt"] = sender.jid if sender.lid and sender.share_phone else None
            message["push_name"] = sender.name
            message["chat"] = sender.address
        else:
            assert chat_phone is not None
            message["sender"] = linked.jid
            message["sender_alt"] = None
            message["push_name"] = None
            message["chat"] = chat_phone.address
            message["chat_alt"] = chat_phone.jid if chat_phone.lid and chat_phone.share_phone else None
        if group:
            if not isinstance(group, str) or not re.fullmatch(r"[\d-]{5,40}@g\.us", group):
                raise BadRequest("group must look like 120363000000000000@g.us")
            message["chat"] = group
            members = self.groups.setdefault(group, [])
            if sender is not None and sender.phone not in members:
                members.append(sender.phone)
        if kind == "text":
            if not text:
                raise BadRequest("a text message needs text")
        elif kind in MEDIA_KINDS:
            if not isinstance(media_in, dict):
                raise BadRequest(f"a {kind} message needs media {{data (base64) or url, mimetype?, file_name?}}")
            data = await self._media_bytes(media_in)
            handle = self.put_media(data)
            message["media"] = {
                "mimetype": media_in.get("mimetype") or DEFAULT_MIME[kind],
                "file_name": media_in.get("file_name"),
                "size": len(data),
                "seconds": media_in.get("seconds"),
                "handle": handle,
            }
            if message["text"] is None and media_in.get("caption") is not None:
                message["text"] = str(media_in["caption"])
        elif kind in ("reaction", "edit", "revoke"):
            target = body.get("target_id")
            if not isinstance(target, str) or not target:
                raise BadRequest(f"a {kind} needs target_id (the message acted on)")
            message["target_id"] = target
            if kind == "reaction":
                emoji = body.get("emoji", "")
                if not isinstance(emoji, str):
                    raise BadRequest("emoji must be a string (empty removes the reaction)")
                message["reaction"] = emoji
                message["text"] = None
            elif kind == "edit" and not text:
                raise BadRequest("an edit needs the new text")
        elif kind == "location":
            loc = body.get("location")
            if not isinstance(loc, dict):
                raise BadRequest("a location needs location {latitude, longitude, name?}")
            try:
                message["latitude"] = float(loc["latitude"])
                message["longitude"] = float(loc["longitude"])
            except (KeyError, TypeError, ValueError) as exc:
                raise BadRequest("location needs numeric latitude and longitude") from exc
            message["location_name"] = loc.get("name")
        elif kind == "contact":
            card = body.get("contact")
            if not isinstance(card, dict) or not card.get("name"):
                raise BadRequest("a contact needs contact {name, phone? | vcard?}")
            vcard = card.get("vcard")
            if not vcard:
                tel = card.get("phone") or ""
                vcard = f"BEGIN:VCARD\nVERSION:3.0\nFN:{card['name']}\nTEL;type=CELL:{tel}\nEND:VCARD"
            message["vcard"] = vcard
            message["contact_name"] = card["name"]
        return message

    async def _media_bytes(self, media: dict[str, Any]) -> bytes:
        if media.get("data") is not None:
            try:
                return base64.b64decode(str(media["data"]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadRequest("media.data must be base64") from exc
        url = media.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            if self.http is None or self.http.closed:
                self.http = aiohttp.ClientSession()
            try:
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    if resp.status != 200:
                        raise BadRequest(f"media.url answered HTTP {resp.status}")
                    return await resp.read()
            except aiohttp.ClientError as exc:
                raise BadRequest(f"media.url could not be fetched: {exc}") from exc
        raise BadRequest("media needs data (base64) or an http(s) url")

    # --- shutdown ----------------------------------------------------------------------------------

    async def shutdown(self, _app: web.Application | None = None) -> None:
        for conn in list(self._conns):
            if conn.qr_task is not None:
                conn.qr_task.cancel()
            with contextlib.suppress(Exception):
                await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
        if self.http is not None:
            await self.http.close()


class _CallError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _kind_for_mime(mimetype: str) -> str:
    if mimetype == "image/webp":
        return "sticker"
    for prefix, kind in (("image/", "image"), ("video/", "video"), ("audio/", "audio")):
        if mimetype.startswith(prefix):
            return kind
    return "document"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --- HTTP control API -----------------------------------------------------------------------------

NETWORK_KEY = web.AppKey("ghl_whatsapp_network", WhatsAppNetwork)


def _net(request: web.Request) -> WhatsAppNetwork:
    return request.app[NETWORK_KEY]


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _phone_arg(value: object, what: str = "phone") -> str:
    try:
        return normalize_phone(value)
    except ValueError as exc:
        raise BadRequest(f"{what}: {exc}") from exc


def _linked(net: WhatsAppNetwork, value: object) -> LinkedNumber:
    phone = _phone_arg(value, "linked number")
    number = net.linked.get(phone)
    if number is None or number.logged_out:
        raise _not_found(f"{phone} is not a linked number")
    return number


def _sim_phone(net: WhatsAppNetwork, value: object) -> SimPhone:
    phone = _phone_arg(value)
    found = net.phones.get(phone)
    if found is None:
        raise _not_found(f"no simulated phone {phone}; create it with POST /_sandbox/phones")
    return found


async def _create_phone(request: web.Request) -> web.Response:
    net = _net(request)
    body = await _json(request)
    phone = _phone_arg(body.get("phone"))
    name = body.get("name") or phone
    if not isinstance(name, str):
        raise BadRequest("name must be a string")
    lid = body.get("lid")
    if lid is not None:
        lid = str(lid).split("@", 1)[0]
        if not lid.isdigit():
            raise BadRequest("lid must be digits (or <digits>@lid)")
    lid_only = bool(body.get("lid_only", False))
    if lid_only and lid is None:
        lid = str(10**14 + secrets.randbelow(9 * 10**14))
    existing = net.phones.get(phone)
    if existing is not None:
        existing.name = name
        existing.lid = lid if lid is not None else existing.lid
        existing.share_phone = not lid_only
        existing.online = bool(body.get("online", existing.online))
        created = False
    else:
        existing = SimPhone(phone=phone, name=name, lid=lid, share_phone=not lid_only,
                            online=bool(body.get("online", True)))
        net.phones[phone] = existing
        created = True
    net.save()
    return web.json_response(
        {"phone": phone, "name": name, "jid": existing.jid,
         "lid": f"{existing.lid}@{LID_SERVER}" if existing.lid else None},
        status=201 if created else 200,
    )


async def _list_phones(request: web.Request) -> web.Response:
    return web.json_response(_net(request).state()["phones"])


async def _phone_send(request: web.Request) -> web.Response:
    net = _net(request)
    sender = _sim_phone(net, request.match_info["phone"])
    body = await _json(request)
    number = _linked(net, body.get("to"))
    message = await net.build_message(body, sender=sender, linked=number, chat_phone=None)
    sender.sent.append({"id": message["id"], "to": number.phone, "kind": message["kind"],
                        "text": message.get("text"), "status": "sent", "timestamp": message["timestamp"]})
    await net.enqueue(number, "message", message)
    return web.json_response({"id": message["id"]}, status=201)


async def _phone_read(request: web.Request) -> web.Response:
    net = _net(request)
    phone = _sim_phone(net, request.match_info["phone"])
    body = await _json(request)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not ids:
        raise BadRequest("ids must be a non-empty list of message ids")
    kind = body.get("kind", "read")
    if kind not in ("read", "played"):
        raise BadRequest("kind must be read or played")
    known = {e["id"] for e in phone.inbox}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise _not_found(f"not in {phone.phone}'s inbox: {', '.join(unknown)}")
    # reading implies receiving: a phone that was offline delivers first
    await net.phone_receipt(phone, ids, "delivered", None)
    updated = await net.phone_receipt(phone, ids, kind, None)
    return web.json_response({"updated": updated})


async def _phone_online(request: web.Request) -> web.Response:
    net = _net(request)
    phone = _sim_phone(net, request.match_info["phone"])
    body = await _json(request)
    phone.online = bool(body.get("online", True))
    net.save()
    delivered = 0
    if phone.online:
        ids = [e["id"] for e in phone.inbox if e["status"] == "sent"]
        if ids:
            delivered = await net.phone_receipt(phone, ids, "delivered", None)
    return web.json_response({"phone": phone.phone, "online": phone.online, "delivered": delivered})


async def _phone_inbox(request: web.Request) -> web.Response:
    net = _net(request)
    phone = _sim_phone(net, request.match_info["phone"])
    return web.json_response(phone.inbox)


async def _phone_sent(request: web.Request) -> web.Response:
    net = _net(request)
    phone = _sim_phone(net, request.match_info["phone"])
    return web.json_response(phone.sent)


async def _scan(request: web.Request) -> web.Response:
    net = _net(request)
    body = await _json(request)
    phone = _phone_arg(body.get("phone"))
    conn: _Conn | None = None
    if body.get("qr"):
        conn = net._qr_index.get(str(body["qr"]))
        if conn is None:
            raise web.HTTPGone(
                text=json.dumps({"error": "QR code unknown or expired (they rotate)"}),
                content_type="application/json",
            )
    elif body.get("session"):
        conn = next((c for c in net._conns if c.session == body["session"] and c.qr_code), None)
        if conn is None:
            raise _not_found(f"session {body['session']} is not showing a QR code")
    else:
        raise BadRequest("give qr (the scanned payload) or session")
    number = await net.link(conn, phone)
    return web.json_response({"phone": number.phone, "jid": number.jid, "session": conn.session})


async def _pair_code(request: web.Request) -> web.Response:
    net = _net(request)
    body = await _json(request)
    phone = _phone_arg(body.get("phone"))
    pending = net._pair_codes.get(phone)
    if pending is None:
        raise _not_found(f"no pairing code was requested for {phone}")
    code, conn = pending
    typed = str(body.get("code") or "").strip().upper().replace(" ", "")
    if typed.replace("-", "") != code.replace("-", ""):
        raise BadRequest("wrong pairing code")
    number = await net.link(conn, phone)
    return web.json_response({"phone": number.phone, "jid": number.jid, "session": conn.session})


async def _send_from_phone(request: web.Request) -> web.Response:
    net = _net(request)
    number = _linked(net, request.match_info["phone"])
    body = await _json(request)
    customer = _sim_phone(net, body.get("to"))
    message = await net.build_message(body, sender=None, linked=number, chat_phone=customer)
    now = message["timestamp"]
    customer.inbox.append({
        "id": message["id"], "from": number.phone, "from_jid": number.jid, "chat": customer.jid,
        "kind": message["kind"], "text": message.get("text"), "media": message.get("media"),
        "quoted_id": message.get("quoted_id"), "target_id": message.get("target_id"),
        "reaction": message.get("reaction"), "status": "delivered" if customer.online else "sent",
        "timestamp": now, "received_at": now, "typed_on_phone": True,
    })
    await net.enqueue(number, "message", message)
    return web.json_response({"id": message["id"]}, status=201)


async def _drop(request: web.Request) -> web.Response:
    net = _net(request)
    phone = _phone_arg(request.match_info["phone"], "linked number")
    number = net.linked.get(phone)
    if number is None:
        raise _not_found(f"{phone} is not a linked number")
    body = await _json(request)
    kind = body.get("kind")
    if kind not in DROP_KINDS:
        raise BadRequest(f"kind must be one of {', '.join(DROP_KINDS)}")
    conn = net._live.get(phone)
    if kind in ("replaced", "keepalive_lost", "keepalive_restored") and conn is None:
        raise _conflict(f"{phone} has no connected client")
    if kind == "disconnect":
        refuse = body.get("refuse_connects", 0)
        if not isinstance(refuse, int) or refuse < 0:
            raise BadRequest("refuse_connects must be a non-negative integer")
        number.refuse_connects = refuse
        if conn is not None:
            net._live.pop(phone, None)
            await conn.close()
    elif kind == "logout":
        number.logged_out = True
        number.device = None
        number.queue.clear()
        if conn is not None:
            net._live.pop(phone, None)
            await conn.close({"op": "logged_out", "reason": "unlinked on the phone", "on_connect": False})
    elif kind == "ban":
        seconds = body.get("ban_seconds", net.config.default_ban_seconds)
        if not isinstance(seconds, (int, float)) or seconds <= 0:
            raise BadRequest("ban_seconds must be a positive number")
        number.banned_until = time.time() + float(seconds)
        if conn is not None:
            net._live.pop(phone, None)
            await conn.close({"op": "temp_ban", "code": 101, "expires_at": number.banned_until})
    elif kind == "replaced":
        assert conn is not None
        net._live.pop(phone, None)
        await conn.close({"op": "stream_replaced"})
    elif kind == "outdated":
        number.outdated = True
        if conn is not None:
            net._live.pop(phone, None)
            await conn.close({"op": "client_outdated"})
    elif kind in ("keepalive_lost", "keepalive_restored"):
        assert conn is not None
        await conn.send({"op": kind})
    elif kind == "clear":
        number.banned_until = None
        number.outdated = False
        number.refuse_connects = 0
    net.save()
    return web.json_response({"phone": phone, "state": net.number_state(number)})


async def _state(request: web.Request) -> web.Response:
    return web.json_response(_net(request).state())


async def _media(request: web.Request) -> web.Response:
    data = _net(request).get_media(request.match_info["handle"])
    if data is None:
        raise _not_found("no such media")
    return web.Response(body=data, content_type="application/octet-stream")


def setup_whatsapp_network(
    app: web.Application, state_dir: Path | None, *, config: NetworkConfig | None = None
) -> None:
    """Mount the simulated WhatsApp network on ``app``.

    Control API:
      POST /_sandbox/phones                          {phone, name, lid?, lid_only?, online?}
      GET  /_sandbox/phones
      POST /_sandbox/phones/{phone}/send             {to, kind?, text?, media?, reply_to?, target_id?,
                                                      emoji?, location?, contact?, group?, id?} → {id}
      POST /_sandbox/phones/{phone}/read             {ids, kind?: read|played}
      POST /_sandbox/phones/{phone}/online           {online}
      GET  /_sandbox/phones/{phone}/inbox            what the app sent this phone
      GET  /_sandbox/phones/{phone}/sent             what this phone sent (status sent/delivered/read)
      POST /_sandbox/whatsapp/scan                   {qr | session, phone}
      POST /_sandbox/whatsapp/pair-code              {phone, code}
      POST /_sandbox/whatsapp/{phone}/send-from-phone {to, ...same body as a phone's send}
      POST /_sandbox/whatsapp/{phone}/drop           {kind, ban_seconds?, refuse_connects?}
      GET  /_sandbox/whatsapp/state
      GET  /_sandbox/whatsapp/media/{handle}
      GET  /_sandbox/whatsapp/ws                     the clients' WebSocket
    """
    net = WhatsAppNetwork(state_dir, config or NetworkConfig())
    app[NETWORK_KEY] = net
    r = app.router
    r.add_post("/_sandbox/phones", _create_phone)
    r.add_get("/_sandbox/phones", _list_phones)
    r.add_post("/_sandbox/phones/{phone}/send", _phone_send)
    r.add_post("/_sandbox/phones/{phone}/read", _phone_read)
    r.add_post("/_sandbox/phones/{phone}/online", _phone_online)
    r.add_get("/_sandbox/phones/{phone}/inbox", _phone_inbox)
    r.add_get("/_sandbox/phones/{phone}/sent", _phone_sent)
    r.add_get(WS_PATH, net.ws_handler)
    r.add_post("/_sandbox/whatsapp/scan", _scan)
    r.add_post("/_sandbox/whatsapp/pair-code", _pair_code)
    r.add_get("/_sandbox/whatsapp/state", _state)
    r.add_get("/_sandbox/whatsapp/media/{handle}", _media)
    r.add_post("/_sandbox/whatsapp/{phone}/send-from-phone", _send_from_phone)
    r.add_post("/_sandbox/whatsapp/{phone}/drop", _drop)
    app.on_shutdown.append(net.shutdown)


def whatsapp_network(app: web.Application) -> WhatsAppNetwork:
    return app[NETWORK_KEY]


def whatsapp_state(app: web.Application) -> dict[str, Any]:
    """``linked_numbers`` [{phone, state, ...}] and ``phones`` [{phone, name, ...}] for GET /_sandbox/state."""
    state = app[NETWORK_KEY].state()
    return {"linked_numbers": state["linked_numbers"], "phones": state["phones"]}
