"""The HighLevel API client used by the bridge: contacts, provider messages, statuses, uploads,
conversation lookups, locations.

One ``GhlClient`` per app, around the app's ONE ``httpx.AsyncClient``. Every call goes through
``_call``, which:
  * takes a valid token from the ``TokenManager`` (refreshing once on an auth 401, never on the
    "version header" 401),
  * sends the ``Version`` header the spec declares for the path,
  * holds a slot in the per-location ``RateScheduler`` window while the request is on the wire,
  * waits the server's interval on 429 and retries 5xx / timeouts with capped jittered backoff,
  * maps anything else to a ``core.errors`` type.
Bodies of messages are never logged; tokens never leave the Authorization header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from ghl_desktop.config import Settings
from ghl_desktop.core.convert import InvalidPhone
from ghl_desktop.core.convert import normalize_phone as core_normalize_phone
from ghl_desktop.core.errors import (
    ConfigError,
    GhlAuthError,
    GhlBadRequest,
    GhlError,
    GhlForbidden,
    GhlRateLimited,
    GhlStatusRace,
    GhlTransientError,
    MediaTooLarge,
)

from .rate import RateHeaders, RateLimitConfig, RateScheduler
from .tokens import TokenManager
from .transport import body_of, map_error, request_was_sent, transport_error, version_for

log = logging.getLogger("ghl.api")

#: statuses ``PUT /conversations/messages/{id}/status`` accepts (spec ``UpdateMessageStatusDto``)
PROVIDER_STATUSES = frozenset({"delivered", "failed", "pending", "read"})
MULTIPART_MAX_BYTES = 5 * 1024 * 1024  # above this the initiate/PUT/complete path is used
WHATSAPP_MAX_BYTES = 100 * 1024 * 1024  # channel WHATSAPP limit of the initiate path (spec)


class InvalidPhoneNumber(GhlBadRequest):
    """A phone number that cannot be turned into E.164; nothing was sent to HighLevel.

    (Subclasses GhlBadRequest so callers treat it as permanent; a dedicated core error could be
    added to ``core.errors`` later.)"""


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """A HighLevel contact as far as the bridge cares."""

    id: str
    location_id: str
    phone: str | None = None
    name: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpsertedContact:
    contact: Contact
    created: bool  # HighLevel's ``new``: a contact was created rather than matched


@dataclass(frozen=True, slots=True)
class InboundResult:
    """What ``POST /conversations/messages/inbound`` answered."""

    message_id: str
    conversation_id: str
    contact_id: str | None = None
    recovered: bool = False  # found by altId after an ambiguous failure instead of posted again


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    location_id: str
    contact_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationMessage:
    """One message of a conversation (``GET /conversations/{id}/messages``)."""

    id: str
    conversation_id: str | None
    contact_id: str | None
    direction: str | None
    status: str | None
    body: str | None = field(default=None, repr=False)
    alt_id: str | None = None
    attachments: tuple[str, ...] = ()
    date_added: str | None = None
    message_type: str | None = None


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: tuple[ConversationMessage, ...]
    last_message_id: str | None
    next_page: bool


@dataclass(frozen=True, slots=True)
class LocationDetails:
    id: str
    name: str
    company_id: str | None = None
    timezone: str | None = None
    country: str | None = None
    allow_duplicate_contact: bool | None = None


@dataclass(frozen=True, slots=True)
class InstalledLocation:
    id: str
    name: str
    address: str | None = None
    is_installed: bool | None = None


@dataclass(frozen=True, slots=True)
class UploadedAttachment:
    """A file now hosted by HighLevel; ``url`` goes into a message's ``attachments``."""

    filename: str
    url: str
    size: int
    via: Literal["multipart", "signed-url"]


# --- helpers -------------------------------------------------------------------------------------


def normalize_phone(phone: str, default_region: str | None = None) -> str:
    """E.164 with a leading +, or ``InvalidPhoneNumber`` (core.convert.normalize_phone, the one
    normaliser). Numbers without a country code need ``default_region`` (falling back to the
    location's country is UNCONFIRMED in HighLevel, so we do not rely on it)."""
    try:
        return core_normalize_phone(phone, default_region)
    except InvalidPhone as exc:
        raise InvalidPhoneNumber(str(exc), status=0) from exc


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _contact_from(data: Mapping[str, Any], location_id: str) -> Contact:
    name = data.get("name") or data.get("contactName") or " ".join(
        part for part in (data.get("firstName"), data.get("lastName")) if part
    ) or None
    return Contact(
        id=str(data.get("id") or data.get("_id") or ""),
        location_id=str(data.get("locationId") or location_id),
        phone=data.get("phone") or None,
        name=name,
        tags=tuple(str(t) for t in data.get("tags") or ()),
    )


def _message_from(data: Mapping[str, Any]) -> ConversationMessage:
    return ConversationMessage(
        id=str(data.get("id") or ""),
        conversation_id=data.get("conversationId"),
        contact_id=data.get("contactId"),
        direction=data.get("direction"),
        status=data.get("status"),
        body=data.get("body"),
        alt_id=data.get("altId"),
        attachments=tuple(str(a) for a in data.get("attachments") or ()),
        date_added=data.get("dateAdded"),
        message_type=data.get("messageType"),
    )


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Behaviour switches. Defaults are the production values."""

    #: inbound ``type``: real bridges post "Custom" with the provider id (docs/highlevel-api.md §2.1)
    inbound_message_type: str = "Custom"
    #: total time a status update keeps retrying the 403 race (ISSUE #4: 5-10 s in production)
    status_race_total_seconds: float = 20.0
    status_race_initial_delay: float = 0.5
    status_race_max_delay: float = 4.0
    multipart_max_bytes: int = MULTIPART_MAX_BYTES
    large_upload_channel: str = "WHATSAPP"
    large_upload_max_bytes: int = WHATSAPP_MAX_BYTES
    #: page size when scanning conversation messages for an altId; pages scanned at most
    message_page_limit: int = 100
    alt_id_max_pages: int = 20
    #: send the conversationProviderId with provider messages. True for a custom conversation provider
    #: (the product's setup); False only for an app that REPLACES the default SMS provider, where HighLevel
    #: does not require it (docs/highlevel-api.md §2.1). A custom provider's message without it is dropped.
    send_provider_id: bool = True
    #: ``Version`` header per path prefix, overriding the spec's values (transport.VERSION_TABLE; e.g. to
    #: move to 2023-02-21 when HighLevel retires an old version). Longest matching prefix wins. Give the
    #: TokenManager the same mapping: it calls /oauth/locationToken itself.
    version_overrides: Mapping[str, str] = field(default_factory=dict)


class GhlClient:
    """Typed access to the HighLevel endpoints the bridge uses. Safe to share between tasks."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenManager,
        http: httpx.AsyncClient,
        *,
        rate: RateScheduler | RateLimitConfig | None = None,
        options: ClientOptions | None = None,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._http = http
        self.scheduler = rate if isinstance(rate, RateScheduler) else RateScheduler(rate)
        self.options = options or ClientOptions()

    @property
    def tokens(self) -> TokenManager:
        return self._tokens

    # --- the one request path ----------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        location_id: str | None = None,
        company_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Any = None,
        expected: Sequence[int] = (200, 201),
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one API request with auth, Version, rate scheduling, retries and error mapping.

        ``idempotent=False`` stops retries once the request may have reached the server (the
        caller handles ambiguity, e.g. by looking the message up by altId)."""
        if (location_id is None) == (company_id is None):
            raise ValueError("exactly one of location_id / company_id is required")
        key = f"location:{location_id}" if location_id else f"company:{company_id}"
        limiter = self.scheduler.limiter(key)
        config = self.scheduler.config
        attempt = 0
        rate_limited = 0
        refreshed = False
        while True:
            if location_id is not None:
                token = await self._tokens.access_token(location_id)
            else:
                assert company_id is not None
                token = await self._tokens.company_access_token(company_id)
            headers = {"Authorization": f"Bearer {token}", "Version": self._version(path)}
            rate = RateHeaders()
            try:
                async with limiter.slot():
                    response = await self._http.request(
                        method, path, params=params, json=json, data=data, files=files, headers=headers
                    )
                    rate = RateHeaders.parse(response.headers)
                    await limiter.observe(rate, status=response.status_code)
            except httpx.HTTPError as exc:
                error: GhlError = transport_error(exc, f"{method} {path}")
                may_retry = idempotent or not request_was_sent(exc)
                if may_retry and attempt < config.max_retries:
                    await self._backoff(attempt, method, path, error)
                    attempt += 1
                    continue
                raise error from exc
            if response.status_code in expected:
                return response
            error = map_error(response, rate=rate, default_wait=limiter.retry_after(rate))
            if isinstance(error, GhlRateLimited):
                # the limiter has paused this location for the server's interval: the next slot() waits
                if error.daily_exhausted or rate_limited >= config.max_rate_limited_retries:
                    raise error
                rate_limited += 1
                log.warning("429 from HighLevel on %s %s (%s); waiting %.2fs", method, path, key, error.retry_after)
                continue
            if isinstance(error, GhlAuthError) and not refreshed:
                refreshed = True
                log.info("401 on %s %s for %s: refreshing the token once", method, path, key)
                if location_id is not None:
                    await self._tokens.refresh(location_id, rejected_token=token)
                else:
                    assert company_id is not None
                    await self._tokens.refresh_company(company_id, rejected_token=token)
                continue
            if isinstance(error, GhlTransientError) and idempotent and attempt < config.max_retries:
                await self._backoff(attempt, method, path, error)
                attempt += 1
                continue
            raise error

    def _version(self, path: str) -> str:
        return version_for(path, self.options.version_overrides)

    async def _backoff(self, attempt: int, method: str, path: str, error: GhlError) -> None:
        delay = self.scheduler.retry_policy.delay(attempt)
        log.info("%s %s failed (%s, status %s); retry %d in %.2fs", method, path, error.message,
                 error.status, attempt + 1, delay)
        await asyncio.sleep(delay)

    def _provider_id(self) -> str:
        if not self._settings.provider_id:
            raise ConfigError("GHL_PROVIDER_ID (the conversationProviderId of the marketplace app) is not set")
        return self._settings.provider_id

    # --- contacts -------------------------------------------------------------------------------

    async def upsert_contact(
        self,
        location_id: str,
        phone: str | None,
        *,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        source: str | None = "WhatsApp",
        default_region: str | None = None,
    ) -> UpsertedContact:
        """Find-or-create the contact for a phone number (``POST /contacts/upsert``).

        ``phone=None`` creates a contact known only by name (a WhatsApp group, or a sender WhatsApp
        shows only by LID — never given an invented number); the caller keeps its id.
        ``tags`` REPLACES the contact's tags in HighLevel (spec); pass None to leave them alone."""
        body: dict[str, Any] = {"locationId": location_id}
        if phone is not None:
            body["phone"] = normalize_phone(phone, default_region)
        elif not name:
            raise ValueError("a contact without a phone number needs a name")
        if name:
            body["name"] = name
        if tags is not None:
            body["tags"] = list(tags)
        if source:
            body["source"] = source
        response = await self._call("POST", "/contacts/upsert", location_id=location_id, json=body)
        data = body_of(response)
        contact = data.get("contact") or {}
        if not contact.get("id"):
            raise GhlError("contact upsert answered without a contact id", status=response.status_code)
        return UpsertedContact(contact=_contact_from(contact, location_id), created=bool(data.get("new")))

    async def find_duplicate_contact(
        self, location_id: str, phone: str, *, default_region: str | None = None
    ) -> Contact | None:
        """The contact HighLevel would match for this phone (``GET /contacts/search/duplicate``)."""
        e164 = normalize_phone(phone, default_region)
        response = await self._call(
            "GET", "/contacts/search/duplicate", location_id=location_id,
            params={"locationId": location_id, "number": e164},
        )
        contact = body_of(response).get("contact")
        return _contact_from(contact, location_id) if isinstance(contact, dict) and contact.get("id") else None

    async def get_contact(self, location_id: str, contact_id: str) -> Contact:
        response = await self._call("GET", f"/contacts/{contact_id}", location_id=location_id)
        return _contact_from(body_of(response).get("contact") or {}, location_id)

    async def update_contact(self, location_id: str, contact_id: str, *, name: str) -> Contact:
        """Rename a contact (``PUT /contacts/{contactId}``; only the name is sent, nothing else changes)."""
        response = await self._call("PUT", f"/contacts/{contact_id}", location_id=location_id, json={"name": name})
        return _contact_from(body_of(response).get("contact") or {}, location_id)

    # --- messages -------------------------------------------------------------------------------

    async def add_inbound_message(
        self,
        location_id: str,
        contact_id: str,
        text: str | None,
        *,
        attachments: Sequence[str] = (),
        alt_id: str | None = None,
        direction: Literal["inbound", "outbound"] = "inbound",
        date: datetime | None = None,
        conversation_id: str | None = None,
        conversation_provider_id: str | None = None,
    ) -> InboundResult:
        """Post a provider message into the contact's conversation (``/conversations/messages/inbound``).

        ``direction="outbound"`` records a message sent from the phone itself (no webhook fires).
        ``alt_id`` (the WhatsApp message id) makes the message findable after a crash; when the
        request may have reached HighLevel but no answer came back, the client looks the message
        up by ``alt_id`` before posting again, so a retry never duplicates it.

        A 2xx with an empty body means HighLevel dropped the message (missing/unknown provider id,
        ISSUE #70): raised as ``GhlBadRequest`` rather than treated as success."""
        if direction not in ("inbound", "outbound"):
            raise ValueError(f"direction must be inbound or outbound, not {direction!r}")
        body: dict[str, Any] = {
            "type": self.options.inbound_message_type,
            "contactId": contact_id,
            "direction": direction,
        }
        if self.options.send_provider_id:
            body["conversationProviderId"] = conversation_provider_id or self._provider_id()
        if conversation_id:
            body["conversationId"] = conversation_id
        if text:
            body["message"] = text
        if attachments:
            body["attachments"] = list(attachments)
        if alt_id:
            body["altId"] = alt_id
        if date is not None:
            body["date"] = _iso(date)
        config = self.scheduler.config
        attempt = 0
        while True:
            try:
                response = await self._call(
                    "POST", "/conversations/messages/inbound", location_id=location_id, json=body,
                    idempotent=alt_id is None,
                )
                break
            except GhlTransientError as exc:
                if alt_id is None or isinstance(exc, GhlRateLimited) or attempt >= config.max_retries:
                    raise
                found = await self._lookup_after_ambiguity(location_id, contact_id, conversation_id, alt_id)
                if found is not None:
                    return found
                await self._backoff(attempt, "POST", "/conversations/messages/inbound", exc)
                attempt += 1
        data = body_of(response)
        message_id = data.get("messageId")
        if not message_id:
            raise GhlBadRequest(
                "HighLevel accepted the inbound message but stored nothing (empty answer): the "
                "conversationProviderId is missing or not this app's provider",
                status=response.status_code, code="PROVIDER_MESSAGE_DROPPED",
            )
        return InboundResult(
            message_id=str(message_id),
            conversation_id=str(data.get("conversationId") or conversation_id or ""),
            contact_id=data.get("contactId") or contact_id,
        )

    async def _lookup_after_ambiguity(
        self, location_id: str, contact_id: str, conversation_id: str | None, alt_id: str
    ) -> InboundResult | None:
        try:
            found = await self.find_message_by_alt_id(
                location_id, alt_id, contact_id=contact_id, conversation_id=conversation_id
            )
        except GhlTransientError:
            return None
        if found is None:
            return None
        log.info("inbound message with altId %s was stored despite the failed answer; not posting again", alt_id)
        return InboundResult(message_id=found.id, conversation_id=found.conversation_id or "",
                             contact_id=found.contact_id or contact_id, recovered=True)

    async def update_message_status(
        self,
        location_id: str,
        message_id: str,
        status: str,
        *,
        error: str | None = None,
        error_code: str = "1",
    ) -> None:
        """Report delivery of an outbound provider message (``PUT .../status``).

        A 403 in the seconds after HighLevel handed us the message is the documented race (ISSUE #4):
        retried with backoff for ``status_race_total_seconds``, never by refreshing the token, then
        raised as ``GhlStatusRace`` (transient: the job queue may try again later). A 403 saying the
        token has no access to the location is a real ``GhlForbidden``."""
        if status not in PROVIDER_STATUSES:
            raise ValueError(f"HighLevel accepts status {sorted(PROVIDER_STATUSES)}, not {status!r}")
        body: dict[str, Any] = {"status": status}
        if error is not None or status == "failed":
            body["error"] = {"code": error_code, "type": "saas", "message": (error or "delivery failed")[:500]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.status_race_total_seconds
        delay = self.options.status_race_initial_delay
        while True:
            try:
                await self._call("PUT", f"/conversations/messages/{message_id}/status",
                                 location_id=location_id, json=body)
                return
            except GhlForbidden as exc:
                if exc.status != 403 or "access to this location" in exc.message.lower():
                    raise
                remaining = deadline - loop.time()
                race = GhlStatusRace(exc.message, status=403, code=exc.code, detail=exc.detail)
                if remaining <= 0:
                    raise race from exc
                wait = min(delay, remaining)
                log.info("status update of %s refused (403 race); retrying in %.2fs", message_id, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.options.status_race_max_delay)

    # --- conversations --------------------------------------------------------------------------

    async def search_conversations(
        self, location_id: str, *, contact_id: str | None = None, limit: int = 20
    ) -> list[Conversation]:
        """``GET /conversations/search`` (eventually consistent in HighLevel, ISSUE #5)."""
        params: dict[str, Any] = {"locationId": location_id, "limit": limit}
        if contact_id:
            params["contactId"] = contact_id
        response = await self._call("GET", "/conversations/search", location_id=location_id, params=params)
        return [
            Conversation(id=str(c.get("id")), location_id=str(c.get("locationId") or location_id),
                         contact_id=c.get("contactId"))
            for c in body_of(response).get("conversations") or []
            if isinstance(c, dict) and c.get("id")
        ]

    async def create_conversation(self, location_id: str, contact_id: str) -> Conversation:
        """``POST /conversations/``; if one exists already (400 "already exists", ISSUE #5) the
        existing one is looked up and returned."""
        try:
            response = await self._call(
                "POST", "/conversations/", location_id=location_id,
                json={"locationId": location_id, "contactId": contact_id},
            )
        except GhlBadRequest as exc:
            if "already exists" not in exc.message.lower():
                raise
            found = await self.search_conversations(location_id, contact_id=contact_id, limit=1)
            if not found:
                raise
            return found[0]
        data = body_of(response).get("conversation") or {}
        return Conversation(id=str(data.get("id")), location_id=location_id, contact_id=contact_id)

    async def get_or_create_conversation(self, location_id: str, contact_id: str) -> Conversation:
        """The contact's conversation, created if there is none (uploads need a conversation id)."""
        found = await self.search_conversations(location_id, contact_id=contact_id, limit=1)
        return found[0] if found else await self.create_conversation(location_id, contact_id)

    async def list_conversation_messages(
        self, location_id: str, conversation_id: str, *, last_message_id: str | None = None, limit: int = 100
    ) -> MessagePage:
        """One page of ``GET /conversations/{id}/messages`` (nested ``messages.messages``, ISSUE #54)."""
        params: dict[str, Any] = {"limit": limit}
        if last_message_id:
            params["lastMessageId"] = last_message_id
        response = await self._call(
            "GET", f"/conversations/{conversation_id}/messages", location_id=location_id, params=params
        )
        outer = body_of(response).get("messages")
        page: dict[str, Any] = outer if isinstance(outer, dict) else {"messages": outer or []}
        last = page.get("lastMessageId")
        return MessagePage(
            messages=tuple(_message_from(m) for m in page.get("messages") or [] if isinstance(m, dict)),
            last_message_id=str(last) if last else None,
            next_page=bool(page.get("nextPage")),
        )

    async def find_message_by_alt_id(
        self,
        location_id: str,
        alt_id: str,
        *,
        contact_id: str | None = None,
        conversation_id: str | None = None,
    ) -> ConversationMessage | None:
        """Crash recovery: the message we posted with ``altId`` (the WhatsApp id), if HighLevel has it.

        Scans the conversation (given, or the contact's conversations) newest first, up to
        ``alt_id_max_pages`` pages each."""
        if conversation_id is None and contact_id is None:
            raise ValueError("contact_id or conversation_id is required")
        conversation_ids = [conversation_id] if conversation_id else [
            c.id for c in await self.search_conversations(location_id, contact_id=contact_id, limit=20)
        ]
        for conv_id in conversation_ids:
            last: str | None = None
            for _ in range(self.options.alt_id_max_pages):
                page = await self.list_conversation_messages(
                    location_id, conv_id, last_message_id=last, limit=self.options.message_page_limit
                )
                for message in page.messages:
                    if message.alt_id == alt_id:
                        return message
                if not page.next_page or not page.last_message_id or page.last_message_id == last:
                    break
                last = page.last_message_id
        return None

    # --- attachments ----------------------------------------------------------------------------

    async def upload_attachment(
        self,
        location_id: str,
        conversation_id: str,
        contact_id: str,
        filename: str,
        data: bytes,
        content_type: str,
    ) -> UploadedAttachment:
        """Host a file in HighLevel and return its public URL.

        Up to ``multipart_max_bytes``: one multipart ``POST /conversations/messages/upload`` with the
        file under ``fileAttachment``. Larger (WhatsApp media up to 100 MB): initiate → PUT the bytes
        to the signed URL → complete. Over the channel limit: ``MediaTooLarge`` before any request."""
        size = len(data)
        if size > self.options.large_upload_max_bytes:
            raise MediaTooLarge(
                f"{filename} is {size} bytes; HighLevel takes at most {self.options.large_upload_max_bytes}"
            )
        if size <= self.options.multipart_max_bytes:
            response = await self._call(
                "POST", "/conversations/messages/upload", location_id=location_id,
                data={"conversationId": conversation_id, "contactId": contact_id, "locationId": location_id},
                files={"fileAttachment": (filename, data, content_type)},
            )
            url = self._uploaded_url(body_of(response), filename)
            return UploadedAttachment(filename=filename, url=url, size=size, via="multipart")
        initiated = body_of(await self._call(
            "POST", "/conversations/messages/upload/initiate", location_id=location_id,
            json={"locationId": location_id, "conversationId": conversation_id, "filename": filename,
                  "contentType": content_type, "fileSize": size, "channel": self.options.large_upload_channel},
        ))
        upload_url, upload_id, file_path = (
            initiated.get("uploadUrl"), initiated.get("uploadId"), initiated.get("filePath")
        )
        if not (upload_url and upload_id and file_path):
            raise GhlError("upload initiate answered without uploadUrl/uploadId/filePath", status=200)
        max_size = initiated.get("maxFileSize")
        if isinstance(max_size, int | float) and size > max_size:
            raise MediaTooLarge(f"{filename} is {size} bytes; HighLevel allows {int(max_size)} for this upload")
        await self._put_signed(str(upload_url), data, content_type)
        completed = body_of(await self._call(
            "POST", "/conversations/messages/upload/complete", location_id=location_id,
            json={"uploadId": upload_id, "filePath": file_path, "locationId": location_id,
                  "conversationId": conversation_id, "filename": filename},
        ))
        return UploadedAttachment(
            filename=filename, url=self._uploaded_url(completed, filename), size=size, via="signed-url"
        )

    async def _put_signed(self, url: str, data: bytes, content_type: str) -> None:
        """PUT to the signed storage URL: no bearer token (the URL carries its own authority), not
        counted against the API rate limit, retried on transient failures (a PUT is idempotent)."""
        config = self.scheduler.config
        attempt = 0
        while True:
            try:
                response = await self._http.put(url, content=data, headers={"Content-Type": content_type})
            except httpx.HTTPError as exc:
                error: GhlError = transport_error(exc, "upload to signed URL")
            else:
                if response.is_success:
                    return
                error = map_error(response)
            if not error.transient or attempt >= config.max_retries:
                raise error
            await self._backoff(attempt, "PUT", "signed upload URL", error)
            attempt += 1

    @staticmethod
    def _uploaded_url(body: Mapping[str, Any], filename: str) -> str:
        files = body.get("uploadedFiles")
        if isinstance(files, dict) and files:
            url = files.get(filename) or next(iter(files.values()))
            if isinstance(url, str) and url:
                return url
        raise GhlError("upload answered without the file's URL", status=200)

    # --- locations ------------------------------------------------------------------------------

    async def get_location(self, location_id: str, *, company_id: str | None = None) -> LocationDetails:
        """``GET /locations/{id}`` with the location's token (or, before one exists, the company's)."""
        if company_id is not None:
            response = await self._call("GET", f"/locations/{location_id}", company_id=company_id)
        else:
            response = await self._call("GET", f"/locations/{location_id}", location_id=location_id)
        data = body_of(response).get("location") or {}
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        return LocationDetails(
            id=str(data.get("id") or location_id),
            name=str(data.get("name") or location_id),
            company_id=data.get("companyId"),
            timezone=data.get("timezone"),
            country=data.get("country"),
            allow_duplicate_contact=settings.get("allowDuplicateContact") if settings else None,
        )

    async def installed_locations(
        self, company_id: str, *, app_id: str | None = None, page_size: int = 100
    ) -> list[InstalledLocation]:
        """Locations of the agency where this app is installed (``GET /oauth/installedLocations``,
        company token). ``app_id`` defaults to the client id's part before the '-' (docs/highlevel-api.md §0)."""
        if app_id is None:
            if not self._settings.client_id:
                raise ConfigError("GHL_CLIENT_ID is not set")
            app_id = self._settings.client_id.split("-")[0]
        out: list[InstalledLocation] = []
        skip = 0
        while True:
            response = await self._call(
                "GET", "/oauth/installedLocations", company_id=company_id,
                params={"companyId": company_id, "appId": app_id, "isInstalled": "true",
                        "limit": str(page_size), "skip": str(skip)},
            )
            data = body_of(response)
            rows = [r for r in data.get("locations") or [] if isinstance(r, dict)]
            out.extend(
                InstalledLocation(id=str(r.get("_id") or r.get("id")), name=str(r.get("name") or ""),
                                  address=r.get("address"), is_installed=r.get("isInstalled"))
                for r in rows
            )
            total = data.get("count")
            # page on what the server returned, not on what we asked: a server-side cap answers fewer
            # rows than ``limit`` on every page, so a short page is not the last one; ``count`` is
            if not rows:
                return out
            skip += len(rows)
            if isinstance(total, int | float) and not isinstance(total, bool):
                if skip >= total:
                    return out
            elif len(rows) < page_size:
                return out  # no count in the answer: a short page is the best end marker there is


__all__ = [
    "ClientOptions",
    "Contact",
    "Conversation",
    "ConversationMessage",
    "GhlClient",
    "InboundResult",
    "InstalledLocation",
    "InvalidPhoneNumber",
    "LocationDetails",
    "MessagePage",
    "UploadedAttachment",
    "UpsertedContact",
    "normalize_phone",
]
