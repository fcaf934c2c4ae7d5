"""An httpx transport on aiohttp's client: what ``create_http_client`` builds the app's one client on.

Why: httpx's default transport (httpcore on anyio) spends ~1.7 ms of CPU per HighLevel POST on pool
bookkeeping (every pooled connection's ``has_expired`` asks anyio for its peer name, cancel scopes,
sniffio); aiohttp's connector does the same job in C-accelerated code (docs/event-loop.md, "The HTTP
client" has the figures). Callers still see httpx only: ``httpx.Request`` in, ``httpx.Response`` out,
and every aiohttp failure comes out as the httpx exception httpcore would have raised for it, so
``transport.request_was_sent`` / ``transport_error`` and the ``core.errors`` mapping are unchanged.

The published ``httpx-aiohttp`` package (0.2.0) is not used: its exception table turns every
``ClientConnectionError`` — a refused connection, and a server that dropped the connection after a
POST was sent — into ``httpx.ConnectTimeout`` (which says "never sent", so a POST would be repeated);
it hands aiohttp the URL as text, which yarl re-quotes (``%2F`` → ``/``, ``%7E`` → ``~``: a signed
storage URL no longer matches its signature); aiohttp then adds ``Content-Type:
application/octet-stream`` to requests that had none and keeps a second cookie jar of its own; and a
request body has no write timeout. This module does what it does without those.

Behaviour, phase by phase (``httpx.Timeout`` → aiohttp):

- ``pool`` + ``connect`` → ``ClientTimeout.connect`` (waiting for a pooled connection plus DNS, TCP and
  TLS: aiohttp bounds them together), ``connect`` alone → ``sock_connect`` (the TCP connect);
- ``read`` → ``sock_read``: the longest silence while waiting for / reading the answer;
- ``write``: aiohttp has no write timeout (its read timer starts only once the body is sent, so a
  stalled 100 MB upload would wait forever). Bodies over :data:`WATCHED_BODY_BYTES` are fed to aiohttp
  in chunks and each chunk it takes pushes a deadline ``write`` seconds ahead; when it passes, the
  request is cancelled and ``httpx.WriteTimeout`` raised. Small bodies fit the socket buffer at once.
- limits: ``max_connections`` → the connector's ``limit``, ``keepalive_expiry`` → ``keepalive_timeout``;
  ``max_keepalive_connections`` has no aiohttp equivalent (idle connections are kept up to ``limit``).
- ``sni_hostname`` (``MediaDownloader`` dials a checked IP) → ``server_hostname``: the name sent as
  SNI and the one the certificate is verified against; aiohttp's pool key includes it, so a TLS
  connection made for one name is never reused for another on the same address. An explicit ``Host``
  header and ``Connection: close`` go out as given.
- no redirects, no decompression (httpx decodes), no cookies (httpx's jar), HTTP/1.1 only.

The aiohttp session is made on the first request (it belongs to the running loop) and closed by
``aclose``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, AsyncIterator

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

#: request bodies larger than this get the write deadline (smaller ones fit the socket's send buffer)
WATCHED_BODY_BYTES = 64 * 1024
_CHUNK = 64 * 1024

#: aiohttp → httpx, most specific first (the first match wins); the httpx types are the ones httpcore
#: raises for the same failure, so ``request_was_sent`` keeps its meaning
_EXCEPTIONS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),  # pool wait or connect: never sent
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS handshake / certificate
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # closed before / while answering
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut short, bad chunking
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # an answer that is not HTTP
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.ReadError),  # reset / broken pipe once connected
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.ClientError, httpx.TransportError),
)


def map_exception(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception for an aiohttp failure (the message keeps aiohttp's text)."""
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            return target(str(exc) or type(exc).__name__, request=request)
    return httpx.TransportError(str(exc) or type(exc).__name__, request=request)  # pragma: no cover


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except aiohttp.ClientError as exc:
            raise map_exception(exc, self._request) from exc

    async def aclose(self) -> None:
        # back to the pool when the body was read to the end, closed otherwise
        self._response.release()


class _WatchedBody:
    """A request body handed to aiohttp chunk by chunk; every chunk it takes (i.e. the previous one
    left the socket buffer) moves ``deadline`` ``write`` seconds ahead."""

    def __init__(self, body: bytes | AsyncIterable[bytes], write: float) -> None:
        self._body = body
        self._write = write
        self.deadline = asyncio.timeout(None)
        self._watching = True

    def stop(self) -> None:
        self._watching = False

    def _push(self) -> None:
        if self._watching:
            self.deadline.reschedule(asyncio.get_running_loop().time() + self._write)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        if isinstance(self._body, bytes):
            view = memoryview(self._body)
            for start in range(0, len(view), _CHUNK):
                self._push()
                yield bytes(view[start:start + _CHUNK])
        else:
            async for chunk in self._body:
                self._push()
                yield chunk
        self._push()  # the last chunk still has to leave


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx → aiohttp (see the module docstring for what maps to what)."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._ssl = verify
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport has been closed")
        options: dict[str, object] = {"limit": self._limits.max_connections or 0}
        if self._limits.keepalive_expiry is not None:
            options["keepalive_timeout"] = self._limits.keepalive_expiry
        connector = aiohttp.TCPConnector(ssl=self._ssl, **options)  # type: ignore[arg-type]
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
            # httpx already sent Accept / Accept-Encoding / User-Agent / Content-Type where it has one:
            # nothing is added to a request that has none
            skip_auto_headers=("Content-Type",),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(),
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeouts = request.extensions.get("timeout", {})
        headers = CIMultiDict(request.headers.multi_items())
        body: bytes | AsyncIterable[bytes] | None
        try:
            body = request.content or None
        except httpx.RequestNotRead:
            body = request.stream  # type: ignore[assignment]
            headers.popall("Transfer-Encoding", None)  # aiohttp chunks a body of unknown length itself
        write = timeouts.get("write")
        watched = None
        if body is not None and write is not None and (not isinstance(body, bytes)
                                                       or len(body) > WATCHED_BODY_BYTES):
            watched = _WatchedBody(body, write)
        try:
            if watched is None:
                response = await self._send(session, request, headers, body, timeouts)
            else:
                async with watched.deadline:
                    try:
                        response = await self._send(session, request, headers, watched, timeouts)
                    finally:
                        watched.stop()
        except Exception as exc:
            if watched is not None and watched.deadline.expired():
                raise httpx.WriteTimeout("the request body stopped being sent", request=request) from exc
            if isinstance(exc, aiohttp.ClientError):
                raise map_exception(exc, request) from exc
            raise
        version = response.version
        extensions = {
            "http_version": f"HTTP/{version.major}.{version.minor}".encode() if version else b"HTTP/1.1",
            "reason_phrase": (response.reason or "").encode("ascii", "replace"),
        }
        return httpx.Response(status_code=response.status, headers=response.raw_headers,
                              stream=_ResponseBody(response, request), extensions=extensions)

    @staticmethod
    async def _send(session: aiohttp.ClientSession, request: httpx.Request, headers: CIMultiDict[str],
                    data: object, timeouts: dict[str, float | None]) -> aiohttp.ClientResponse:
        connect, pool = timeouts.get("connect"), timeouts.get("pool")
        return await session.request(
            request.method,
            # already percent-encoded by httpx: as is (yarl would re-quote it and break signed URLs)
            URL(str(request.url), encoded=True),
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=None if connect is None or pool is None else connect + pool,
                sock_connect=connect,
                sock_read=timeouts.get("read"),
            ),
            server_hostname=request.extensions.get("sni_hostname"),
        )

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


__all__ = ["WATCHED_BODY_BYTES", "AiohttpTransport", "map_exception"]
