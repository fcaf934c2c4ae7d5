#!/usr/bin/env bash
# Runs the built bundle's self-test the way a double-click starts it: copied to a folder outside the
# source tree, with a clean environment (no venv, no PYTHONPATH, a fresh HOME, PATH=/usr/bin:/bin).
#   Linux: unpacks dist/ghl-desktop-<version>-linux-<arch>.tar.gz (what users download)
#   macOS: copies dist/ghl-desktop.app
# Prints the self-test's lines; exits with its exit code (1 names the step that failed).
set -euo pipefail
cd "$(dirname "$0")/.."
where=$(mktemp -d "${TMPDIR:-/tmp}/ghl-dist-XXXXXX")
home=$(mktemp -d "${TMPDIR:-/tmp}/ghl-home-XXXXXX")
trap 'rm -rf "$where" "$home"' EXIT
case "$(uname -s)" in
  Darwin)
    [ -d dist/ghl-desktop.app ] || { echo "no dist/ghl-desktop.app: run make dist first" >&2; exit 1; }
    ditto dist/ghl-desktop.app "$where/ghl-desktop.app"
    exe="$where/ghl-desktop.app/Contents/MacOS/ghl-desktop"
    ;;
  *)
    archive=$(ls -t dist/ghl-desktop-*-linux-*.tar.gz 2>/dev/null | head -n1 || true)
    [ -n "$archive" ] || { echo "no dist/ghl-desktop-*-linux-*.tar.gz: run make dist first" >&2; exit 1; }
    tar -xzf "$archive" -C "$where"
    exe="$where/ghl-desktop/ghl-desktop"
    ;;
esac
echo "dist-self-test: $exe (HOME=$home, PATH=/usr/bin:/bin, nothing else)"
cd "$where"
env -i HOME="$home" PATH=/usr/bin:/bin "$exe" --self-test
