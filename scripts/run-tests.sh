#!/usr/bin/env bash
# Runs the whole suite headless. Starts what the tests use, when this machine has it:
#  - a throwaway PostgreSQL cluster on 127.0.0.1 (GHL_TEST_PG_URL) for the storage contract suite;
#  - a D-Bus session with an unlocked gnome-keyring (a real Secret Service) for the keyring test.
# Everything it starts lives in a temp dir and is stopped on exit.
set -euo pipefail
VENV=${1:-.venv}
shift || true
PY="$VENV/bin/python"
WORK=$(mktemp -d /tmp/ghl-tests.XXXXXX)
chmod 755 "$WORK"
cleanup() {
  if [ -n "${PG_CTL:-}" ] && [ -f "$WORK/pg/postmaster.pid" ]; then
    $AS_PG "$PG_CTL" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- PostgreSQL -------------------------------------------------------------------------------
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "${GHL_TEST_PG_URL:-}" ] && [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ]; then
  PG_CTL="$PG_BIN/pg_ctl"
  AS_PG=""
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    AS_PG="runuser -u postgres --"
  fi
  mkdir -p "$WORK/pg" && { [ -z "$AS_PG" ] || chown postgres "$WORK/pg"; }
  PGPORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  $AS_PG "$PG_BIN/initdb" -D "$WORK/pg" -U ghl --auth=trust -E UTF8 >/dev/null
  $AS_PG "$PG_CTL" -D "$WORK/pg" -w -l "$WORK/pg/log" \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $WORK/pg -c fsync=off" start >/dev/null
  $AS_PG "$PG_BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U ghl ghl_test
  export GHL_TEST_PG_URL="postgresql+psycopg://ghl@127.0.0.1:$PGPORT/ghl_test"
  echo "tests: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT"
else
  [ -n "${GHL_TEST_PG_URL:-}" ] || echo "tests: no PostgreSQL server binaries; PostgreSQL tests will be skipped"
fi

export QT_QPA_PLATFORM=offscreen
export GHL_TEST_ARTIFACTS=${GHL_TEST_ARTIFACTS:-$PWD/test-artifacts}
mkdir -p "$GHL_TEST_ARTIFACTS"
# Two pytest processes: the tests that load the neonize engine (Go runtime) in-process run apart from
# the Qt/qasync ones (ignored, not just deselected, in the first: importing them loads Go). Exit code 5 ("nothing collected", e.g. a path with no engine tests) is fine.
PYTEST=(bash -c '
  "$0" -m pytest -q -p no:cacheprovider -m "not engine" --ignore=tests/core/test_wa_normalize.py \
    --ignore-glob="tests/adapters/whatsapp/test_neonize_*" "$@"; a=$?; [ $a -eq 5 ] && a=0
  "$0" -m pytest -q -p no:cacheprovider -m engine "$@"; b=$?; [ $b -eq 5 ] && b=0
  exit $(( a > b ? a : b ))' "$PY" "$@")
rc=0

# --- Secret Service ---------------------------------------------------------------------------
if command -v dbus-run-session >/dev/null 2>&1 && command -v gnome-keyring-daemon >/dev/null 2>&1; then
  export GHL_TEST_SECRET_SERVICE=1
  export KEYRING_HOME="$WORK/keyring-home"
  mkdir -p "$KEYRING_HOME"
  echo "tests: real Secret Service (gnome-keyring) in a private D-Bus session"
  dbus-run-session -- bash -c '
    export HOME="$KEYRING_HOME"
    echo -n "ci-keyring" | gnome-keyring-daemon --unlock --components=secrets >/dev/null 2>&1
    "$@"' _ "${PYTEST[@]}" || rc=$?
else
  echo "tests: no dbus-run-session/gnome-keyring; the Secret Service test will be skipped"
  "${PYTEST[@]}" || rc=$?
fi
exit $rc
