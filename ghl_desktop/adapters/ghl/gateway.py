"""The bridge's view of HighLevel (core.ports.HighLevelGateway) on top of GhlClient, plus the
downloader for agents' attachment URLs."""

from __future__ import annotations

import asyncio
import ipaddress
import mimetypes
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote

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
                if name and not existing.name:  # HighLevel has none: the WhatsApp profile name; never overwrite one
                    await self._client.upsert_contact(location_id, phone, name=name, tags=None, source=None)
                return existing.id
        upserted = await self._client.upsert_contact(
            location_id, phone, name=name or (None if phone else "WhatsApp contact"), tags=list(tags))
        return upserted.contact.id

    async def name_contact(self, location_id: str, contact_id: str, name: str, *, placeholder: str) -> str:
        current = (await self._client.get_contact(location_id, contact_id)).name
        if current and current != placeholder:
            return current  # an agent named it: never overwritten
        await self._client.update_contact(location_id, contact_id, name=name)
        return name

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


#: redirects followed for one attachment (each hop is checked like the first URL)
MAX_MEDIA_REDIRECTS = 5
_NAME_MAX = 120
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _public(address: str) -> bool:
    """True only for globally routable unicast addresses (no loopback, private, link-local — which
    holds the cloud metadata address 169.254.169.254 —, shared 100.64/10, multicast, reserved)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not _public(str(embedded)):
            return False
    return bool(ip.is_global) and not ip.is_multicast


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def safe_file_name(raw: str) -> str:
    """A file name a phone may show and save: the last path segment only, no separators, control or
    reserved characters, no leading dots, at most 120 characters; "attachment" when nothing is left."""
    name = unquote(raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" ._")
    if len(name) > _NAME_MAX:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: _NAME_MAX - len(ext) - 1] + dot + ext) if dot and len(ext) <= 10 else name[:_NAME_MAX]
    return name or "attachment"


class MediaDownloader:
    """Fetches an agent's attachment URL for WhatsApp — safely, since whatever it fetches is sent to a
    customer (issue 10.2: a reply's attachment that redirected to a loopback page delivered that page).

    - only ``http``/``https``; no credentials in the URL;
    - the host is resolved first and refused unless EVERY address is public (not loopback, private,
      link-local/metadata, shared, multicast, reserved, or an IPv6 form of those); the connection then
      goes to the address that was checked (the URL's host stays in ``Host`` and TLS SNI, so the
      certificate is still verified for the name) — a DNS answer that changes between check and
      connect (rebinding) cannot redirect it;
    - redirects are followed by hand, at most :data:`MAX_MEDIA_REDIRECTS`, each hop checked the same way;
    - the body is streamed and refused past ``limit`` bytes; the file name is sanitised.

    ``test_loopback_origins`` ("http://127.0.0.1:PORT") lets the in-process sandbox serve its own
    attachments; it is empty unless the runtime runs in sandbox mode, and even then it opens only that
    exact origin and only when it resolves to loopback (never a private network)."""

    def __init__(self, http: httpx.AsyncClient, *, test_loopback_origins: Collection[str] = (),
                 resolver: Resolver | None = None) -> None:
        self._http = http
        self._test_origins = frozenset(o.rstrip("/").lower() for o in test_loopback_origins)
        self._resolve: Resolver = resolver or _resolve

    async def _pinned(self, url: httpx.URL) -> tuple[httpx.URL, dict[str, Any]]:
        """The URL with its host replaced by a checked address, and the request extensions."""
        if url.scheme not in ("http", "https"):
            raise GhlBadRequest(f"attachment URL scheme {url.scheme!r} is not allowed (http/https only)")
        if url.userinfo:
            raise GhlBadRequest("attachment URLs with credentials are not allowed")
        host = url.host
        if not host:
            raise GhlBadRequest("attachment URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = list(await self._resolve(host, port))
        except OSError as error:
            raise GhlTransientError(f"attachment host {host!r} cannot be resolved ({error})") from error
        if not addresses:
            raise GhlTransientError(f"attachment host {host!r} has no address")
        origin = f"{url.scheme}://{host}:{port}".lower()
        if origin in self._test_origins and all(_loopback(a) for a in addresses):
            allowed = True
        else:
            allowed = all(_public(a) for a in addresses)
        if not allowed:
            raise GhlBadRequest(f"attachment host {host!r} is not a public address; refused")
        address = addresses[0]
        extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" else {}
        return url.copy_with(host=address), extensions

    async def __call__(self, url: str, limit: int) -> FetchedMedia:
        try:
            current = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as error:
            raise GhlBadRequest("attachment URL is not a valid URL") from error
        try:
            for _hop in range(MAX_MEDIA_REDIRECTS + 1):
                target, extensions = await self._pinned(current)
                host_header = current.netloc.decode("ascii")
                # Connection: close — the pool is keyed by the IP we dialled, and a TLS connection made
                # for one name must never be reused for another name on the same address
                request = self._http.build_request("GET", target, headers={"Host": host_header, "Connection": "close"},
                                                   extensions=extensions)
                response = await self._http.send(request, stream=True, follow_redirects=False)
                try:
                    if response.is_redirect and "location" in response.headers:
                        try:
                            current = current.join(response.headers["location"])
                        except (httpx.InvalidURL, ValueError) as error:
                            raise GhlBadRequest("attachment redirect has an invalid Location") from error
                        continue
                    return await self._read(current, response, limit)
                finally:
                    await response.aclose()
        except httpx.HTTPError as error:
            raise GhlTransientError(f"attachment download failed: {type(error).__name__}") from error
        raise GhlBadRequest(f"attachment URL redirects more than {MAX_MEDIA_REDIRECTS} times")

    @staticmethod
    async def _read(url: httpx.URL, response: httpx.Response, limit: int) -> FetchedMedia:
        if response.status_code >= 500:
            raise GhlTransientError(f"attachment server answered {response.status_code}",
                                    status=response.status_code)
        if response.status_code == 404:
            raise GhlNotFound("attachment not found (404)", status=404)
        if response.status_code >= 300:
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
        name = safe_file_name(url.path)
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return FetchedMedia(data=b"".join(chunks), content_type=content_type, file_name=name)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
