#!/bin/sh
# Puts ghl-desktop in this user's applications menu (no root, no terminal needed afterwards).
# Run it once after unpacking (double-click → "Run", or `./install.sh`), again after moving the folder.
# `./install.sh --remove` takes the menu entry away; your data, logs and linked numbers stay.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
share=${XDG_DATA_HOME:-$HOME/.local/share}
apps=$share/applications
icons=$share/icons/hicolor/256x256/apps
if [ "${1:-}" = "--remove" ]; then
    rm -f "$apps/ghl-desktop.desktop" "$icons/ghl-desktop.png"
    echo "ghl-desktop menu entry removed (data kept)"
    exit 0
fi
mkdir -p "$apps" "$icons"
cp "$here/_internal/resources/ghl-desktop.png" "$icons/ghl-desktop.png"
sed -e "s|^Exec=.*|Exec=\"$here/ghl-desktop\"|" "$here/_internal/resources/ghl-desktop.desktop" > "$apps/ghl-desktop.desktop"
chmod +x "$apps/ghl-desktop.desktop"
update-desktop-database "$apps" >/dev/null 2>&1 || true
echo "ghl-desktop is now in your applications menu"
