"""Render the product's screens into docs/screenshots/ (``make screenshots``).

    python scripts/screenshots.py [--out docs/screenshots] [--only NAME ...]

Runs under Xvfb when it is installed and no display is set (else Qt's offscreen platform), on a
fresh data dir, with the real window in sandbox mode (``run_window``, as ``ghl-desktop`` runs it):
a location connected through the sandbox consent page, numbers linked by the simulated phones,
customers writing, numbers dropped — all through the real services and the sandbox control API.

The screens are a list of scene functions, run in order on one running window (:data:`SCENES`);
each gets the :class:`Stage` and saves what it shows with ``stage.save(widget, name)``. Add a
scene with the ``@scene`` decorator (it runs after the ones above it)::

    @scene
    async def message_log_details(stage: Stage) -> None:
        ...
        stage.save(stage.window, "message-log-details")
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINKED = "+15550100001"
SECOND = "+15550100002"
CUSTOMERS = {"+4915112345678": "Alice Meyer", "+447700900123": "Ben Carter"}
SETTLE = float(os.environ.get("GHL_SCREENSHOT_SETTLE", "0.5"))

Scene = Callable[["Stage"], Awaitable[None]]
SCENES: list[Scene] = []


def scene(fn: Scene) -> Scene:
    """Register a scene (scenes run in the order they are defined)."""
    SCENES.append(fn)
    return fn


@dataclass
class Stage:
    window: Any  # ghl_desktop.ui.main_window.MainWindow
    out: Path
    http: Any  # httpx.AsyncClient
    saved: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.window.sandbox_url
        return str(self.window.sandbox_url)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.http.post(f"{self.url}{path}", json=body)
        answer.raise_for_status()
        return dict(answer.json())

    async def settle(self, seconds: float = SETTLE) -> None:
        """Let Qt lay out and paint. Never QApplication.processEvents() inside a coroutine: it would
        run other asyncio tasks re-entrantly (the job runner's wake-up gets lost)."""
        await asyncio.sleep(seconds)

    def save(self, widget: Any, name: str) -> Path:
        path = self.out / f"{name}.png"
        if not widget.grab().save(str(path)):
            raise SystemExit(f"could not save {path}")
        self.saved.append(path)
        print(f"saved {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
        return path

    async def until(self, predicate: Callable[[], Any], seconds: float = 60.0) -> Any:
        from tests.e2e.harness import eventually

        return await eventually(predicate, seconds)


# -- scenes ------------------------------------------------------------------------------------------


@scene
async def empty_window(stage: Stage) -> None:
    """A fresh machine: sandbox mode, nothing connected yet."""
    await stage.settle()
    stage.save(stage.window, "01-first-start")


@scene
async def connected_and_linked(stage: Stage) -> None:
    """Connect HighLevel, link a number by scanning its QR, customers write, an agent answers."""
    w = stage.window
    w.locations.start_connect()
    await stage.until(lambda: w.locations.model.rowCount() >= 1 and not w.locations.connecting)
    await stage.post("/_sandbox/phones", {"phone": LINKED, "name": "Front desk"})
    w.link.start_link()
    await stage.until(lambda: w.link.qr_view.code is not None)
    await stage.settle()
    stage.save(w.link, "10-linking-qr-countdown")
    await stage.post("/_sandbox/whatsapp/scan", {"qr": w.link.qr_view.code, "phone": LINKED})
    await stage.until(lambda: w.link.phase == "linked")
    alice, ben = CUSTOMERS
    for phone, name in CUSTOMERS.items():
        await stage.post("/_sandbox/phones", {"phone": phone, "name": name})
    await stage.post(f"/_sandbox/phones/{alice}/send",
                     {"to": LINKED, "text": "Hi! Can I move my cleaning to Thursday afternoon?"})
    await stage.post(f"/_sandbox/phones/{ben}/send", {"to": LINKED, "text": "Do you have parking nearby?"})
    location_id = w.locations.model.record(0).id

    async def alice_contact() -> dict[str, Any] | None:
        state = (await stage.http.get(f"{stage.url}/_sandbox/state")).json()
        return next((c for c in state["contacts"] if c["phone"] == alice), None)

    contact = await stage.until(alice_contact)
    await stage.post(f"/_sandbox/locations/{location_id}/reply",
                     {"contactId": contact["id"], "message": "Of course — Thursday 3:30 pm works. See you then!"})
    await stage.post(f"/_sandbox/phones/{alice}/send", {"to": LINKED, "text": "Perfect, thank you"})
    await asyncio.sleep(1.0)
    w.refresh()
    await stage.settle()
    stage.save(w.link, "11-linking-linked")
    stage.save(w, "02-window-light")
    stage.save(w.locations, "20-panel-locations")
    stage.save(w.numbers, "21-panel-numbers")
    stage.save(w.log_tabs, "22-panel-message-log")


@scene
async def pairing_code(stage: Stage) -> None:
    """The pairing-code alternative: a selectable code with Copy."""
    w = stage.window
    await stage.post("/_sandbox/phones", {"phone": SECOND, "name": "Back office"})
    w.link.pair_phone.setText("+1 555 010 0002")
    w.link.start_pair()
    await stage.until(lambda: w.link.phase == "pair_code")
    await stage.settle()
    stage.save(w.link, "12-linking-pair-code")
    code = w.link.pair_code.text().replace("-", "")
    await stage.post("/_sandbox/whatsapp/pair-code", {"phone": SECOND, "code": code})
    await stage.until(lambda: w.link.phase == "linked")


@scene
async def expired_code(stage: Stage) -> None:
    """A code that ran out: faded, with "Expired — click to get a new code"."""
    w = stage.window
    sessions = w.runtime.sessions
    before = sessions.options
    sessions.options = replace(before, qr_timeout=1.5)
    try:
        w.link.start_link()
        await stage.until(lambda: w.link.qr_view.code is not None)
        await stage.until(lambda: w.link.phase == "expired")
    finally:
        sessions.options = before
    await stage.settle()
    stage.save(w.link, "13-linking-expired")
    sid = w.link.session_id
    if sid:
        await w.cockpit.remove(sid)


@scene
async def dropped_numbers(stage: Stage) -> None:
    """Numbers that need a person: logged out on the phone, banned (until, local time), and a number
    whose location needs reconnecting (bridging stalled, messages waiting)."""
    w = stage.window
    await stage.post(f"/_sandbox/whatsapp/{SECOND}/drop", {"kind": "ban", "ban_seconds": 3 * 3600})
    await stage.until(lambda: any(s.state.value == "temporarily_banned" for s in w.numbers.model.records()))
    await stage.settle()
    stage.save(w.numbers, "23-dropped-number-banned")
    location_id = w.locations.model.record(0).id
    w.app.db.locations.set_state(location_id, "needs_reconnect")
    w.poll()
    await stage.settle()
    stage.save(w, "03-window-needs-you")
    stage.save(w.numbers, "24-number-stalled-by-location")
    w.app.db.locations.set_state(location_id, "connected")
    w.poll()


@scene
async def dark_scheme(stage: Stage) -> None:
    """The same window in the dark scheme (the desktop's light/dark setting is followed)."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from ghl_desktop.ui import theme

    before = QApplication.palette()
    theme.apply_scheme(Qt.ColorScheme.Dark)
    try:
        stage.window.refresh()
        await stage.settle()
        stage.save(stage.window, "04-window-dark")
        stage.save(stage.window.link, "14-linking-dark")
    finally:
        QApplication.setPalette(before)
        await stage.settle(0.1)


@scene
async def smallest_size(stage: Stage) -> None:
    """1024×640, the smallest size the layout holds at."""
    w = stage.window
    size = w.size()
    w.resize(1024, 640)
    w.link.start_link()
    await stage.until(lambda: w.link.qr_view.code is not None)
    await stage.settle()
    stage.save(w, "05-window-1024x640")
    if w.link.session_id:
        await w.cockpit.remove(w.link.session_id)
    w.resize(size)


def register(module: str, *names: str) -> None:
    """Append the scenes ``names`` of ``scripts/<module>.py`` (another part's screens), when present."""
    import importlib

    try:
        loaded = importlib.import_module(f"scripts.{module}")
    except ImportError as exc:
        print(f"scenes of {module} not loaded: {exc}", file=sys.stderr)
        return
    for name in names:
        scene(getattr(loaded, name))


# H2: the message log with a failed reply and its details pane
register("message_log_scenes", "message_log_details")
# H4: the first-run wizard and the sandbox phone page
register("first_run_scenes", "first_run_wizard", "sandbox_phone_page")
# H1: the tray icons and menu, a dropped number's desktop notice
register("tray_scenes", "tray_icons", "dropped_number_notice", "tray_menu")

#: one scene may take this long (a hung scene is reported and the next one runs)
SCENE_TIMEOUT = float(os.environ.get("GHL_SCREENSHOT_SCENE_TIMEOUT", "120"))


# -- running -----------------------------------------------------------------------------------------


failed: list[str] = []


async def _run(out: Path, only: set[str]) -> list[Path]:
    import httpx

    from ghl_desktop.adapters.secrets import open_secret_store
    from ghl_desktop.config import load_settings
    from ghl_desktop.sandbox.consent import ConsentClicker
    from ghl_desktop.ui.main import run_window
    from tests.e2e.harness import FAST_RUNTIME, eventually

    settings = load_settings()
    windows: list[Any] = []

    def keep(window: Any) -> None:
        window.confirm = lambda *_: True
        window.numbers.confirm = window.confirm
        window.resize(1280, 800)
        windows.append(window)

    run = asyncio.get_running_loop().create_task(run_window(
        settings, open_secret_store(settings), sandbox=True, open_url=ConsentClicker(),
        runtime_options=FAST_RUNTIME, on_window=keep,
    ))
    await eventually(lambda: run.done() or (windows and windows[0].bridge_ready), 60)
    if run.done():
        raise SystemExit(f"the window did not start: {run.result()}")
    saved: list[Path] = []
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            stage = Stage(windows[0], out, http)
            for fn in SCENES:
                if only and fn.__name__ not in only:
                    continue
                print(f"scene {fn.__name__}", flush=True)
                try:
                    await asyncio.wait_for(fn(stage), SCENE_TIMEOUT)
                except Exception as exc:  # report it, keep the other screens
                    failed.append(fn.__name__)
                    print(f"scene {fn.__name__} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            saved = stage.saved
    finally:
        await windows[0].wait_shutdown()
        problem = await run
    if problem is not None:
        raise SystemExit(problem)
    return saved


def inner(out: Path, only: set[str]) -> int:
    from ghl_desktop.ui.main import create_qt_application
    from ghl_desktop.ui.qloop import QEventLoop  # the app's own loop (qasync's runs callbacks while stopped)

    qt_app = create_qt_application()
    qt_app.setStyle("Fusion")  # the same look on every machine the screenshots are made on
    from ghl_desktop.ui import theme

    qt_app.setPalette(theme.light_palette())
    loop = QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    with loop:
        saved = loop.run_until_complete(_run(out, only))
    print(f"{len(saved)} screenshots in {out}" + (f"; failed scenes: {', '.join(failed)}" if failed else ""),
          flush=True)
    return 1 if failed else 0


def _free_display() -> int:
    for number in range(90, 190):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise SystemExit("no free X display number between :90 and :189")


def outer(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="ghl-screenshots-"))
    env = dict(os.environ, GHL_DESKTOP_HOME=str(home), GHL_DESKTOP_VAULT_PASSPHRASE="screenshots-only",
               PYTHONPATH=str(ROOT))
    for name in ("GHL_CLIENT_ID", "GHL_CLIENT_SECRET", "GHL_DESKTOP_DB_URL", "GHL_RELAY_URL"):
        env.pop(name, None)
    xvfb: subprocess.Popen[bytes] | None = None
    if shutil.which("Xvfb") and not args.offscreen:
        display = f":{_free_display()}"
        xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
            if xvfb.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("Xvfb did not come up")
            time.sleep(0.05)
        env.update(DISPLAY=display, QT_QPA_PLATFORM="xcb")
        print(f"rendering under Xvfb {display}", flush=True)
    else:
        env["QT_QPA_PLATFORM"] = "offscreen"
        print("rendering offscreen (Xvfb not found)", flush=True)
    try:
        command = [sys.executable, str(Path(__file__).resolve()), "--inner", "--out", str(out)]
        for name in args.only:
            command += ["--only", name]
        return subprocess.run(command, env=env, cwd=ROOT, check=False, timeout=600).returncode
    finally:
        if xvfb is not None:
            xvfb.terminate()
            try:
                xvfb.wait(10)
            except subprocess.TimeoutExpired:
                xvfb.kill()
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--only", action="append", default=[], help="run only this scene (repeatable)")
    parser.add_argument("--offscreen", action="store_true", help="use Qt's offscreen platform even with Xvfb")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        return inner(Path(args.out), set(args.only))
    return outer(args)


if __name__ == "__main__":
    raise SystemExit(main())
