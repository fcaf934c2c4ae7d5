"""What the app's HTTP client (``create_http_client``, on aiohttp) promises its callers when a server
misbehaves, and what it sends: a dropped POST is "maybe sent" (never silently repeated), a body cut
short is a transient error, a stalled upload ends, a signed URL goes out byte for byte."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import pytest_asyncio

from ghl_desktop.adapters.ghl import create_http_client
from ghl_desktop.adapters.ghl.transport import request_was_sent, transport_error
from ghl_desktop.config import Settings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


class RawServer:
    """A loopback TCP server whose handler speaks (or fails to speak) HTTP by hand."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.url = ""

    async def start(self, handler: Handler, *, receive_buffer: int | None = None) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # inherited by accepted sockets
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(serve, sock=sock)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest_asyncio.fixture
async def raw() -> AsyncIterator[RawServer]:
    server = RawServer()
    yield server
    await server.stop()


@pytest.mark.asyncio
async def test_a_post_the_server_dropped_unanswered_counts_as_sent(raw: RawServer, http: httpx.AsyncClient) -> None:
    """The server read the POST and closed without a word: it may have acted on it, so the client must
    not call it "never sent" (GhlClient would repeat a non-idempotent send-message POST)."""
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.close()

    url = await raw.start(drop)
    with pytest.raises(httpx.HTTPError) as caught:
        await http.post(url + "/conversations/messages", json={"type": "SMS"})
    assert request_was_sent(caught.value)
    assert transport_error(caught.value, "POST").transient


@pytest.mark.asyncio
async def test_a_refused_connection_counts_as_never_sent(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.HTTPError) as caught:
        await http.post(f"http://127.0.0.1:{port}/conversations/messages", json={})
    assert not request_was_sent(caught.value)
    assert transport_error(caught.value, "POST").transient


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_a_body_cut_short_is_a_transient_error(raw: RawServer, http: httpx.AsyncClient, stream: bool) -> None:
    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":")
        await writer.drain()
        writer.close()

    url = await raw.start(truncate)
    with pytest.raises(httpx.HTTPError) as caught:
        if stream:
            async with http.stream("GET", url + "/media.png") as response:
                async for _chunk in response.aiter_bytes():
                    pass
        else:
            await http.get(url + "/locations/x")
    assert request_was_sent(caught.value)
    assert transport_error(caught.value, "GET").transient


@pytest.mark.asyncio
async def test_a_stalled_upload_ends_with_a_timeout(raw: RawServer) -> None:
    """A storage server that stops reading a 100 MB upload: aiohttp alone would wait for ever (its read
    timer starts once the body is sent); the write timeout ends it, as a transient "maybe sent" error."""
    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await asyncio.Event().wait()  # holds the connection open, reads nothing more

    url = await raw.start(never_read, receive_buffer=64 * 1024)
    timeout = httpx.Timeout(connect=5.0, read=5.0, write=0.3, pool=5.0)
    async with create_http_client(Settings(api_base=url), timeout=timeout) as http:
        with pytest.raises(httpx.TimeoutException) as caught:
            await http.put(url + "/signed-upload", content=b"\0" * (16 * 1024 * 1024),
                           headers={"Content-Type": "video/mp4"})
    assert request_was_sent(caught.value)
    assert transport_error(caught.value, "upload to signed URL").transient


@pytest.mark.asyncio
async def test_what_goes_out_is_what_httpx_built(raw: RawServer, http: httpx.AsyncClient) -> None:
    """A signed storage URL is sent byte for byte (a re-quoted ``%2F`` / ``%7E`` no longer matches its
    signature) and a request without a body gets no invented Content-Type."""
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            heads.append(await _read_head(reader))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()

    url = await raw.start(record)
    signed = "/b/o%20x.jpg?X-Goog-Credential=a%2Fb%2Fc&X-Goog-Signature=ab%7E+c&q=%2B1"
    assert (await http.get(url + signed)).json() == {}
    assert (await http.post(url + "/oauth/reconnect")).status_code == 200
    assert heads[0].split(b"\r\n")[0] == f"GET {signed} HTTP/1.1".encode()
    post = heads[1].lower()
    assert post.startswith(b"post /oauth/reconnect http/1.1") and b"content-type" not in post
    assert b"user-agent: ghl-desktop" in post and b"accept: application/json" in post
