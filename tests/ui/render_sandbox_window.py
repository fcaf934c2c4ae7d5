"""Render the real window in sandbox mode, driven through its own buttons, and save screenshots
(used by test_screenshot.py).

    python -m tests.ui.render_sandbox_window OUT_DIR

Runs ``run_window`` exactly as ``ghl-desktop`` does on an empty data dir (so: sandbox mode), with the
browser replaced by ConsentClicker. It connects a location, links a simulated number by scanning
its QR code, lets two customers write and an agent answer from the sandbox, then presses Link again
so a fresh QR code is on screen, and saves OUT_DIR/sandbox-window.png (``widget.grab()``) and, with
ImageMagick and an X display, OUT_DIR/sandbox-window-x11.png. Prints one ``state:`` line."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import qasync

from ghl_desktop.adapters.secrets import open_secret_store
from ghl_desktop.config import load_settings
from ghl_desktop.sandbox.consent import ConsentClicker
from ghl_desktop.ui.main import create_qt_application, run_window
from ghl_desktop.ui.main_window import MainWindow
from tests.e2e.harness import FAST_RUNTIME
from tests.e2e.harness import eventually_on_loop as eventually

SETTLE_SECONDS = float(os.environ.get("GHL_SCREENSHOT_SETTLE", "0.8"))
LINKED = "+15550100001"
CUSTOMERS = {"+4915112345678": "Alice Meyer", "+447700900123": "Ben Carter"}


async def post(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post(url, json=body)
    answer.raise_for_status()
    return dict(answer.json())


async def drive(window: MainWindow, out: Path) -> None:
    url = window.sandbox_url
    assert url is not None
    async with httpx.AsyncClient(timeout=30) as http:
        window.locations.start_connect()
        await eventually(lambda: window.locations.model.rowCount() >= 1, 30)
        await post(http, f"{url}/_sandbox/phones", {"phone": LINKED, "name": "Front desk"})
        window.link.start_link()
        await eventually(lambda: window.link.qr_view.code is not None, 30)
        await post(http, f"{url}/_sandbox/whatsapp/scan", {"qr": window.link.qr_view.code, "phone": LINKED})
        await eventually(lambda: any(s.phone == LINKED and s.state.value == "connected"
                                     for s in window.numbers.model.records()), 30)
        alice, ben = CUSTOMERS
        for phone, name in CUSTOMERS.items():
            await post(http, f"{url}/_sandbox/phones", {"phone": phone, "name": name})
        await post(http, f"{url}/_sandbox/phones/{alice}/send",
                   {"to": LINKED, "text": "Hi! Can I move my cleaning to Thursday afternoon?"})
        await post(http, f"{url}/_sandbox/phones/{ben}/send", {"to": LINKED, "text": "Do you have parking nearby?"})
        await eventually(lambda: len(window.app.db.messages.recent(100)) >= 2, 30)
        location_id = window.locations.model.record(0).id

        async def alice_contact() -> dict[str, Any] | None:
            state = (await http.get(f"{url}/_sandbox/state")).json()
            return next((c for c in state["contacts"] if c["phone"] == alice), None)

        contact = await eventually(alice_contact, 30)
        await post(http, f"{url}/_sandbox/locations/{location_id}/reply",
                   {"contactId": contact["id"], "message": "Of course — Thursday 3:30 pm works. See you then!"})
        await eventually(lambda: len(window.app.db.messages.recent(100)) >= 3, 30)
        await post(http, f"{url}/_sandbox/phones/{alice}/send", {"to": LINKED, "text": "Perfect, thank you"})
        await eventually(lambda: len(window.app.db.messages.recent(100)) >= 4, 30)
        # a second number being linked: its QR code is on screen
        window.link.start_link()
        await eventually(lambda: window.link.qr_view.code is not None, 30)
        await asyncio.sleep(SETTLE_SECONDS)
    grab = out / "sandbox-window.png"
    if not window.grab().save(str(grab)):
        raise SystemExit(f"could not save {grab}")
    print(f"saved {grab}", flush=True)
    if shutil.which("import") and os.environ.get("DISPLAY"):
        x11 = out / "sandbox-window-x11.png"
        proc = await asyncio.create_subprocess_exec("import", "-window", "root", str(x11))
        await proc.wait()
        if proc.returncode == 0:
            print(f"saved {x11}", flush=True)
    sessions = " ".join(f"{s.phone or '-'}:{s.state.value}" for s in window.numbers.model.records())
    print(f"state: {window.locations.model.rowCount()} location(s); {sessions}; "
          f"{len(window.app.db.messages.recent(100))} messages; banner={'Sandbox mode' in window.mode_banner.text()}",
          flush=True)


async def render(out: Path) -> None:
    settings = load_settings()
    windows: list[MainWindow] = []
    run = asyncio.get_running_loop().create_task(run_window(
        settings, open_secret_store(settings), open_url=ConsentClicker(), runtime_options=FAST_RUNTIME,
        on_window=windows.append,
    ))
    await eventually(lambda: run.done() or (windows and windows[0].bridge_ready), 30)
    if run.done():
        raise SystemExit(f"the window did not start: {run.result()}")
    try:
        await drive(windows[0], out)
    finally:
        await windows[0].wait_shutdown()
        problem = await run
    if problem is not None:
        raise SystemExit(problem)


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    qt_app = create_qt_application()
    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(render(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
