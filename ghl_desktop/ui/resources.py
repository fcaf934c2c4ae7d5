"""Finding the app's icon and other files in ``resources/``: next to the source tree in a checkout,
inside the bundle in a PyInstaller build (``sys._MEIPASS/resources``)."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QIcon


def resources_dir() -> Path:
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def app_icon() -> QIcon:
    """The app icon (SVG when Qt's SVG plugin is there, the 256 px PNG otherwise)."""
    icon = QIcon()
    folder = resources_dir()
    for name in ("ghl-desktop.svg", "ghl-desktop.png"):
        path = folder / name
        if path.exists():
            icon.addFile(str(path))
    return icon


__all__ = ["app_icon", "resources_dir"]
