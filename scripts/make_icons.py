"""Make the Windows (.ico) and macOS (.icns) app icons from resources/ghl-desktop.png with Pillow.

    python scripts/make_icons.py [--force]

build.spec calls this when either file is missing; the generated files are committed next to the PNG
so a build machine without Pillow's ICNS writer still gets them. Sizes: every size the PNG covers
(up to 256 px, the source's size) of the ones each format knows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
SOURCE = RESOURCES / "ghl-desktop.png"
ICO = RESOURCES / "ghl-desktop.ico"
ICNS = RESOURCES / "ghl-desktop.icns"
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def make_icons(force: bool = False) -> list[Path]:
    """Write whichever icon is missing (or all with ``force``); returns the files written."""
    from PIL import Image

    written: list[Path] = []
    with Image.open(SOURCE) as opened:
        image = opened.convert("RGBA")
    if force or not ICO.exists():
        sizes = [(s, s) for s in ICO_SIZES if s <= image.width]
        image.save(ICO, format="ICO", sizes=sizes)
        written.append(ICO)
    if force or not ICNS.exists():
        # Pillow writes the PNG-based ICNS types for 16…1024 px; it scales the source for each
        image.save(ICNS, format="ICNS")
        written.append(ICNS)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rewrite both files")
    for path in make_icons(force=parser.parse_args().force):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
