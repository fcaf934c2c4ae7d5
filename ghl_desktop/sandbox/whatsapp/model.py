"""The simulated WhatsApp network's data: constants, timings, HTTP errors, numbers and JIDs, the
simulated phones, the linked numbers and one client connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ghl_desktop.core.convert import E164_MAX_DIGITS, E164_MIN_DIGITS, e164_from_digits

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
PHONE_KINDS = (*ALL_KINDS, "poll", "poll_vote")  # what a simulated phone can send
VIEW_ONCE_KINDS = ("image", "video", "voice", "audio")
EPHEMERAL_DEFAULT_SECONDS = 604800
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
    phone = e164_from_digits(re.sub(r"[\s\-().]", "", raw))  # the product's E.164 bounds (core.convert)
    if phone is None:
        raise ValueError(f"not a phone number ({E164_MIN_DIGITS} to {E164_MAX_DIGITS} digits, optional +): {value!r}")
    return phone


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
    max_concurrent_sessions: int = 0  # most connections of this number open at one moment
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
        self.qr_expires_at: float | None = None  # epoch seconds the current code stops working
        self.qr_task: asyncio.Task[None] | None = None
        self.sent_upto = 0  # qid number of the last event sent on this connection (queues are in qid order)
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
