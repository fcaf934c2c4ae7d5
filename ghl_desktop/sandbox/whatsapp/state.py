"""The simulated network's state: persistence, media, views and delivery to linked clients."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from ghl_desktop.sandbox.whatsapp.model import (
    GROUP_SERVER,
    LID_SERVER,
    MEDIA_DIR,
    STATE_FILE,
    LinkedNumber,
    NetworkConfig,
    SimPhone,
    _atomic_write,
    _Conn,
)


class NetworkState:
    """All state of the simulated network, its persistence and the delivery of events to linked
    clients; :class:`~ghl_desktop.sandbox.whatsapp.network.WhatsAppNetwork` completes it."""

    def __init__(self, state_dir: Path | None, config: NetworkConfig) -> None:
        self.config = config
        self.state_dir = state_dir
        self.phones: dict[str, SimPhone] = {}
        self.linked: dict[str, LinkedNumber] = {}
        self.groups: dict[str, list[str]] = {}  # group jid -> member phones seen in it
        self.group_subjects: dict[str, str] = {}  # group jid -> its subject (name), when it has one
        self._live: dict[str, _Conn] = {}  # linked phone -> its current connection
        self._conns: set[_Conn] = set()
        self._qr_index: dict[str, _Conn] = {}
        self._pair_codes: dict[str, tuple[str, _Conn]] = {}  # phone -> (code, waiting connection)
        self._media: dict[str, bytes] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}  # linked phone -> chats offered at next link
        self.calls: dict[str, dict[str, Any]] = {}  # call id -> {from, to, outcome, rejected_by_app}
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
        self.group_subjects = {str(k): str(v) for k, v in data.get("group_subjects", {}).items()}
        self.history = {k: list(v) for k, v in data.get("history", {}).items()}

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
            "group_subjects": self.group_subjects,
            "history": self.history,
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
                    "max_concurrent_sessions": n.max_concurrent_sessions,
                    "history_pending": n.phone in self.history,
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
                {"session": c.session, "code": c.qr_code,
                 "expires_in": round(max(0.0, c.qr_expires_at - time.time()), 1) if c.qr_expires_at else None}
                for c in self._conns if c.qr_code is not None
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
