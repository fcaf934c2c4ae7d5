"""The loopback listener that receives HighLevel's OAuth redirect, exercised over real HTTP."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from ghl_desktop.adapters.ghl.oauth import LoopbackReceiver, OAuthOptions, build_authorize_url
from ghl_desktop.core.errors import OAuthError


def _options(**kw: object) -> OAuthOptions:
    base = {"marketplace_base": "http://127.0.0.1:9", "port": 0, "timeout_seconds": 5.0}
    base.update(kw)
    return OAuthOptions(**base)  # type: ignore[arg-type]


def _refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_authorize_url_carries_what_highlevel_needs() -> None:
    url = httpx.URL(build_authorize_url(_options(marketplace_base="https://m.example/"), "app-cid",
                                        "http://127.0.0.1:53682/oauth/callback", "st4te"))
    assert url.path == "/oauth/chooselocation"
    q = url.params
    assert q["response_type"] == "code" and q["client_id"] == "app-cid" and q["state"] == "st4te"
    assert q["redirect_uri"] == "http://127.0.0.1:53682/oauth/callback"
    assert "conversations/message.write" in q["scope"].split(" ")
    v2 = httpx.URL(build_authorize_url(_options(authorize_path="/v2/oauth/chooselocation"), "c", "r", "s"))
    assert v2.path == "/v2/oauth/chooselocation"


@pytest.mark.asyncio
async def test_wrong_state_is_refused_and_the_listener_keeps_waiting_for_the_right_one() -> None:
    receiver = LoopbackReceiver(_options(), state="the-right-state")
    redirect = await receiver.start()
    assert redirect.startswith("http://127.0.0.1:") and redirect.endswith("/oauth/callback")
    try:
        async with httpx.AsyncClient() as browser:
            bad = await browser.get(redirect, params={"code": "stolen", "state": "forged"})
            assert bad.status_code == 400
            assert "does not belong" in bad.text
            missing = await browser.get(redirect, params={"code": "stolen"})
            assert missing.status_code == 400
            good = await browser.get(redirect, params={"code": "c0de", "state": "the-right-state"})
            assert good.status_code == 200 and "close this tab" in good.text
            again = await browser.get(redirect, params={"code": "other", "state": "the-right-state"})
            assert again.status_code == 409  # exactly one code
        assert await receiver.wait() == "c0de"
        assert receiver.refused == ["wrong state", "missing state"]
    finally:
        port = receiver.port
        await receiver.close()
    assert port is not None and _refuses_connections(port)


@pytest.mark.asyncio
async def test_timeout_raises_and_the_listener_is_shut_down() -> None:
    receiver = LoopbackReceiver(_options(timeout_seconds=0.3), state="s")
    redirect = await receiver.start()
    try:
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(redirect, params={"code": "x", "state": "nope"})).status_code == 400
        with pytest.raises(OAuthError, match=r"within 0\.3 s.*wrong state"):
            await receiver.wait()
    finally:
        await receiver.close()
    assert not receiver.running
    assert receiver.port is not None and _refuses_connections(receiver.port)


@pytest.mark.asyncio
async def test_denied_consent_ends_the_wait_at_once() -> None:
    receiver = LoopbackReceiver(_options(), state="s")
    redirect = await receiver.start()
    try:
        async with httpx.AsyncClient() as browser:
            page = await browser.get(redirect, params={"error": "access_denied", "state": "s"})
        assert page.status_code == 400
        with pytest.raises(OAuthError, match="access_denied"):
            await receiver.wait()
    finally:
        await receiver.close()


@pytest.mark.asyncio
async def test_state_may_be_optional_when_configured_but_a_wrong_one_never_is() -> None:
    receiver = LoopbackReceiver(_options(require_state=False), state="s")
    redirect = await receiver.start()
    try:
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(redirect, params={"code": "a", "state": "t"})).status_code == 400
            assert (await browser.get(redirect, params={"code": "b"})).status_code == 200
        assert await receiver.wait() == "b"
    finally:
        await receiver.close()


@pytest.mark.asyncio
async def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        receiver = LoopbackReceiver(_options(port=port), state="s")
        with pytest.raises(OAuthError, match=f"127.0.0.1:{port}"):
            await receiver.start()
        assert not receiver.running


@pytest.mark.asyncio
async def test_a_second_sign_in_right_after_a_completed_one_can_listen_again() -> None:
    """Issue 10.10: closing the listener after a flow leaves the browser's connection in TIME_WAIT on
    our port; without SO_REUSEADDR the next sign-in failed for ~60 s, blaming another program."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = LoopbackReceiver(_options(port=port), state="s1")
    redirect = await first.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # keep-alive, like a browser tab
    try:
        path = redirect.split(str(port), 1)[1]
        writer.write(f"GET {path}?code=c&state=s1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert b"200 OK" in await reader.readuntil(b"\r\n\r\n")
        assert await first.wait() == "c"
        await first.close()  # the server side closes first: its end of the connection waits in TIME_WAIT
        assert await reader.read() is not None  # the browser sees the close and closes too
    finally:
        writer.close()
    second = LoopbackReceiver(_options(port=port), state="s2")
    try:
        assert await second.start() == redirect
    finally:
        await second.close()


@pytest.mark.asyncio
async def test_a_port_taken_by_another_program_says_so() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OAuthError, match=f"port {port} is in use by another program"):
            await LoopbackReceiver(_options(port=port), state="s").start()
