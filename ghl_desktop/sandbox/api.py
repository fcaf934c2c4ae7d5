"""The HighLevel API paths a conversation provider uses: contacts, provider messages, status updates,
uploads, conversation search/listing and location details (docs/highlevel-api.md §2-§4). Request shapes are already
spec-validated by the middleware; these handlers add HighLevel's behaviour."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import hmac
import mimetypes
import os
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ghl_desktop.sandbox.common import (
    RouteMeta,
    RouteTable,
    base_url,
    body_of,
    json_body,
    ok,
    require_location,
    sandbox_of,
    token_of,
)
from ghl_desktop.sandbox.runtime import ApiError, Sandbox, normalize_phone
from ghl_desktop.sandbox.state import Contact, Conversation, Message, StoredFile, Upload, iso, new_id

API_ROUTES = RouteTable()
_route = API_ROUTES.route

#: Upload types the multipart upload accepts (spec description of POST /conversations/messages/upload).
UPLOAD_EXTENSIONS = {"jpg", "jpeg", "png", "mp4", "mpeg", "zip", "rar", "pdf", "doc", "docx", "txt", "mp3", "wav"}
CONTACT_NOT_FOUND = {"statusCode": 400, "message": "CONVERSATIONS_CONTACT_NOT_FOUND", "error": "Bad Request"}
#: HighLevel's numeric message type and name for a custom provider SMS (ISSUE #224: messageTypeId 22).
MESSAGE_TYPE_ID = 22
MESSAGE_TYPE_NAME = "TYPE_CUSTOM_PROVIDER_SMS"


# ----- JSON shapes ----------------------------------------------------------------------------------

def contact_json(c: Contact) -> dict[str, Any]:
    """A contact as HighLevel answers it. The spec types these fields as strings (not nullable):
    an unset one is left out, never sent as ``null``."""
    optional = {"phone": c.phone, "email": c.email, "contactName": c.name, "name": c.name,
                "firstName": c.first_name, "lastName": c.last_name, "firstNameRaw": c.first_name,
                "lastNameRaw": c.last_name, "source": c.source}
    return {"id": c.id, "locationId": c.location_id,
            **{key: value for key, value in optional.items() if value is not None},
            "tags": list(c.tags), "additionalPhones": list(c.additional_phones),
            "type": "lead", "dateAdded": iso(c.date_added)}


def message_json(sandbox: Sandbox, m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": m.id, "type": MESSAGE_TYPE_ID, "messageType": MESSAGE_TYPE_NAME, "locationId": m.location_id,
        "contactId": m.contact_id, "conversationId": m.conversation_id, "dateAdded": iso(m.date_added),
        "body": m.body, "direction": m.direction, "status": m.status, "contentType": "text/plain",
        "attachments": list(m.attachments), "source": m.source,
    }
    if m.provider_id:
        out["conversationProviderId"] = m.provider_id
    if m.alt_id:
        out["altId"] = m.alt_id
    if m.user_id:
        out["userId"] = m.user_id
    if m.error:
        out["error"] = m.error
    return out


def conversation_json(sandbox: Sandbox, conv: Conversation) -> dict[str, Any]:
    contact = sandbox.state.contacts.get(conv.contact_id)
    messages = [m for m in sandbox.state.messages.values() if m.conversation_id == conv.id]
    last = max(messages, key=lambda m: m.date_added) if messages else None
    return {
        "id": conv.id, "contactId": conv.contact_id, "locationId": conv.location_id,
        "lastMessageBody": last.body if last else "", "lastMessageType": MESSAGE_TYPE_NAME,
        **({"lastMessageDirection": last.direction} if last else {}), "type": "TYPE_PHONE",
        "unreadCount": conv.unread_count, "fullName": (contact.name if contact else "") or "",
        "contactName": (contact.name if contact else "") or "", "email": (contact.email if contact else "") or "",
        "phone": (contact.phone if contact else "") or "", "dateAdded": int(conv.date_added * 1000),
        "dateUpdated": int(conv.date_updated * 1000),
        "lastMessageDate": int(last.date_added * 1000) if last else int(conv.date_added * 1000),
    }


# ----- contacts -------------------------------------------------------------------------------------

def _phone(sandbox: Sandbox, location_id: str, raw: str | None) -> str | None:
    if not raw:
        return None
    phone = normalize_phone(raw, sandbox.state.locations[location_id].country)
    if phone is None:
        # UNCONFIRMED wording; HighLevel refuses numbers it cannot parse.
        raise ApiError(422, {"statusCode": 422, "message": ["phone must be a valid phone number"],
                             "error": "Unprocessable Entity"})
    return phone


@_route("POST", "/contacts/upsert", RouteMeta(auth="location", scope="contacts.write"))
async def upsert_contact(request: web.Request) -> web.Response:
    """Find-or-create by phone (E.164), then email; given fields overwrite, tags replace (docs/highlevel-api.md §3)."""
    sandbox = sandbox_of(request)
    data = json_body(request)
    location_id = require_location(request, data.get("locationId"))
    phone = _phone(sandbox, location_id, data.get("phone"))
    email_addr = data.get("email") or None
    existing = sandbox.find_contact(location_id, phone=phone, email=email_addr)
    fields = {"name": data.get("name"), "first_name": data.get("firstName"), "last_name": data.get("lastName"),
              "email": email_addr, "source": data.get("source")}
    if existing is None:
        name = fields["name"] or " ".join(x for x in (fields["first_name"], fields["last_name"]) if x) or None
        contact = sandbox.create_contact(location_id, phone, name=name, first_name=fields["first_name"],
                                         last_name=fields["last_name"], email=email_addr,
                                         tags=list(data.get("tags") or []), source=fields["source"])
        return ok({"new": True, "contact": contact_json(contact)})
    for attr, value in fields.items():
        if value is not None:
            setattr(existing, attr, value)
    if phone and not existing.phone:
        existing.phone = phone
    if "tags" in data and data["tags"] is not None:
        existing.tags = list(data["tags"])
    sandbox.changed()
    return ok({"new": False, "contact": contact_json(existing)})


@_route("GET", "/contacts/search/duplicate", RouteMeta(auth="location", scope="contacts.readonly"))
async def duplicate_contact(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    location_id = require_location(request, request.query.get("locationId"))
    number = request.query.get("number")
    phone = normalize_phone(number, sandbox.state.locations[location_id].country) if number else None
    contact = None
    if phone or request.query.get("email"):
        contact = sandbox.find_contact(location_id, phone=phone, email=request.query.get("email"))
    return ok({"contact": contact_json(contact) if contact else None})


@_route("GET", "/contacts/{contactId}", RouteMeta(auth="location", scope="contacts.readonly"))
async def get_contact(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    contact = sandbox.state.live_contact(request.match_info["contactId"], token_of(request).location_id)
    if contact is None:
        # UNCONFIRMED: HighLevel answers an unknown/merged contact id with 400 "Contact not found".
        raise ApiError(400, {"statusCode": 400, "message": "Contact not found"})
    return ok({"contact": contact_json(contact)})


@_route("PUT", "/contacts/{contactId}", RouteMeta(auth="location", scope="contacts.write"))
async def update_contact(request: web.Request) -> web.Response:
    """Change the given fields of a contact (name, first/last name, email, source; tags replace), as an
    agent editing it in HighLevel or the app naming a group's contact does."""
    sandbox = sandbox_of(request)
    contact = sandbox.state.live_contact(request.match_info["contactId"], token_of(request).location_id)
    if contact is None:
        raise ApiError(400, {"statusCode": 400, "message": "Contact not found"})  # as GET answers it
    data = json_body(request)
    for key, attr in (("name", "name"), ("firstName", "first_name"), ("lastName", "last_name"),
                      ("email", "email"), ("source", "source")):
        if data.get(key) is not None:
            setattr(contact, attr, data[key])
    if data.get("tags") is not None:
        contact.tags = list(data["tags"])
    sandbox.changed()
    return ok({"succeded": True, "contact": contact_json(contact)})


# ----- provider messages ----------------------------------------------------------------------------

def _parse_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@_route("POST", "/conversations/messages/inbound", RouteMeta(auth="provider", scope="conversations/message.write"))
async def inbound_message(request: web.Request) -> web.Response:
    """Add a provider message (inbound, or outbound sent from the phone) to a contact's thread."""
    sandbox = sandbox_of(request)
    state = sandbox.state
    location_id = token_of(request).location_id or ""
    data = json_body(request)
    provider_id = data.get("conversationProviderId")
    if not provider_id:
        # A custom provider's message without its id is silently dropped (ISSUE #70).
        state.count("inbound_dropped_no_provider")
        return web.Response(status=201)
    if provider_id != state.app.provider_id:
        raise ApiError(400, {"message": "Invalid conversationProviderId", "error": "Bad Request", "statusCode": 400})
    contact: Contact | None = None
    conv: Conversation | None = None
    if data.get("conversationId"):
        conv = state.conversations.get(data["conversationId"])
        if conv is None or conv.deleted or conv.location_id != location_id:
            raise ApiError(400, CONTACT_NOT_FOUND if conv is not None and conv.deleted else
                           {"statusCode": 400, "message": "Conversation not found", "error": "Bad Request"})
    if data.get("contactId"):
        contact = state.live_contact(data["contactId"], location_id)
        if contact is None:
            raise ApiError(400, CONTACT_NOT_FOUND)
    elif conv is not None:
        contact = state.live_contact(conv.contact_id, location_id)
        if contact is None:
            raise ApiError(400, CONTACT_NOT_FOUND)
    assert contact is not None  # the schema requires contactId or conversationId
    if conv is not None and conv.contact_id != contact.id:
        raise ApiError(400, {"statusCode": 400, "message": "Conversation does not belong to the contact"})
    conv = conv or sandbox.conversation(contact)
    direction = data.get("direction") or "outbound"  # HighLevel's default (errata in validation.py)
    message = sandbox.add_message(conv, direction, "delivered", data.get("message") or "",
                                  alt_id=data.get("altId"), attachments=list(data.get("attachments") or []),
                                  type=data.get("type", "Custom"), provider_id=provider_id, source="api",
                                  date_added=_parse_date(data.get("date")))
    state.count(f"inbound_{direction}")
    return ok({"success": True, "conversationId": conv.id, "messageId": message.id,
               "message": "Message queued successfully.", "contactId": contact.id,
               "dateAdded": iso(message.date_added)})


def _message_in_location(request: web.Request, message_id: str) -> Message:
    sandbox = sandbox_of(request)
    message = sandbox.state.messages.get(message_id)
    if message is None or message.location_id != token_of(request).location_id:
        raise ApiError(404, {"statusCode": 404, "message": "Message not found"})
    return message


@_route("PUT", "/conversations/messages/{messageId}/status",
        RouteMeta(auth="provider", scope="conversations/message.write"))
async def update_status(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    message = _message_in_location(request, request.match_info["messageId"])
    if sandbox.state.now() < message.status_locked_until:
        # For a few seconds after the hand-over HighLevel refuses status updates (ISSUE #4; 403 since 2025-06).
        sandbox.state.count("status_race_refusals")
        raise ApiError(403, {"statusCode": 403, "message": "No conversation provider found for this message",
                             "error": "Forbidden"})
    data = json_body(request)
    message.status = data["status"]
    message.status_history.append(message.status)
    message.error = data.get("error") if message.status == "failed" else None
    sandbox.changed()
    return ok({"conversationId": message.conversation_id, "messageId": message.id, "status": message.status})


@_route("GET", "/conversations/messages/{id}", RouteMeta(auth="location", scope="conversations/message.readonly"))
async def get_message(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    message = _message_in_location(request, request.match_info["id"])
    return ok(message_json(sandbox, message))


# ----- conversations --------------------------------------------------------------------------------

@_route("GET", "/conversations/search", RouteMeta(auth="location", scope="conversations.readonly"))
async def search_conversations(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    location_id = require_location(request, request.query.get("locationId"))
    convs = [c for c in sandbox.state.conversations.values() if c.location_id == location_id and not c.deleted]
    if request.query.get("contactId"):
        convs = [c for c in convs if c.contact_id == request.query["contactId"]]
    if request.query.get("id"):
        convs = [c for c in convs if c.id == request.query["id"]]
    rows = sorted((conversation_json(sandbox, c) for c in convs), key=lambda r: r["lastMessageDate"],
                  reverse=request.query.get("sort", "desc") == "desc")
    limit = min(int(float(request.query.get("limit", "20") or 20)), 100)
    return ok({"conversations": rows[:limit], "total": len(rows)})


@_route("POST", "/conversations/", RouteMeta(auth="location", scope="conversations.write"))
async def create_conversation(request: web.Request) -> web.Response:
    """201 with the new conversation; 400 "already exists" when the contact has one (docs/highlevel-api.md §2.7)."""
    sandbox = sandbox_of(request)
    data = json_body(request)
    location_id = require_location(request, data.get("locationId"))
    contact = sandbox.state.live_contact(str(data.get("contactId") or ""), location_id)
    if contact is None:
        raise ApiError(400, CONTACT_NOT_FOUND)
    existing = sandbox.state.conversation_for(contact)
    if existing is not None and not existing.deleted:
        raise ApiError(400, {"statusCode": 400,
                             "message": f"Conversation with the contact id:{contact.id} already exists!"})
    conv = sandbox.conversation(contact)
    sandbox.changed()
    return web.json_response({"success": True, "conversation": {
        "id": conv.id, "contactId": conv.contact_id, "locationId": conv.location_id,
        "dateAdded": iso(conv.date_added), "dateUpdated": iso(conv.date_updated),
        "lastMessageDate": iso(conv.date_updated), "deleted": False}}, status=201)


@_route("GET", "/conversations/{conversationId}/messages",
        RouteMeta(auth="location", scope="conversations/message.readonly"))
async def conversation_messages(request: web.Request) -> web.Response:
    """Newest first, paged by lastMessageId; nested {messages:{...}} as the live API answers (ISSUE #54)."""
    sandbox = sandbox_of(request)
    conv = sandbox.state.conversations.get(request.match_info["conversationId"])
    if conv is None or conv.deleted or conv.location_id != token_of(request).location_id:
        raise ApiError(400, {"statusCode": 400, "message": "Conversation not found"})
    messages = sorted((m for m in sandbox.state.messages.values() if m.conversation_id == conv.id),
                      key=lambda m: m.date_added, reverse=True)
    after = request.query.get("lastMessageId")
    if after:
        ids = [m.id for m in messages]
        messages = messages[ids.index(after) + 1:] if after in ids else []
    limit = min(int(float(request.query.get("limit", "20") or 20)), 100)
    page = messages[:limit]
    return ok({"messages": {"lastMessageId": page[-1].id if page else None,
                            "nextPage": len(messages) > limit,
                            "messages": [message_json(sandbox, m) for m in page]}})


# ----- uploads --------------------------------------------------------------------------------------

def _conversation_in(request: web.Request, conversation_id: str | None, location_id: str) -> Conversation:
    conv = sandbox_of(request).state.conversations.get(conversation_id or "")
    if conv is None or conv.deleted or conv.location_id != location_id:
        raise ApiError(400, {"statusCode": 400, "message": "Conversation not found"})
    return conv


def _store_file(request: web.Request, location_id: str, filename: str, content_type: str,
                data: bytes) -> str:
    sandbox = sandbox_of(request)
    stored = StoredFile(id=new_id(), location_id=location_id, filename=filename, content_type=content_type,
                        size=len(data))
    sandbox.store_bytes(stored.id, data)
    sandbox.state.files[stored.id] = stored
    sandbox.changed()
    return f"{base_url(request)}/files/{stored.id}/{quote(filename)}"


def _multipart(request: web.Request) -> tuple[dict[str, str], list[tuple[str, str, bytes]]]:
    head = f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body_of(request))
    fields: dict[str, str] = {}
    files: list[tuple[str, str, bytes]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        raw = part.get_payload(decode=True)
        payload = raw if isinstance(raw, bytes) else b""
        if filename is not None and name == "fileAttachment":
            files.append((filename, part.get_content_type(), payload))
        elif isinstance(name, str):
            fields[name] = payload.decode("utf-8", "replace")
    return fields, files


@_route("POST", "/conversations/messages/upload", RouteMeta(auth="location", scope="conversations/message.write"))
async def upload_attachment(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    fields, files = _multipart(request)
    location_id = require_location(request, fields.get("locationId"))
    _conversation_in(request, fields.get("conversationId"), location_id)
    if not files:
        raise ApiError(400, {"status": 400, "message": "No file found under the key fileAttachment"})
    uploaded: dict[str, str] = {}
    for filename, content_type, data in files:
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if ext not in UPLOAD_EXTENSIONS:
            raise ApiError(415, {"status": 415, "message": f"Unsupported file type: {filename}"})
        if len(data) > sandbox.config.upload_max_bytes:
            raise ApiError(413, {"status": 413, "message": "File size exceeds the allowed limit"})
        uploaded[filename] = _store_file(request, location_id, filename, content_type, data)
    return ok({"uploadedFiles": uploaded})


def upload_signature(sandbox: Sandbox, upload_id: str, expires_ms: int) -> str:
    return hmac.new(sandbox.state.jwt_secret.encode(), f"{upload_id}:{expires_ms}".encode(),
                    hashlib.sha256).hexdigest()


@_route("POST", "/conversations/messages/upload/initiate",
        RouteMeta(auth="location", scope="conversations/message.write"))
async def initiate_upload(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = json_body(request)
    location_id = require_location(request, data.get("locationId"))
    conv = _conversation_in(request, data.get("conversationId"), location_id)
    channel = str(data.get("channel", ""))
    max_size = (sandbox.config.whatsapp_upload_max_bytes if channel.upper() == "WHATSAPP"
                else sandbox.config.other_upload_max_bytes)
    if data.get("fileSize") is not None and float(data["fileSize"]) > max_size:
        raise ApiError(413, {"statusCode": 413, "message": f"File size exceeds the maximum of {max_size} bytes"})
    upload_id = new_id()
    ext = os.path.splitext(data["filename"])[1] or (mimetypes.guess_extension(data["contentType"]) or "")
    now = sandbox.state.now()
    expires_ms = int((now + sandbox.config.upload_url_lifetime) * 1000)
    upload = Upload(upload_id=upload_id, location_id=location_id, conversation_id=conv.id,
                    filename=data["filename"], content_type=data["contentType"], channel=channel,
                    max_size=max_size, file_path=f"location/{location_id}/conversations/{conv.id}/{upload_id}{ext}",
                    expires_at=expires_ms / 1000)
    sandbox.state.uploads[upload_id] = upload
    sandbox.changed()
    url = (f"{base_url(request)}/_sandbox/gcs/{upload_id}?X-Goog-Expires={expires_ms}"
           f"&X-Goog-Signature={upload_signature(sandbox, upload_id, expires_ms)}")
    return ok({"uploadUrl": url, "uploadId": upload_id, "filePath": upload.file_path, "expiresAt": expires_ms,
               "maxFileSize": max_size})


async def put_upload(request: web.Request) -> web.Response:
    """The signed upload URL (stands in for Google Cloud Storage): PUT the raw bytes."""
    sandbox = sandbox_of(request)
    upload = sandbox.state.uploads.get(request.match_info["uploadId"])
    try:
        expires_ms = int(request.query.get("X-Goog-Expires", "0"))
    except ValueError:
        expires_ms = 0
    good = upload is not None and hmac.compare_digest(
        request.query.get("X-Goog-Signature", ""), upload_signature(sandbox, upload.upload_id, expires_ms))
    if upload is None or not good:
        return web.Response(status=403, text="SignatureDoesNotMatch", content_type="application/xml")
    if sandbox.state.now() * 1000 > expires_ms:
        return web.Response(status=400, text="ExpiredToken: Request has expired", content_type="application/xml")
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data.extend(chunk)
        if len(data) > upload.max_size:
            return web.Response(status=400, text="EntityTooLarge", content_type="application/xml")
    sandbox.store_bytes(f"upload-{upload.upload_id}", bytes(data))
    upload.size = len(data)
    sandbox.changed()
    return web.Response(status=200)


@_route("POST", "/conversations/messages/upload/complete",
        RouteMeta(auth="location", scope="conversations/message.write"))
async def complete_upload(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = json_body(request)
    location_id = require_location(request, data.get("locationId"))
    upload = sandbox.state.uploads.get(data["uploadId"])
    if upload is None or upload.location_id != location_id or upload.file_path != data["filePath"] \
            or upload.conversation_id != data["conversationId"]:
        raise ApiError(400, {"statusCode": 400, "message": "Invalid upload"})
    if upload.size is None:
        raise ApiError(404, {"statusCode": 404, "message": "File not found"})
    if upload.file_id is None:
        content = sandbox.load_bytes(f"upload-{upload.upload_id}") or b""
        url = _store_file(request, location_id, data["filename"], upload.content_type, content)
        upload.file_id = url.split("/files/")[1].split("/")[0]
        sandbox.changed()
    stored = sandbox.state.files[upload.file_id]
    url = f"{base_url(request)}/files/{stored.id}/{quote(stored.filename)}"
    return ok({"uploadedFiles": {data["filename"]: url},
               "metadata": {"size": upload.size, "contentType": upload.content_type}})


async def get_file(request: web.Request) -> web.Response:
    """Uploaded files are public URLs, like HighLevel's CDN links."""
    sandbox = sandbox_of(request)
    stored = sandbox.state.files.get(request.match_info["fileId"])
    data = sandbox.load_bytes(stored.id) if stored else None
    if stored is None or data is None:
        raise web.HTTPNotFound()
    return web.Response(body=data, content_type=stored.content_type or "application/octet-stream")


# ----- locations ------------------------------------------------------------------------------------

@_route("GET", "/locations/{locationId}", RouteMeta(auth="any", scope="locations.readonly"))
async def get_location(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    tok = token_of(request)
    loc = sandbox.state.locations.get(request.match_info["locationId"])
    allowed = loc is not None and (tok.location_id == loc.id if tok.auth_class == "Location"
                                   else tok.company_id == loc.company_id)
    if loc is None or not allowed:
        raise ApiError(403, {"statusCode": 403, "message": "The token does not have access to this location."})
    return ok({"location": {
        "id": loc.id, "companyId": loc.company_id, "name": loc.name, "domain": "", "address": "1 Sandbox Street",
        "city": "Sandbox", "state": "NY", "country": loc.country, "postalCode": "10001", "website": "",
        "timezone": loc.timezone, "email": f"{loc.id.lower()}@sandbox.invalid", "phone": "+15550000000",
        "business": {"name": loc.name}, "social": {}, "settings": {"allowDuplicateContact": False},
    }})
