"""Screenshot scenes of H4's parts for ``make screenshots`` (scripts/screenshots.py calls them):

- ``scene_first_run_wizard(out)``: the wizard's credentials page showing a real probe's network error,
  its delivery page after a real test delivery through the app's webhook endpoint, and the setup
  checklist — ``first-run-*.png``;
- ``scene_sandbox_phone_page(out)``: the sandbox's phone page (light and dark) in headless Chromium with
  a code waiting to be scanned, a linked number and a chat with a picture — ``sandbox-phones*.png``.

Each returns the files it wrote. The checks shown are real (a closed port, a real endpoint, a real
sandbox on loopback); nothing is painted in by hand.

Run alone: ``QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/first_run_scenes.py docs/screenshots``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ghl_desktop.adapters.secrets import ScryptParams, VaultSecretStore  # noqa: E402
from ghl_desktop.config import Settings  # noqa: E402
from ghl_desktop.services.setup_checks import SetupService  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _LoopThread:
    """An asyncio loop in a thread, for servers the scenes talk to while Qt paints."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _qapp() -> Any:
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication(sys.argv[:1])


def _grab(widget: Any, path: Path) -> Path:
    app = _qapp()
    widget.show()
    for _ in range(5):
        app.processEvents()
    widget.grab().save(str(path))
    return path


def scene_first_run_wizard(out: Path) -> list[Path]:
    from ghl_desktop.sandbox.server import running_sandbox
    from ghl_desktop.ui.first_run import FirstRunWizard, SetupChecklist
    from ghl_desktop.webhooks.endpoint import WebhookServer
    from ghl_desktop.webhooks.intake import WebhookIntake

    out.mkdir(parents=True, exist_ok=True)
    app = _qapp()
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="ghl-first-run-") as tmp:
        home = Path(tmp)
        secrets = VaultSecretStore(home / "secrets.vault", "screenshots", params=ScryptParams(log2_n=10))

        # 1. HighLevel unreachable (nothing listens on that port): the probe's real answer, in red
        offline = SetupService(Settings(home=home / "offline", api_base=f"http://127.0.0.1:{_free_port()}"),
                               secrets, timeout=3.0)
        wizard = FirstRunWizard(offline, clipboard=lambda _text: None)
        wizard.resize(760, 560)
        page = wizard.credentials
        page.client_id.setText("65f0c1a2b3c4d5e6f7a8b9c0-lx1abcd2")
        page.client_secret.setText("not-a-real-secret")
        page.result.show_outcome(asyncio.run(offline.check_credentials(page.client_id.text(),
                                                                       page.client_secret.text())))
        written.append(_grab(wizard, out / "first-run-wizard-credentials.png"))
        wizard.close()

        # 2. the whole walk against the sandbox's token endpoint and the app's own webhook endpoint
        loop = _LoopThread()
        context = running_sandbox(status_race_seconds=0.0)
        try:
            sb = loop.run(context.__aenter__())
            settings = Settings(home=home / "real", api_base=sb.url, webhook_port=_free_port())
            service = SetupService(settings, secrets, timeout=5.0)
            server = WebhookServer(settings, WebhookIntake(_NoQueue()), gate=_gate(), host="127.0.0.1")
            url = loop.run(server.start())
            wizard = FirstRunWizard(service, clipboard=lambda _text: None)
            wizard.resize(760, 560)
            wizard.show()
            page = wizard.credentials
            page.client_id.setText(sb.client_id)
            page.client_secret.setText(sb.client_secret)
            page.result.show_outcome(loop.run(service.verify_and_save_credentials(sb.client_id, sb.client_secret)))
            page._verified_for = page._values()  # what the Check button records after that same call
            page.completeChanged.emit()
            wizard.next()
            wizard.provider.provider_id.setText(sb.provider_id)
            wizard.next()
            wizard.redirect.registered.setChecked(True)
            wizard.next()
            delivery = wizard.delivery
            delivery.direct_mode.setChecked(True)
            delivery.public_url.setText(url)
            delivery._save()
            delivery.result.show_outcome(loop.run(service.check_delivery()))
            app.processEvents()
            written.append(_grab(wizard, out / "first-run-wizard-delivery.png"))
            wizard.close()
            loop.run(server.stop())

            # 3. the checklist above the panels once the provider ID is still missing
            service._save_settings(provider_id=None)
            checklist = SetupChecklist(service)
            checklist.resize(1000, checklist.sizeHint().height())
            written.append(_grab(checklist, out / "first-run-checklist.png"))
        finally:
            loop.run(context.__aexit__(None, None, None))
            loop.close()
    return written


class _NoQueue:
    """The endpoint's queue for the scene: a test delivery is refused before it would store anything."""

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


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


# a 64×48 PNG: a customer's "photo" for the chat (green/blue stripes)
def _photo() -> bytes:
    from PIL import Image

    image = Image.new("RGB", (64, 48))
    for x in range(64):
        for y in range(48):
            image.putpixel((x, y), (20, 120 + (x * 2) % 100, 90 + (y * 3) % 160))
    import io

    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


async def _phone_page_state(sb_url: str, store: Path) -> list[Any]:
    """One linked number with a short chat, a customer, and a second session showing its QR code."""
    import httpx

    from ghl_desktop.adapters.whatsapp.simulated import SimulatedTransport
    from ghl_desktop.core.whatsapp import QrCode

    events: list[Any] = []

    async def record(event: Any) -> None:
        events.append(event)

    async def wait_for(kind: type, count: int = 1) -> None:
        for _ in range(500):
            if sum(isinstance(e, kind) for e in events) >= count:
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"no {kind.__name__}")

    linked = SimulatedTransport("office", sb_url, record, store / "office.json")
    await linked.start()
    await wait_for(QrCode)
    async with httpx.AsyncClient(base_url=sb_url) as http:
        await http.post("/_sandbox/whatsapp/scan", json={"session": "office", "phone": "+15550100001"})
        await http.post("/_sandbox/phones", json={"phone": "+4917011112222", "name": "Maria Schulz"})
        await http.post("/_sandbox/phones", json={"phone": "+447700900123", "name": "Tom <b>Baker</b>"})
        send = "/_sandbox/phones/+4917011112222/send"
        await http.post(send, json={"to": "+15550100001", "text": "Hi! Do you have a table for 4 tonight at 8?"})
        await asyncio.sleep(0.05)
        await linked.send_text("+4917011112222", "Hello Maria, yes — 8 pm for 4 is booked. See you!")
        await asyncio.sleep(0.05)
        photo = base64.b64encode(_photo()).decode()
        await http.post(send, json={"to": "+15550100001",
                                    "media": {"data": photo, "mimetype": "image/png", "file_name": "terrace.png"},
                                    "text": "Could we sit here?"})
        await asyncio.sleep(0.3)
    waiting = SimulatedTransport("front-desk", sb_url, record, store / "front-desk.json")
    await waiting.start()
    await wait_for(QrCode, 2)
    return [linked, waiting]


def scene_sandbox_phone_page(out: Path) -> list[Path]:
    from ghl_desktop.sandbox.server import running_sandbox

    exe = _chromium()
    if exe is None:
        print("screenshots: chromium is not installed; skipping the sandbox phone page", file=sys.stderr)
        return []
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="ghl-phones-") as tmp:
        loop = _LoopThread()
        context = running_sandbox(status_race_seconds=0.0, state_dir=str(Path(tmp) / "sandbox"))
        try:
            sb = loop.run(context.__aenter__())
            transports = loop.run(_phone_page_state(sb.url, Path(tmp)))
            for name, extra in (("sandbox-phones.png", []),
                                ("sandbox-phones-dark.png", ["--blink-settings=preferredColorScheme=0"])):
                target = out / name
                args = [exe, "--headless=new", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                        f"--user-data-dir={Path(tmp) / ('profile-' + name)}", "--window-size=1280,860",
                        "--virtual-time-budget=4000", f"--screenshot={target}", *extra,
                        sb.url + "/phones"]
                if os.geteuid() == 0:
                    args.insert(1, "--no-sandbox")
                subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
                written.append(target)
            for transport in transports:
                loop.run(transport.stop())
        finally:
            loop.run(context.__aexit__(None, None, None))
            loop.close()
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    for path in scene_first_run_wizard(target) + scene_sandbox_phone_page(target):
        print(path)
