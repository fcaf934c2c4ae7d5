"""The sandbox's phone page (/phones) in a real headless Chromium: a person links a number by
scanning the code the app shows, types a pairing code, writes as a customer (text, a picture file, a
generated sample picture) and drops numbers; the app's own simulated transport sees each of those.

Skipped when no chromium is installed, except under CI (env ``CI``), where that is a failure.
The screenshots land in ``$GHL_TEST_ARTIFACTS`` (default ``test-artifacts/``)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from ghl_desktop.adapters.whatsapp.simulated import SimulatedTransport
from ghl_desktop.core.whatsapp import (
    Connected,
    Disconnected,
    IncomingMessage,
    LoggedOut,
    MessageKind,
    QrCode,
    StreamReplaced,
    TemporarilyBanned,
)
from ghl_desktop.sandbox.phones_page import PHONES_PATH
from ghl_desktop.sandbox.server import RunningSandbox, running_sandbox
from ghl_desktop.sandbox.whatsapp.network import NETWORK_KEY
from tests.sandbox.chromium import chromium_page, chromium_path
from tests.sandbox.wa_harness import Recorder, wait_until

ROOT = Path(__file__).resolve().parents[2]
LINK_AS = "+15550100007"
MARIA = "+4917011112222"
#: a 2×2 PNG (red, green / blue, white), as a person's picture file
PNG_2X2 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)


def artifacts_dir() -> Path:
    path = Path(os.environ.get("GHL_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def _need_chromium() -> None:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but chromium is not installed (scripts/install-system-deps.sh installs it)")
        pytest.skip("chromium is not installed")


@pytest_asyncio.fixture
async def sb(tmp_path: Path) -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(status_race_seconds=0.0, state_dir=str(tmp_path / "sandbox")) as running:
        yield running


async def start_linking(sb: RunningSandbox, tmp_path: Path, session: str) -> tuple[SimulatedTransport, Recorder]:
    """The app's own transport, unpaired: it shows rotating QR codes, as the linking panel does."""
    rec = Recorder()
    transport = SimulatedTransport(session, sb.url, rec, tmp_path / f"{session}.json")
    await transport.start()
    await rec.next(QrCode)
    return transport, rec


async def network_state(sb: RunningSandbox) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=sb.url) as client:
        data: dict[str, object] = (await client.get("/_sandbox/whatsapp/state")).json()
        return data


def linked(state: dict[str, object], phone: str) -> dict[str, object] | None:
    numbers = state["linked_numbers"]
    assert isinstance(numbers, list)
    return next((n for n in numbers if n["phone"] == phone), None)


@pytest.mark.asyncio
async def test_the_page_is_static_with_a_strict_policy_and_the_inbox_links_it(sb: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=sb.url) as client:
        page = await client.get(PHONES_PATH)
        inbox = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy.split("script-src", 1)[1].split(";")[0]
    assert "connect-src 'self'" in policy and "default-src 'none'" in policy
    sinks = (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write")
    assert not [sink for sink in sinks if sink in page.text]
    assert f'href="{PHONES_PATH}"' in inbox.text


@pytest.mark.asyncio
async def test_scan_chat_pictures_and_log_out_from_the_page(sb: RunningSandbox, tmp_path: Path) -> None:
    transport, rec = await start_linking(sb, tmp_path, "s1")
    picture = tmp_path / "holiday.png"
    picture.write_bytes(PNG_2X2)
    try:
        async with chromium_page(tmp_path / "profile") as page:
            await page.goto(sb.url + PHONES_PATH)
            # the code the app shows is listed; one click scans it as the chosen number
            await page.wait_for("document.querySelector('#qr-list .row.qr .session')?.textContent === 's1'")
            # the code's remaining lifetime, as the app's countdown shows it (the first code lasts 60 s)
            left = await page.evaluate("document.querySelector('#qr-list .row.qr .mono').textContent")
            assert re.fullmatch(r"code …\S{8} · \d+ s left", left) and 0 < int(left.split("·")[1].split()[0]) <= 60
            await page.type_into("#qr-list .row.qr input", LINK_AS)
            await page.click("#qr-list .row.qr button.scan")
            connected = await rec.next(Connected)
            assert connected.jid == "15550100007@s.whatsapp.net"
            number = linked(await network_state(sb), LINK_AS)
            assert number is not None and number["state"] == "connected" and number["session"] == "s1"
            await page.wait_for(f"[...document.querySelectorAll('#number-list .row.number b')]"
                                f".some(b => b.textContent === '{LINK_AS}')")
            assert await page.evaluate("document.querySelectorAll('#qr-list .row.qr').length") == 0

            # a customer with a hostile name is added through the form and writes a text
            await page.type_into("#new-phone", MARIA)
            await page.type_into("#new-name", "Maria <b onmouseover=alert(1)>")
            await page.click("#add-phone button[type=submit]")
            await page.wait_for(f"document.querySelector('#customer').value === '{MARIA}'")
            await page.wait_for(f"document.querySelector('#to').value === '{LINK_AS}'")
            await page.type_into("#text", "Hola, ¿tienen mesa a las 8?")
            await page.press_enter()
            first = await rec.next(IncomingMessage)
            assert (first.text, first.sender_phone, first.push_name) == (
                "Hola, ¿tienen mesa a las 8?", MARIA, "Maria <b onmouseover=alert(1)>")
            await page.wait_for("document.querySelector('#text').value === ''")  # cleared once sent

            # the app answers with markup in the text: the page shows it as text, nothing runs
            hostile = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script> see you"
            await transport.send_text(MARIA, hostile)
            await page.wait_for("[...document.querySelectorAll('#chat .bubble:not(.mine) .text')]"
                                ".some(t => t.textContent.includes('see you'))")
            shown = await page.evaluate("[...document.querySelectorAll('#chat .bubble:not(.mine) .text')]"
                                        ".map(t => t.textContent)")
            assert shown == [hostile]
            assert await page.evaluate("window.__pwned === undefined")
            injected = "document.querySelectorAll('#chat img, #chat script, b[onmouseover]').length"
            assert await page.evaluate(injected) == 0
            assert await page.evaluate("document.querySelector('#customer').selectedOptions[0].textContent") == (
                f"Maria <b onmouseover=alert(1)> · {MARIA}")

            # a generated sample picture, then a picture file chosen in the file dialog
            await page.click("#sample")
            sample = await rec.next(IncomingMessage, 2)
            assert sample.kind is MessageKind.IMAGE and sample.media is not None
            assert (sample.media.mimetype, sample.media.file_name) == ("image/png", "sample.png")
            sample_bytes = await transport.download(sample.media)
            (tmp_path / "sample.png").write_bytes(sample_bytes)
            with Image.open(tmp_path / "sample.png") as image:
                assert image.size == (320, 200)
            await page.set_files("#picture", picture)
            chosen = await rec.next(IncomingMessage, 3)
            assert chosen.kind is MessageKind.IMAGE and chosen.media is not None
            assert chosen.media.file_name == "holiday.png"
            assert await transport.download(chosen.media) == PNG_2X2
            # both pictures show in the chat as the customer's
            await page.wait_for("document.querySelectorAll('#chat .bubble.mine img').length === 2")
            # the customer reads the app's answer: the app gets the read receipt
            await page.click("#mark-read")
            await wait_until(lambda: any(e["status"] == "read" for e in sb.app[NETWORK_KEY].phones[MARIA].inbox),
                             10, "the answer marked read")
            await page.wait_for("document.querySelector('#chat .bubble:not(.mine) small').textContent.includes('read')")
            await page.screenshot(artifacts_dir() / "sandbox-phones-page.png")

            # log the number out from the page: the app's transport hears it
            await page.click("#number-list .row.number .drop-logout")
            await rec.next(LoggedOut)
            await page.wait_for("document.querySelector('#number-list .state').textContent === 'logged out'")
            assert linked(await network_state(sb), LINK_AS)["state"] == "logged_out"  # type: ignore[index]
            assert not [line for line in page.console if line.startswith("exception")], page.console
    finally:
        await transport.stop()


@pytest.mark.asyncio
async def test_pairing_code_then_ban_replace_and_disconnect_from_the_page(sb: RunningSandbox, tmp_path: Path) -> None:
    transport, rec = await start_linking(sb, tmp_path, "s2")
    phone = "+15550100008"
    try:
        code = await transport.pair_phone(phone)
        assert code
        async with chromium_page(tmp_path / "profile", dark=True) as page:
            await page.goto(sb.url + PHONES_PATH)
            await page.wait_for(f"document.querySelector('#pair-list .row.pair b')?.textContent === '{phone}'")
            # a wrong code is refused with a readable, red message; the right one links the number
            await page.type_into("#pair-list .row.pair input", "WRNG-CODE")
            await page.click("#pair-list .row.pair button")
            await page.wait_for("document.querySelector('#status').className === 'error'")
            assert "wrong pairing code" in await page.evaluate("document.querySelector('#status').textContent")
            await page.type_into("#pair-list .row.pair input", code)
            await page.press_enter()
            await rec.next(Connected)
            assert linked(await network_state(sb), phone)["state"] == "connected"  # type: ignore[index]
            await page.wait_for("document.querySelector('#number-list .state')?.textContent === 'connected'")
            await page.screenshot(artifacts_dir() / "sandbox-phones-page-dark.png")

            await page.click("#number-list .drop-replaced")
            await rec.next(StreamReplaced)
            await page.wait_for("document.querySelector('#number-list .state').textContent === 'offline'")
            # Replace needs a live connection: the page disables it while the number is offline
            assert await page.evaluate("document.querySelector('#number-list .drop-replaced').disabled")

            await transport.start()  # the app reconnects (with the paired identity from its store)
            await rec.next(Connected, 2)
            await page.wait_for("document.querySelector('#number-list .state').textContent === 'connected'")
            await page.click("#number-list .drop-disconnect")
            await rec.next(Disconnected)

            await transport.start()
            await rec.next(Connected, 3)
            await page.wait_for("document.querySelector('#number-list .state').textContent === 'connected'")
            await page.click("#number-list .drop-ban")
            banned = await rec.next(TemporarilyBanned)
            assert banned.expires_at is not None
            await page.wait_for("document.querySelector('#number-list .state').textContent.startsWith('banned until')")
            await page.click("#number-list .drop-clear")
            await page.wait_for("document.querySelector('#number-list .state').textContent === 'offline'")
            assert not [line for line in page.console if line.startswith("exception")], page.console
    finally:
        await transport.stop()
