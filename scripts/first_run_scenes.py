"""Screenshot scenes of the first-run wizard and the sandbox phone page, for ``make screenshots``.

scripts/screenshots.py registers :func:`first_run_wizard` and :func:`sandbox_phone_page` as scenes
(they take its ``Stage``: the running sandbox-mode window). They save:

- ``30-first-run-wizard-credentials`` — the credentials page with a real probe's network error (nothing
  listens on the port asked);
- ``31-first-run-wizard-delivery`` — the delivery page after the whole walk: credentials accepted by
  the sandbox's token endpoint, provider ID, redirect URI, a real test delivery through the app's own
  webhook endpoint;
- ``32-first-run-checklist`` — the checklist with one step still open;
- ``40-sandbox-phone-page`` / ``41-sandbox-phone-page-dark`` — the sandbox's /phones page in headless
  Chromium (light and dark), showing whatever the window's sandbox holds plus a code waiting for a scan.

Nothing is painted in by hand: every result shown came from a real check. Run alone (own sandbox):
``QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/first_run_scenes.py /tmp/shots``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Save = Callable[[Any, str], Path]
Settle = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class SandboxApp:
    """The running sandbox and the app registration it answers for."""

    url: str
    client_id: str
    client_secret: str
    provider_id: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _settle() -> None:
    """Let Qt paint (standalone runs; on the window, screenshots.py's ``Stage.settle`` is used)."""
    from PySide6.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
        await asyncio.sleep(0.05)


class _LoopThread:
    """An asyncio loop in a thread of its own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="scene-endpoint", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class _NoQueue:
    """The scene's webhook endpoint queue: the unsigned test delivery is refused before storage."""

    async def count_backlog(self) -> int:  # the intake's backlog check may run before verification
        return 0

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the test delivery must not reach the queue ({name})")


def _gate() -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from ghl_desktop.webhooks.gate import WebhookGate
    from ghl_desktop.webhooks.verify import SignatureVerifier

    pem = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return WebhookGate(SignatureVerifier.from_values(pem, None))


async def render_first_run(save: Save, sb: SandboxApp, settle: Settle = _settle) -> None:
    from ghl_desktop.adapters.secrets import ScryptParams, VaultSecretStore
    from ghl_desktop.config import Settings
    from ghl_desktop.services.setup_checks import SetupService
    from ghl_desktop.ui.first_run import FirstRunWizard, SetupChecklist
    from ghl_desktop.webhooks.endpoint import WebhookServer
    from ghl_desktop.webhooks.intake import WebhookIntake

    with tempfile.TemporaryDirectory(prefix="ghl-first-run-") as tmp:
        home = Path(tmp)
        secrets = VaultSecretStore(home / "secrets.vault", "screenshots", params=ScryptParams(log2_n=10))

        # HighLevel unreachable: the probe's real answer, in red, Next disabled
        offline = SetupService(Settings(home=home / "offline", api_base=f"http://127.0.0.1:{_free_port()}"),
                               secrets, timeout=3.0)
        wizard = FirstRunWizard(offline, clipboard=lambda _text: None)
        wizard.resize(760, 560)
        wizard.show()
        page = wizard.credentials
        page.client_id.setText("65f0c1a2b3c4d5e6f7a8b9c0-lx1abcd2")
        page.client_secret.setText("not-a-real-secret")
        page.result.show_outcome(await offline.check_credentials(page.client_id.text(), page.client_secret.text()))
        await settle()
        save(wizard, "30-first-run-wizard-credentials")
        wizard.close()

        # the whole walk: the sandbox's token endpoint, then a test delivery through the app's endpoint
        settings = Settings(home=home / "real", api_base=sb.url, webhook_port=_free_port())
        service = SetupService(settings, secrets, timeout=5.0)
        server = WebhookServer(settings, WebhookIntake(_NoQueue()), gate=_gate(), host="127.0.0.1")  # type: ignore[arg-type]
        # the endpoint runs on a loop of its own: stopping it must not hold up the window's loop
        endpoint_loop = _LoopThread()
        url = endpoint_loop.run(server.start())
        try:
            wizard = FirstRunWizard(service, clipboard=lambda _text: None)
            wizard.resize(760, 560)
            wizard.show()
            page = wizard.credentials
            page.client_id.setText(sb.client_id)
            page.client_secret.setText(sb.client_secret)
            page.check.click()  # the real Check button: the probe runs as a task on this loop
            await asyncio.wait_for(asyncio.gather(*wizard.tasks.running), 30)
            await settle()
            if not page.isComplete():
                print(f"screenshots: the credentials probe did not pass: {page.result.text()}", file=sys.stderr)
                return
            wizard.next()
            wizard.provider.provider_id.setText(sb.provider_id)
            wizard.next()
            wizard.redirect.registered.setChecked(True)
            wizard.next()
            delivery = wizard.delivery
            delivery.direct_mode.setChecked(True)
            delivery.public_url.setText(url)
            delivery.test.click()
            await asyncio.wait_for(asyncio.gather(*wizard.tasks.running), 30)
            await settle()
            save(wizard, "31-first-run-wizard-delivery")
            wizard.close()
        finally:
            endpoint_loop.run(server.stop())
            endpoint_loop.close()

        service._save_settings(provider_id=None)  # one step open: the checklist as the window shows it
        checklist = SetupChecklist(service)
        checklist.resize(1000, checklist.sizeHint().height())
        checklist.show()
        await settle()
        save(checklist, "32-first-run-checklist")
        checklist.close()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _photo() -> bytes:
    """A small picture for the customer's chat."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 110), (40, 110, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 70, 160, 110), fill=(60, 150, 80))
    draw.ellipse((110, 12, 140, 42), fill=(250, 210, 80))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


async def _stage_phone_page(url: str, store: Path) -> list[Any]:
    """A customer chat with the first linked number (or one linked here) and a code waiting for a scan."""
    import httpx

    from ghl_desktop.adapters.whatsapp.simulated import SimulatedTransport
    from ghl_desktop.core.whatsapp import QrCode

    events: list[Any] = []
    keep: list[Any] = []

    async def record(event: Any) -> None:
        events.append(event)

    async def qr_shown(count: int) -> None:
        for _ in range(600):
            if sum(isinstance(e, QrCode) for e in events) >= count:
                return
            await asyncio.sleep(0.05)
        raise SystemExit("the simulated network showed no QR code")

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        state = (await http.get("/_sandbox/whatsapp/state")).json()
        live = [n["phone"] for n in state["linked_numbers"] if n["state"] == "connected"]
        if live:
            number = live[0]
        else:
            number = "+15550100009"
            linked = SimulatedTransport("scene-office", url, record, store / "office.json")
            await linked.start()
            await qr_shown(1)
            await http.post("/_sandbox/whatsapp/scan", json={"session": "scene-office", "phone": number})
            keep.append(linked)
        customer = "+4917011112222"
        await http.post("/_sandbox/phones", json={"phone": customer, "name": "Maria Schulz"})
        send = f"/_sandbox/phones/{customer}/send"
        await http.post(send, json={"to": number, "text": "Hi! Do you have a table for 4 tonight at 8?"})
        photo = base64.b64encode(_photo()).decode()
        await http.post(send, json={"to": number, "text": "Could we sit on the terrace?",
                                    "media": {"data": photo, "mimetype": "image/png", "file_name": "terrace.png"}})
    waiting = SimulatedTransport("front-desk", url, record, store / "front-desk.json")
    await waiting.start()
    await qr_shown(len([e for e in events if isinstance(e, QrCode)]) + 1)
    keep.append(waiting)
    await asyncio.sleep(1.0)  # the bridge (when one runs) answers and the page's poll picks it up
    return keep


async def render_phone_page(out: Path, url: str) -> list[Path]:
    exe = _chromium()
    if exe is None:
        print("screenshots: chromium is not installed; the sandbox phone page is skipped", file=sys.stderr)
        return []
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="ghl-phones-") as tmp:
        transports = await _stage_phone_page(url, Path(tmp))
        try:
            for name, extra in (("40-sandbox-phone-page", []),
                                ("41-sandbox-phone-page-dark", ["--blink-settings=preferredColorScheme=0"])):
                target = out / f"{name}.png"
                args = [exe, "--headless=new", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                        f"--user-data-dir={Path(tmp) / ('profile-' + name)}", "--window-size=1280,860",
                        "--virtual-time-budget=4000", f"--screenshot={target}", *extra, url + "/phones"]
                if os.geteuid() == 0:
                    args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
                # in a thread: this loop must keep serving the sandbox the page talks to
                await asyncio.to_thread(subprocess.run, args, check=True, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, timeout=120)
                written.append(target)
        finally:
            for transport in transports:
                await transport.stop()
    return written


# -- the scenes scripts/screenshots.py runs on its window --------------------------------------------


async def _sandbox_app(stage: Any) -> SandboxApp:
    """The app registration of the window's sandbox, from its control API."""
    app = (await stage.http.get(f"{stage.url}/_sandbox/state")).json()["app"]
    return SandboxApp(stage.url, app["client_id"], app["client_secret"], app["provider_id"])


async def first_run_wizard(stage: Any) -> None:
    """The real-mode first run (the window itself runs in sandbox mode, which has none)."""
    await render_first_run(stage.save, await _sandbox_app(stage), stage.settle)


async def sandbox_phone_page(stage: Any) -> None:
    """The sandbox's phone page, linked from the window's sandbox banner."""
    for path in await render_phone_page(stage.out, stage.url):
        stage.saved.append(path)
        print(f"saved {path}", flush=True)


async def _standalone(out: Path) -> None:
    from ghl_desktop.sandbox.server import running_sandbox

    def save(widget: Any, name: str) -> Path:
        path = out / f"{name}.png"
        widget.grab().save(str(path))
        print(path)
        return path

    with tempfile.TemporaryDirectory(prefix="ghl-scenes-") as tmp:
        async with running_sandbox(status_race_seconds=0.0, state_dir=tmp) as sb:
            await render_first_run(save, SandboxApp(sb.url, sb.client_id, sb.client_secret, sb.provider_id))
            for path in await render_phone_page(out, sb.url):
                print(path)


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    qt_app = QApplication(sys.argv[:1])
    asyncio.run(_standalone(target))
