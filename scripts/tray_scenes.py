"""Screenshot scenes of the tray and of a dropped number's desktop notice, for ``make screenshots``.

scripts/screenshots.py registers :func:`tray_icons`, :func:`dropped_number_notice` and :func:`tray_menu`
(they take its ``Stage``: the running sandbox-mode window). They save:

- ``50-tray-icons`` — the three tray images (all bridging / attention / something needs you) at the
  sizes a panel uses, with the tooltip each state gets;
- ``52-dropped-number-notice`` — the whole (virtual) screen: the window with the dropped number's row
  and the desktop notification as the real notification daemon (dunst, on a private D-Bus session on
  the Xvfb display) shows it. Needs Xvfb + dunst; skipped otherwise;
- ``51-tray-menu`` — the tray menu with the numbers that need you (the logged-out one, and whatever
  earlier scenes dropped): a click on an entry opens the window on its row; Pause bridging, Open
  window, Start at login, Quit.

Nothing is painted in by hand except the caption strip of ``50-tray-icons``: the menu, the row and the
notice come from the real health model after a real drop through the sandbox's control API.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NUMBER = "+15550100001"  # screenshots.py's LINKED

#: dunst as a desktop would show it: top right, the notice's title in bold, critical ones in red
DUNSTRC = """[global]
    font = DejaVu Sans 11
    width = 440
    origin = top-right
    offset = 24x24
    frame_width = 1
    padding = 12
    horizontal_padding = 14
    show_indicators = no
    max_icon_size = 48
[urgency_critical]
    background = "#fdecea"
    foreground = "#3c1414"
    frame_color = "#d93025"
    timeout = 0
"""


def _notice_center(window: Any) -> Any:
    sink = getattr(window, "notice_sink", None)
    return getattr(sink, "__self__", None)


async def tray_icons(stage: Any) -> None:
    """The three tray images with the tooltip of each state."""
    from PySide6.QtCore import QRect, Qt
    from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
    from PySide6.QtWidgets import QApplication

    from ghl_desktop.ui.tray import TrayState, tray_icon

    tips = {
        TrayState.OK: "ghl-desktop — 3 numbers",
        TrayState.ATTENTION: "ghl-desktop — 3 numbers · 2 messages failed",
        TrayState.DOWN: "ghl-desktop — 3 numbers · 1 down",
    }
    width, row = 720, 64
    pixmap = QPixmap(width, row * len(tips) + 16)
    palette = QApplication.palette()
    pixmap.fill(palette.window().color())
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    font = QFont(QApplication.font())
    font.setPointSize(11)
    painter.setFont(font)
    for i, (state, tip) in enumerate(tips.items()):
        top = 8 + i * row
        icon = tray_icon(state)
        for j, size in enumerate((16, 22, 32, 48)):
            painter.drawPixmap(12 + j * 56 + (48 - size) // 2, top + (48 - size) // 2, icon.pixmap(size, size))
        painter.setPen(QColor(palette.windowText().color()))
        painter.drawText(QRect(240, top, width - 250, 48), int(Qt.AlignmentFlag.AlignVCenter), f"{state.value}: {tip}")
    painter.end()
    path = stage.out / "50-tray-icons.png"
    if not pixmap.save(str(path)):
        raise SystemExit(f"could not save {path}")
    stage.saved.append(path)
    print(f"saved {path}", flush=True)


async def tray_menu(stage: Any) -> None:
    """A number logged out on the phone (by :func:`dropped_number_notice`, else here): the menu lists it."""
    w = stage.window
    sid = _session_of(w, NUMBER)
    number = await w.cockpit.number(sid) if sid else None
    if number is not None and number.state.value != "logged_out":
        await _drop(stage, "logout")
    await stage.until(lambda: any(t.startswith(NUMBER) for t in w.tray.action_texts()))
    menu = w.tray.menu
    menu.popup(w.mapToGlobal(w.rect().center()))
    await stage.settle()
    stage.save(menu, "51-tray-menu")
    menu.hide()


async def dropped_number_notice(stage: Any) -> None:
    """The window and the real notification daemon's popup for the dropped number."""
    from PySide6.QtGui import QGuiApplication

    if not os.environ.get("DISPLAY") or not shutil.which("dunst") or not shutil.which("dbus-daemon"):
        print("scene dropped_number_notice skipped: needs Xvfb (DISPLAY), dunst and dbus-daemon", flush=True)
        return
    from tests.ui.dbus_session import private_session_bus

    w = stage.window
    center = _notice_center(w)
    folder = Path(tempfile.mkdtemp(prefix="ghl-screenshot-bus-"))
    with private_session_bus(folder) as address:
        previous = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        if previous and shutil.which("dunstctl"):
            # a notification daemon on the bus this run was started with shows the earlier scenes'
            # notices on the same display: clear them, and send the next one to our own daemon
            await asyncio.to_thread(subprocess.run, ["dunstctl", "close-all"], env=dict(os.environ),
                                    capture_output=True, check=False, timeout=10)
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
        notifications = getattr(center, "_notifications", None)
        if notifications is not None and hasattr(notifications, "reset"):
            await notifications.reset()
        config = folder / "dunstrc"
        config.write_text(DUNSTRC, "utf-8")
        daemon = subprocess.Popen(["dunst", "-config", str(config)], env=dict(os.environ),  # noqa: ASYNC220
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await asyncio.sleep(1.0)
            shown = len(center.shown) if center is not None else 0
            if _session_of(w, NUMBER) is None:
                print("scene dropped_number_notice skipped: the number is not linked", flush=True)
                return
            # the window beside the popup (no window manager under Xvfb to stack them), one notice only
            size = w.size()
            w.resize(1100, size.height())
            w.reveal(session_id=_session_of(w, NUMBER))
            await stage.settle()
            if shutil.which("dunstctl"):
                await asyncio.to_thread(subprocess.run, ["dunstctl", "close-all"], env=dict(os.environ), check=False,
                                        timeout=10)
            await _drop(stage, "logout")
            if center is not None:
                await stage.until(lambda: any(s.channel == "service" for s in center.shown[shown:]), 20)
            await stage.settle(1.0)
            screen = QGuiApplication.primaryScreen()
            frame = w.frameGeometry()
            shot = screen.grabWindow(0, 0, 0, screen.geometry().width(), frame.bottom() + 1)
            path = stage.out / "52-dropped-number-notice.png"
            if not shot.save(str(path)):
                raise SystemExit(f"could not save {path}")
            stage.saved.append(path)
            print(f"saved {path}", flush=True)
            w.resize(size)
        finally:
            daemon.terminate()
            daemon.wait(10)
            if previous is None:
                os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SESSION_BUS_ADDRESS"] = previous
            if notifications is not None and hasattr(notifications, "reset"):
                await notifications.reset()  # later notices: the bus the run was started with again
    shutil.rmtree(folder, ignore_errors=True)


def _session_of(window: Any, phone: str) -> str | None:
    return next((s.id for s in window.numbers.model.records() if s.phone == phone), None)


async def _drop(stage: Any, kind: str) -> None:
    await stage.post(f"/_sandbox/whatsapp/{NUMBER}/drop", {"kind": kind})


__all__ = ["dropped_number_notice", "tray_icons", "tray_menu"]
