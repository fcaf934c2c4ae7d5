"""The HTTP control API of the simulated WhatsApp network (phones, scanning, pairing codes, drops);
the routes are listed in :func:`setup_whatsapp_network`."""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ghl_desktop.sandbox.whatsapp.model import (
    DROP_KINDS,
    LID_SERVER,
    WS_PATH,
    BadRequest,
    LinkedNumber,
    NetworkConfig,
    SimPhone,
    _conflict,
    _Conn,
    _not_found,
    new_message_id,
    normalize_phone,
    phone_to_jid,
)
from ghl_desktop.sandbox.whatsapp.network import NETWORK_KEY, WhatsAppNetwork


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
    media = message.get("media")
    net.add_sent(sender, {"id": message["id"], "to": number.phone, "kind": message["kind"],
                          "text": message.get("text"), "status": "sent", "timestamp": message["timestamp"],
                          "media": {**media, "url": f"/_sandbox/whatsapp/media/{media['handle']}"} if media else None})
    await net.enqueue(number, "message", message)
    return web.json_response({"id": message["id"]}, status=201)


CALL_OUTCOMES = ("missed", "rejected", "answered")


async def _phone_call(request: web.Request) -> web.Response:
    """A call from a simulated phone to a linked number: the device gets call_offer then
    call_terminate with the outcome (see docs/sandbox-whatsapp-protocol.md)."""
    net = _net(request)
    caller = _sim_phone(net, request.match_info["phone"])
    body = await _json(request)
    number = _linked(net, body.get("to"))
    video = body.get("video", False)
    if not isinstance(video, bool):
        raise BadRequest("video must be true or false")
    outcome = body.get("outcome", "missed")
    if outcome not in CALL_OUTCOMES:
        raise BadRequest(f"outcome must be one of {', '.join(CALL_OUTCOMES)}")
    call_id = "CALL" + secrets.token_hex(8).upper()
    now = time.time()
    net.calls[call_id] = {"from": caller.phone, "to": number.phone, "outcome": outcome,
                          "video": video, "rejected_by_app": False}
    net.add_sent(caller, {"id": call_id, "to": number.phone, "kind": "call", "text": None,
                          "status": outcome, "timestamp": now, "media": None, "video": video})
    offer = {"call_id": call_id, "from": caller.address,
             "from_alt": caller.jid if caller.lid and caller.share_phone else None,
             "push_name": caller.name, "video": video, "timestamp": now}
    await net.enqueue(number, "call_offer", offer)
    await net.enqueue(number, "call_terminate", {"call_id": call_id, "from": caller.address,
                                                 "reason": outcome, "timestamp": now})
    return web.json_response({"id": call_id}, status=201)


def _iso_epoch(value: object, what: str) -> float:
    from datetime import datetime

    if not isinstance(value, str):
        raise BadRequest(f"{what} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{what}: not ISO-8601 ({value!r})") from exc
    if parsed.tzinfo is None:
        raise BadRequest(f"{what} needs a time zone (e.g. 2026-01-31T09:00:00Z)")
    return parsed.timestamp()


async def _seed_history(request: web.Request) -> web.Response:
    """What history sync offers the next time this number is linked (kept in the persisted state,
    consumed once). Body {chats: [{with: E164, messages: [{from_me, text, timestamp ISO-8601}]}]}."""
    net = _net(request)
    phone = _phone_arg(request.match_info["phone"], "linked number")
    body = await _json(request)
    chats_in = body.get("chats")
    if not isinstance(chats_in, list) or not chats_in:
        raise BadRequest("chats must be a non-empty list of {with, messages}")
    chats: list[dict[str, Any]] = []
    total = 0
    for i, chat in enumerate(chats_in):
        if not isinstance(chat, dict):
            raise BadRequest(f"chats[{i}] must be an object {{with, messages}}")
        other = _phone_arg(chat.get("with"), f"chats[{i}].with")
        messages_in = chat.get("messages")
        if not isinstance(messages_in, list):
            raise BadRequest(f"chats[{i}].messages must be a list")
        messages = []
        for j, m in enumerate(messages_in):
            where = f"chats[{i}].messages[{j}]"
            if not isinstance(m, dict):
                raise BadRequest(f"{where} must be an object {{from_me, text, timestamp}}")
            if not isinstance(m.get("from_me"), bool):
                raise BadRequest(f"{where}.from_me must be true or false")
            if not isinstance(m.get("text"), str) or not m["text"]:
                raise BadRequest(f"{where}.text must be a non-empty string")
            given = m.get("id")  # optional: a message the number also carried live (overlap)
            if given is not None and (not isinstance(given, str) or not given.strip()):
                raise BadRequest(f"{where}.id must be a non-empty string when given")
            messages.append({"id": given or new_message_id(), "from_me": m["from_me"], "text": m["text"],
                             "timestamp": _iso_epoch(m.get("timestamp"), f"{where}.timestamp")})
        messages.sort(key=lambda m: m["timestamp"])
        total += len(messages)
        chats.append({"chat": phone_to_jid(other), "messages": messages})
    net.history[phone] = chats
    net.save()
    return web.json_response({"phone": phone, "chats": len(chats), "messages": total}, status=201)


async def _group_subject(request: web.Request) -> web.Response:
    """Set (or change) a group's subject, as a member renaming the group does; the group need not
    have had a message yet. Body {subject}."""
    net = _net(request)
    jid = request.match_info["jid"]
    if not re.fullmatch(r"[\d-]{5,40}@g\.us", jid):
        raise BadRequest("the group must look like 120363000000000000@g.us")
    subject = (await _json(request)).get("subject")
    if not isinstance(subject, str) or not subject.strip():
        raise BadRequest("subject must be a non-empty string")
    net.group_subjects[jid] = subject.strip()
    net.groups.setdefault(jid, [])
    net.save()
    return web.json_response({"jid": jid, "subject": net.group_subjects[jid]})


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
    unknown = [i for i in ids if not net.inbox_indices(phone, i)]
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
    net.add_inbox(customer, {
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
                                                      emoji?, location?, contact?, group?, group_subject?,
                                                      id?} → {id}
      POST /_sandbox/phones/{phone}/read             {ids, kind?: read|played}
      POST /_sandbox/phones/{phone}/online           {online}
      POST /_sandbox/phones/{phone}/call             {to, video?, outcome: missed|rejected|answered} -> {id}
      GET  /_sandbox/phones/{phone}/inbox            what the app sent this phone
      GET  /_sandbox/phones/{phone}/sent             what this phone sent (status sent/delivered/read,
                                                      media {mimetype, file_name, size, url} or null)
      POST /_sandbox/whatsapp/scan                   {qr | session, phone}
      POST /_sandbox/whatsapp/pair-code              {phone, code}
      POST /_sandbox/whatsapp/{phone}/send-from-phone {to, ...same body as a phone's send}
      POST /_sandbox/whatsapp/{phone}/history        {chats: [{with, messages: [{from_me, text, timestamp, id?}]}]}
      POST /_sandbox/whatsapp/{phone}/drop           {kind, ban_seconds?, refuse_connects?}
      POST /_sandbox/whatsapp/groups/{jid}           {subject}: the group's subject (its name)
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
    r.add_post("/_sandbox/phones/{phone}/call", _phone_call)
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
    r.add_post("/_sandbox/whatsapp/{phone}/history", _seed_history)
    r.add_post("/_sandbox/whatsapp/groups/{jid}", _group_subject)
    app.on_shutdown.append(net.shutdown)


def whatsapp_network(app: web.Application) -> WhatsAppNetwork:
    return app[NETWORK_KEY]


def whatsapp_state(app: web.Application) -> dict[str, Any]:
    """``linked_numbers`` [{phone, state, ...}] and ``phones`` [{phone, name, ...}] for GET /_sandbox/state."""
    state = app[NETWORK_KEY].state()
    return {"linked_numbers": state["linked_numbers"], "phones": state["phones"]}
