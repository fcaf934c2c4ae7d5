"""The simulated WhatsApp network: :class:`WhatsAppNetwork`, one per sandbox app."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import time
from typing import Any

import aiohttp
from aiohttp import web

from ghl_desktop.sandbox.whatsapp.model import (
    DEFAULT_MIME,
    EPHEMERAL_DEFAULT_SECONDS,
    MEDIA_KINDS,
    PHONE_KINDS,
    VIEW_ONCE_KINDS,
    BadRequest,
    LinkedNumber,
    SimPhone,
    _kind_for_mime,
    new_message_id,
)
from ghl_desktop.sandbox.whatsapp.ws import ClientProtocol


class WhatsAppNetwork(ClientProtocol):
    """All state of the simulated network; one per sandbox app."""

    # --- messages from phones ----------------------------------------------------------------------

    async def build_message(self, body: dict[str, Any], *, sender: SimPhone | None, linked: LinkedNumber,
                            chat_phone: SimPhone | None) -> dict[str, Any]:
        """A wire message from a customer phone (``sender``) or typed on the linked phone itself
        (``sender`` None, ``chat_phone`` = the customer it was typed to)."""
        kind = body.get("kind")
        media_in = body.get("media")
        view_once = kind == "view_once"
        if view_once:
            if not isinstance(media_in, dict):
                raise BadRequest("a view_once message needs media {data (base64) or url, mimetype?}")
            kind = media_in.get("kind") or _kind_for_mime(str(media_in.get("mimetype") or ""))
            if kind not in VIEW_ONCE_KINDS:
                raise BadRequest(f"view_once media must be one of {', '.join(VIEW_ONCE_KINDS)}")
        ephemeral = body.get("ephemeral", False)
        if not isinstance(ephemeral, bool):
            raise BadRequest("ephemeral must be true or false")
        if kind is None:
            if isinstance(media_in, dict):
                kind = media_in.get("kind") or _kind_for_mime(str(media_in.get("mimetype") or ""))
            elif "location" in body:
                kind = "location"
            elif "contact" in body:
                kind = "contact"
            else:
                kind = "text"
        if kind not in PHONE_KINDS:
            raise BadRequest(f"unknown kind {kind!r}; one of {', '.join((*PHONE_KINDS, 'view_once'))}")
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
        if view_once:
            message["view_once"] = True
        if ephemeral:
            seconds = body.get("ephemeral_seconds", EPHEMERAL_DEFAULT_SECONDS)
            if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
                raise BadRequest("ephemeral_seconds must be a positive integer")
            message["ephemeral"] = True
            message["ephemeral_seconds"] = seconds
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
            subject = body.get("group_subject")
            if subject is not None:
                if not isinstance(subject, str) or not subject.strip():
                    raise BadRequest("group_subject must be a non-empty string")
                self.group_subjects[group] = subject.strip()
                self.touch()
            members = self.groups.setdefault(group, [])
            if sender is not None and sender.phone not in members:
                members.append(sender.phone)
                self.touch()
            elif not members:
                self.touch()  # a new group
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
        elif kind == "poll":
            poll = body.get("poll")
            if not isinstance(poll, dict) or not isinstance(poll.get("name"), str) or not poll["name"]:
                raise BadRequest("a poll needs poll {name, options: [2..12 strings]}")
            options = poll.get("options")
            if (not isinstance(options, list) or not 2 <= len(options) <= 12
                    or not all(isinstance(o, str) and o for o in options) or len(set(options)) != len(options)):
                raise BadRequest("poll.options must be 2 to 12 distinct non-empty strings")
            message["poll"] = {"name": poll["name"], "options": list(options), "selectable_count": 1}
            message["text"] = poll["name"]
        elif kind == "poll_vote":
            target = body.get("target_id")
            if not isinstance(target, str) or not target:
                raise BadRequest("a poll_vote needs target_id (the poll's message id)")
            options = body.get("options")
            if not isinstance(options, list) or not all(isinstance(o, str) and o for o in options):
                raise BadRequest("a poll_vote needs options: a list of option names (empty withdraws)")
            message["target_id"] = target
            message["options"] = list(options)
            message["text"] = None
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
        self.flush()  # what changed since the last commit (connect counts, presence)
        for conn in list(self._conns):
            if conn.qr_task is not None:
                conn.qr_task.cancel()
            with contextlib.suppress(Exception):
                await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
        if self.http is not None:
            await self.http.close()


NETWORK_KEY = web.AppKey("ghl_whatsapp_network", WhatsAppNetwork)
