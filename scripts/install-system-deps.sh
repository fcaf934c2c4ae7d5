#!/usr/bin/env bash
# Installs the Debian packages the app and its tests need, only those missing, only when apt-get is
# usable (root, or password-less sudo). Elsewhere it prints what to install and carries on.
set -euo pipefail
PKGS=(
  # Qt offscreen + xcb (see docs in README "System libraries")
  libgl1 libegl1 libxkbcommon0 libglib2.0-0 libfreetype6 libfontconfig1 libdbus-1-3 libgssapi-krb5-2
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-image0
  libxcb-randr0 libxcb-render-util0 libxcb-xfixes0 libxcb-xkb1 libxcb-sync1 libxcb-shm0 libx11-xcb1
  # screenshots under a virtual screen
  xvfb xauth x11-utils imagemagick
  # neonize: mimetypes (python-magic) and audio/video (ffmpeg/ffprobe)
  libmagic1 ffmpeg
  # a real Secret Service for the keyring test
  gnome-keyring dbus-x11
  # a real notification daemon (org.freedesktop.Notifications) and a tray host for the tray/notice tests
  dunst trayer
  # a real headless browser for the sandbox's phone page tests and screenshots
  chromium
  # the PostgreSQL server the storage contract suite also runs against
  postgresql
  # make dist: PyInstaller refuses to run on Linux without objdump
  binutils
)
command -v dpkg-query >/dev/null 2>&1 || { echo "sysdeps: not a Debian-like system; install the equivalents of: ${PKGS[*]}"; exit 0; }
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "sysdeps: all system packages present"; exit 0; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "sysdeps: missing packages (install them with apt-get as root): ${missing[*]}"; exit 0; fi
fi
command -v apt-get >/dev/null 2>&1 || { echo "sysdeps: apt-get not found; missing: ${missing[*]}"; exit 0; }
echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "sysdeps: done"
