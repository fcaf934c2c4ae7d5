"""The clients' side of the simulated network: their WebSocket, QR codes and pairing, their calls.

Wire protocol (JSON text frames over ``GET /_sandbox/whatsapp/ws?session=&jid=&device=``):

server → client: ``qr {code, expires_in}``, ``qr_timeout``, ``paired {jid, phone, device}``,
``connected {jid, phone}``, ``logged_out {reason, on_connect}``, ``stream_replaced``,
``temp_ban {code, expires_at}``, ``client_outdated``, ``keepalive_lost``, ``keepalive_restored``,
``event {qid, type: message|receipt, data}``, ``reply {req, ok, result | error, message}``.

client → server: ``ack {qid}`` (after the client stored the event), ``call {req, method, args}`` with
methods ``send``, ``read``, ``presence``, ``is_on_whatsapp``, ``resolve_lid``, ``pair_phone``,
``logout``, ``group_info {jid}`` (→ ``{jid, subject, participants}``; ``not_found`` for an unknown group).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from typing import Any

import aiohttp
from aiohttp import web

from ghl_desktop.sandbox.whatsapp.model import (
    ALL_KINDS,
    DEFAULT_MIME,
    GROUP_SERVER,
    LID_SERVER,
    MAX_FRAME,
    MEDIA_KINDS,
    BadRequest,
    LinkedNumber,
    SimPhone,
    _Conn,
    new_message_id,
    normalize_phone,
    phone_to_jid,
)
from ghl_desktop.sandbox.whatsapp.state import NetworkState


class _CallError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ClientProtocol(NetworkState):
    """Connections and calls of the linked clients (the app's sessions)."""

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
                self.touch()
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
        conn.phone = number.phone
        open_now = sum(1 for c in self._conns if c.phone == number.phone)
        number.max_concurrent_sessions = max(number.max_concurrent_sessions, open_now)
        old = self._live.get(number.phone)
        if old is not None and old is not conn:
            old.phone = None
            await old.close({"op": "stream_replaced"})
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
            conn.qr_expires_at = time.time() + lifetime
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
        await self._offer_history(number)
        return number

    HISTORY_CHUNK_MESSAGES = 20

    async def _offer_history(self, number: LinkedNumber) -> None:
        """History sync after a link: the seeded chats (consumed once) as ``history_sync`` events of at
        most HISTORY_CHUNK_MESSAGES messages each, with chunk/total_chunks/progress."""
        chats = self.history.pop(number.phone, None)
        if not chats:
            return
        self.touch()  # consumed: the first chunk's commit writes the state without this seed
        chunks: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        size = 0
        for chat in chats:
            messages = list(chat["messages"])
            while messages:
                room = self.HISTORY_CHUNK_MESSAGES - size
                part, messages = messages[:room], messages[room:]
                current.append({"chat": chat["chat"], "messages": part})
                size += len(part)
                if size >= self.HISTORY_CHUNK_MESSAGES:
                    chunks.append(current)
                    current, size = [], 0
            if not chat["messages"]:
                current.append({"chat": chat["chat"], "messages": []})
        if current:
            chunks.append(current)
        total = len(chunks)
        for i, conversations in enumerate(chunks):
            await self.enqueue(number, "history_sync", {
                "chunk": i, "total_chunks": total, "progress": round(100 * (i + 1) / total),
                "conversations": conversations})
        self.save()

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
        if method == "group_info":
            jid = str(args.get("jid") or "")
            if jid not in self.groups and jid not in self.group_subjects:
                raise _CallError("not_found", f"unknown group {jid}")
            return {"jid": jid, "subject": self.group_subjects.get(jid),
                    "participants": [phone_to_jid(p) for p in self.groups.get(jid, [])]}
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
            self._commit()
            return {"updated": changed}
        if method == "reject_call":
            call = self.calls.get(str(args.get("call_id") or ""))
            if call is None or call["to"] != number.phone:
                raise _CallError("not_found", f"unknown call {args.get('call_id')!r}")
            call["rejected_by_app"] = True
            call["outcome"] = "rejected"
            caller = self.phones.get(call["from"])
            if caller is not None:
                for entry in caller.sent:
                    if entry["id"] == args.get("call_id"):
                        entry["status"] = "rejected"
            self.save()
            return None
        if method == "presence":
            self.set_presence(number, str(args.get("chat")), str(args.get("state")))
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
            existing = next((e for e in map(phone.inbox.__getitem__, self.inbox_indices(phone, message_id))
                             if e["from"] == number.phone), None)
            if existing is not None:  # the same id again: the recipient dedupes, as WhatsApp does
                stored_ts = existing["timestamp"]
                continue
            self.add_inbox(phone, dict(entry_base))
            self._apply_effect(phone, entry_base)
            fresh.append(phone)
        self._commit()

        async def deliver() -> None:
            for phone in fresh:
                if phone.online:
                    await self._deliver_to_phone(phone, [message_id], number.phone)

        after.append(deliver)
        return {"id": message_id, "timestamp": stored_ts}

    def _apply_effect(self, phone: SimPhone, entry: dict[str, Any]) -> None:
        """Edits, revokes and reactions change the message they target, as the phone shows it."""
        target_id = entry.get("target_id")
        found = self.inbox_indices(phone, target_id) if isinstance(target_id, str) else []
        if not found or entry["kind"] not in ("edit", "revoke", "reaction"):
            return
        target = phone.inbox[found[0]]
        if entry["kind"] == "edit":
            target["text"] = entry["text"]
            target["edited"] = True
        elif entry["kind"] == "revoke":
            target["revoked"] = True
        elif entry["kind"] == "reaction":
            target["my_reaction"] = entry["reaction"] or None
        self.changed_inbox(phone, found[0])

    async def _deliver_to_phone(self, phone: SimPhone, ids: list[str], linked_phone: str) -> None:
        """The phone received these messages: status ``delivered`` and a receipt to the sender."""
        await self.phone_receipt(phone, ids, "delivered", linked_phone)
