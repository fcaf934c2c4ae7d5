"""Render the real main window with seeded rows and save screenshots (used by test_screenshot.py).

    python -m tests.ui.render_main_window OUT_DIR

Runs the App exactly as ``run_gui`` builds it (real secret store, real SQLite in GHL_DESKTOP_HOME),
grabs the empty window (OUT_DIR/main-window-empty.png), seeds a few rows, lets Qt paint, saves
``widget.grab()`` to OUT_DIR/main-window.png and, when
ImageMagick's ``import`` exists and an X display is set, a full X screenshot to
OUT_DIR/main-window-x11.png. Then it closes the window the normal way (App.aclose)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import qasync

from ghl_desktop.adapters.secrets import open_secret_store
from ghl_desktop.app import App
from ghl_desktop.config import load_settings
from ghl_desktop.ui.main import create_qt_application
from ghl_desktop.ui.main_window import MainWindow
from tests.ui.seed import seed

SETTLE_SECONDS = float(os.environ.get("GHL_SCREENSHOT_SETTLE", "0.8"))


async def render(window: MainWindow, app: App, out: Path) -> None:
    window.show()
    await asyncio.sleep(SETTLE_SECONDS)
    empty = out / "main-window-empty.png"
    if not window.grab().save(str(empty)):
        raise SystemExit(f"could not save {empty}")
    print(f"saved {empty}", flush=True)
    seed(app.db)
    window.refresh()
    window.link.qr_view.show_qr("2@Vx8kq3LmZt0pQr7sYb2wNc5dFg,1AbCdEfGhIjKlMnOpQrStUvWxYz=,9zYxWvUtSrQpOnMlKjIhGf=")
    await asyncio.sleep(SETTLE_SECONDS)  # let the window map and paint under a real X server
    grab = out / "main-window.png"
    if not window.grab().save(str(grab)):
        raise SystemExit(f"could not save {grab}")
    print(f"saved {grab}", flush=True)
    if shutil.which("import") and os.environ.get("DISPLAY"):
        x11 = out / "main-window-x11.png"
        proc = await asyncio.create_subprocess_exec("import", "-window", "root", str(x11))
        await proc.wait()
        if proc.returncode == 0:
            print(f"saved {x11}", flush=True)
    await window.wait_shutdown()


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    qt_app = create_qt_application()
    app = App(settings, secrets=open_secret_store(settings), console_log=False)
    loop = qasync.QEventLoop(qt_app)
    asyncio.set_event_loop(loop)
    window = MainWindow(app)
    with loop:
        loop.run_until_complete(render(window, app, out))
    print(f"status: {window.secrets_label.text()} | {window.counts_label.text()}", flush=True)
    return 0 if app.closed else 1


if __name__ == "__main__":
    raise SystemExit(main())
