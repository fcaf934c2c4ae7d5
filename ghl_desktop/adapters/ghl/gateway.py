"""The bridge's view of HighLevel (core.ports.HighLevelGateway) on top of GhlClient, plus the
downloader for agents' attachment URLs."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import unquote, urlparse

import httpx

from ghl_desktop.adapters.ghl.client import GhlClient
from ghl_desktop.core.errors import GhlBadRequest, GhlNotFound, GhlTransientError, MediaTooLarge
from ghl_desktop.core.ports import FetchedMedia


@dataclass(frozen=True, slots=True)
class Posted:
    message_id: str
    conversation_id: str | None


class GhlGateway:
    def __init__(self, client: GhlClient) -> None:
        self._client = client

    async def upsert_contact(
        self, location_id: str, *, phone: str | None, name: str | None, tags: Sequence[str]
    ) -> str:
        # Tags REPLACE a contact's tags in HighLevel: only a contact we create gets ours, so an
        # agency's own tags on an existing contact survive.
        if phone is not None:
            existing = await self._client.find_duplicate_contact(location_id, phone)
            if existing is not None:
                return existing.id
        upserted = await self._client.upsert_contact(
            location_id, phone, name=name or (None if phone else "WhatsApp contact"), tags=list(tags))
        return upserted.contact.id

    async def post_message(
        self,
        location_id: str,
        *,
        contact_id: str,
        text: str,
        attachments: Sequence[str],
        alt_id: str,
        direction: str,
        date: datetime,
    ) -> Posted:
        way: Literal["inbound", "outbound"] = "outbound" if direction == "outbound" else "inbound"
        result = await self._client.add_inbound_message(
            location_id, contact_id, text, attachments=attachments, alt_id=alt_id, direction=way, date=date)
        return Posted(result.message_id, result.conversation_id or None)

    async def find_message_by_alt_id(self, location_id: str, *, contact_id: str, alt_id: str) -> str | None:
        found = await self._client.find_message_by_alt_id(location_id, alt_id, contact_id=contact_id)
        return found.id if found else None

    async def update_status(self, location_id: str, message_id: str, status: str, error: str | None) -> None:
        await self._client.update_message_status(location_id, message_id, status, error=error)

    async def upload(
        self,
        location_id: str,
        *,
        contact_id: str,
        conversation_id: str | None,
        filename: str,
        data: bytes,
        content_type: str,
    ) -> str:
        if conversation_id is None:
            conversation_id = (await self._client.get_or_create_conversation(location_id, contact_id)).id
        uploaded = await self._client.upload_attachment(
            location_id, conversation_id, contact_id, filename, data, content_type)
        return uploaded.url


class MediaDownloader:
    """Fetches an agent's attachment URL, streaming, refusing anything over the byte limit."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def __call__(self, url: str, limit: int) -> FetchedMedia:
        try:
            async with self._http.stream("GET", url, follow_redirects=True) as response:
                if response.status_code >= 500:
                    raise GhlTransientError(f"attachment server answered {response.status_code}",
                                            status=response.status_code)
                if response.status_code == 404:
                    raise GhlNotFound("attachment not found (404)", status=404)
                if response.status_code >= 400:
                    raise GhlBadRequest(f"attachment download refused ({response.status_code})",
                                        status=response.status_code)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise MediaTooLarge(f"{_mb(int(declared))} is over the {_mb(limit)} limit")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise MediaTooLarge(f"more than the {_mb(limit)} limit")
                    chunks.append(chunk)
                content_type = response.headers.get("content-type", "").split(";")[0].strip()
        except httpx.HTTPError as error:
            raise GhlTransientError(f"attachment download failed: {type(error).__name__}") from error
        name = unquote(urlparse(url).path.rsplit("/", 1)[-1]) or "attachment"
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FetchedMedia(data=b"".join(chunks), content_type=content_type, file_name=name)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
