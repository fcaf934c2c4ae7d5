"""The simulated network's state: persistence, media, views and delivery to linked clients.

Persistence: a snapshot (``whatsapp-network.json``, the whole state) plus a journal
(``whatsapp-network.journal``, one JSON line per change on the message path: an event queued or
acked, an entry of a phone's ``sent``/``inbox`` added or changed, a presence). Each ``_commit``
appends the changes since the last one and fsyncs, so what a caller was told (a 201, a call's reply)
survives a crash, at a cost that does not grow with the history. A full ``save`` writes a new
snapshot (atomic replace) and starts a new journal generation; the journal is folded into a snapshot
once it outgrows the last one (amortised O(1) per change). Loading reads the snapshot and replays
the journal of the same generation (a journal left from an older generation, or a torn last line, is
ignored: a crash keeps the old state or the new one). A snapshot written before the journal existed
loads unchanged.

Delivery: the queue of a linked number is in qid order (qids are increasing ``q<n>``), so a
connection keeps a cursor (the last qid it was sent) instead of a set, and an ack finds its event by
bisection.
"""

from __future__ import annotations

import bisect
import json
import os
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
        # message id -> [(phone, index in its sent list)]; phone -> message id -> indices in its inbox
        self._sent_ix: dict[str, list[tuple[str, int]]] = {}
        self._inbox_ix: dict[str, dict[str, list[int]]] = {}
        self._gen = 0  # journal generation of the last snapshot
        self._pending: list[str] = []  # journal lines not written yet
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self._snapshot_due = False  # something outside the journal's records changed
        # a process's first commit writes a snapshot: the journal it appends to is then of its generation
        self._journal_open = False
        if state_dir is not None:
            self._load()
        self._reindex()

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
        self._gen = int(data.get("journal_gen", 0))
        self._replay()

    def _journal_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / JOURNAL_FILE

    def _replay(self) -> None:
        """Apply the journal of the loaded snapshot's generation (see the module docstring)."""
        path = self._journal_path()
        if not path.exists():
            return
        lines = path.read_bytes().split(b"\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            return
        if not isinstance(header, dict) or header.get("gen") != self._gen:
            return  # a journal from before the snapshot: its changes are in the snapshot
        for raw in lines[1:]:
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                break  # a torn last line: the write the crash cut short
            self._apply(record)

    def _apply(self, r: dict[str, Any]) -> None:
        op = r["op"]
        if op == "enq":
            number = self.linked.get(r["number"])
            if number is not None:
                number.queue.append(r["item"])
            self._qid = max(self._qid, _qnum(r["item"]["qid"]))
        elif op == "ack":
            number = self.linked.get(r["number"])
            if number is not None:
                i = _queue_index(number.queue, r["qid"])
                if i is not None:
                    del number.queue[i]
        elif op in ("sent", "inbox"):
            phone = self.phones.get(r["phone"])
            if phone is not None:
                entries = phone.sent if op == "sent" else phone.inbox
                i = int(r["i"])
                if i < len(entries):
                    entries[i] = r["entry"]
                elif i == len(entries):
                    entries.append(r["entry"])
        elif op == "presence":
            number = self.linked.get(r["number"])
            if number is not None:
                number.presence[r["chat"]] = r["state"]

    def _log(self, record: dict[str, Any]) -> None:
        """A change to write at the next ``_commit`` (serialized now: entries are changed in place)."""
        if self.state_dir is not None:
            self._pending.append(json.dumps(record, ensure_ascii=False))

    def _commit(self) -> None:
        """Make every change so far durable: the journal's new lines (append, fsync), or a new
        snapshot when something outside the journal changed or the journal outgrew the snapshot."""
        if self.state_dir is None:
            return
        if (self._snapshot_due or not self._journal_open
                or self._journal_bytes > max(JOURNAL_MIN_FOLD, self._snapshot_bytes)):
            self.save()
            return
        if not self._pending:
            return
        data = ("\n".join(self._pending) + "\n").encode("utf-8")
        self._pending.clear()
        with open(self._journal_path(), "ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._journal_bytes += len(data)

    def save(self) -> None:
        """Write the whole state atomically (temp file, fsync, rename): a crash keeps old or new.
        Starts a new journal generation (the snapshot holds everything journaled so far)."""
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._gen += 1
        data = {
            "qid": self._qid,
            "phones": [asdict(p) for p in self.phones.values()],
            "linked": [asdict(n) for n in self.linked.values()],
            "groups": self.groups,
            "group_subjects": self.group_subjects,
            "history": self.history,
            "journal_gen": self._gen,
        }
        encoded = json.dumps(data, ensure_ascii=False).encode("utf-8")
        _atomic_write(self._state_path(), encoded)
        # a crash before this line leaves the older generation's journal, which loading ignores
        _atomic_write(self._journal_path(), json.dumps({"gen": self._gen}).encode("utf-8") + b"\n")
        self._pending.clear()
        self._snapshot_due = False
        self._journal_open = True
        self._snapshot_bytes = len(encoded)
        self._journal_bytes = 0

    def flush(self) -> None:
        """Commit what changed since the last commit, if anything did (at shutdown)."""
        if self._pending or self._snapshot_due:
            self._commit()

    def touch(self) -> None:
        """Something the journal has no record for changed: the next commit writes a snapshot."""
        self._snapshot_due = True

    # --- phones' sent and inbox lists (indexed by message id) ---------------------------------------

    def _reindex(self) -> None:
        self._sent_ix = {}
        self._inbox_ix = {}
        for phone in self.phones.values():
            for i, entry in enumerate(phone.sent):
                self._sent_ix.setdefault(entry["id"], []).append((phone.phone, i))
            ix = self._inbox_ix[phone.phone] = {}
            for i, entry in enumerate(phone.inbox):
                ix.setdefault(entry["id"], []).append(i)

    def add_sent(self, phone: SimPhone, entry: dict[str, Any]) -> None:
        """Append to what ``phone`` sent (journaled, indexed)."""
        i = len(phone.sent)
        phone.sent.append(entry)
        self._sent_ix.setdefault(entry["id"], []).append((phone.phone, i))
        self._log({"op": "sent", "phone": phone.phone, "i": i, "entry": entry})

    def add_inbox(self, phone: SimPhone, entry: dict[str, Any]) -> None:
        """Append to what ``phone`` received (journaled, indexed)."""
        i = len(phone.inbox)
        phone.inbox.append(entry)
        self._inbox_ix.setdefault(phone.phone, {}).setdefault(entry["id"], []).append(i)
        self._log({"op": "inbox", "phone": phone.phone, "i": i, "entry": entry})

    def inbox_indices(self, phone: SimPhone, message_id: str) -> list[int]:
        """Where ``message_id`` is in ``phone.inbox``, in inbox order."""
        return self._inbox_ix.get(phone.phone, {}).get(message_id, [])

    def changed_inbox(self, phone: SimPhone, i: int) -> None:
        self._log({"op": "inbox", "phone": phone.phone, "i": i, "entry": phone.inbox[i]})

    def changed_sent(self, phone: SimPhone, i: int) -> None:
        self._log({"op": "sent", "phone": phone.phone, "i": i, "entry": phone.sent[i]})

    def set_presence(self, number: LinkedNumber, chat: str, state: str) -> None:
        number.presence[chat] = state
        self._log({"op": "presence", "number": number.phone, "chat": chat, "state": state})

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
        qid = self._queue(number, kind, data)
        self._commit()
        await self._pump(number)
        return qid

    def _queue(self, number: LinkedNumber, kind: str, data: dict[str, Any]) -> str:
        item = {"qid": self._next_qid(), "type": kind, "data": data}
        number.queue.append(item)
        self._log({"op": "enq", "number": number.phone, "item": item})
        return str(item["qid"])

    async def _pump(self, number: LinkedNumber) -> None:
        """Send every queued event the current connection has not had yet, in queue order."""
        conn = self._live.get(number.phone)
        if conn is None:
            return
        async with conn.lock:
            while True:
                # the queue is in qid order: the next event is the first one past the cursor (acks
                # and new events may change the queue while a send awaits)
                queue = number.queue
                i = bisect.bisect_right(queue, conn.sent_upto, key=_item_qnum)
                if i >= len(queue):
                    return
                item = queue[i]
                conn.sent_upto = _qnum(item["qid"])
                await conn.send({"op": "event", **item})

    def _ack(self, number: LinkedNumber, qid: str) -> None:
        i = _queue_index(number.queue, qid)
        if i is None:
            return
        item = number.queue.pop(i)
        self._log({"op": "ack", "number": number.phone, "qid": qid})
        if item["type"] == "message":
            self._mark_phone_sent(item["data"]["id"], "delivered")
        self._commit()

    def _mark_phone_sent(self, message_id: str, status: str) -> int:
        """A phone's own message reached the app (delivered) or the app read it."""
        changed = 0
        for phone_number, i in self._sent_ix.get(message_id, ()):
            phone = self.phones.get(phone_number)
            if phone is None or i >= len(phone.sent):
                continue
            entry = phone.sent[i]
            if entry["id"] == message_id and STATUS_ORDER.index(status) > STATUS_ORDER.index(entry["status"]):
                entry["status"] = status
                self.changed_sent(phone, i)
                changed += 1
        return changed

    async def phone_receipt(self, phone: SimPhone, ids: list[str], kind: str, only_from: str | None) -> int:
        """Move the phone's copies of ``ids`` to ``kind`` and queue a receipt to each linked sender."""
        by_sender: dict[tuple[str, str], list[str]] = {}
        wanted = set(ids)
        # the inbox entries of ``ids``, in inbox order (as a walk of the whole inbox would meet them)
        for i in sorted({i for message_id in wanted for i in self.inbox_indices(phone, message_id)}):
            entry = phone.inbox[i]
            if entry["id"] not in wanted or (only_from is not None and entry["from"] != only_from):
                continue
            if STATUS_ORDER.index(kind) > STATUS_ORDER.index(entry["status"]):
                entry["status"] = kind
                self.changed_inbox(phone, i)
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
            self._queue(number, "receipt", {
                # in a group the receipt names the group and the member who read it
                "chat": group or phone.address,
                "chat_alt": phone.jid if not group and phone.lid and phone.share_phone else None,
                "sender": phone.address,
                "ids": message_ids,
                "kind": kind,
                "timestamp": time.time(),
            })
        self._commit()
        for number in notify:
            await self._pump(number)
        return sum(len(v) for v in by_sender.values())


STATUS_ORDER = ("sent", "delivered", "read", "played")
JOURNAL_FILE = "whatsapp-network.journal"
JOURNAL_MIN_FOLD = 1 << 20  # a journal is folded into a snapshot once past this and the snapshot's size


def _qnum(qid: str) -> int:
    """``"q17"`` → 17 (-1 for a qid the network did not make)."""
    try:
        return int(qid[1:])
    except ValueError:
        return -1


def _item_qnum(item: dict[str, Any]) -> int:
    return _qnum(item["qid"])


def _queue_index(queue: list[dict[str, Any]], qid: str) -> int | None:
    """Where ``qid`` is in a queue (qid order: events are appended as their qids are made)."""
    i = bisect.bisect_left(queue, _qnum(qid), key=_item_qnum)
    return i if i < len(queue) and queue[i]["qid"] == qid else None
