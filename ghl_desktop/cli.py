"""Command line: argument parsing only. Every command lives in its own module.

    ghl-desktop                 open the window (sandbox mode when no HighLevel credentials exist)
    ghl-desktop --sandbox       open the window against an in-process HighLevel sandbox
    ghl-desktop --db-url URL    open the window on that database (PostgreSQL: one more worker of a cluster)
    ghl-desktop doctor          check this machine, one line per check
    ghl-desktop sandbox         run the HighLevel sandbox server (+ simulated WhatsApp network)
    ghl-desktop headless        run the bridge with no window
    ghl-desktop numbers list    every WhatsApp number of the database: phone, location, state, worker
    ghl-desktop numbers link    link a WhatsApp number to a location (prints qr:/pair-code:, then linked:)
    ghl-desktop locations connect
                                connect HighLevel locations (prints consent:, then connected: per location)
    ghl-desktop --self-test     run the real app offscreen in a temporary data dir, one line per step
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ghl_desktop import __version__

#: neonize adds a bot tag to every 1:1 message unless the *process* started with this set (Go reads
#: the environment it was started with; setting os.environ later has no effect). See docs/neonize.md §0 item 2.
BOT_TAG_ENV = ("NEONIZE_BOT_TAG", "off")


def ensure_engine_environment(argv: Sequence[str]) -> None:
    """Re-exec the process once with NEONIZE_BOT_TAG=off when it was started without it."""
    name, value = BOT_TAG_ENV
    if os.environ.get(name) == value or os.environ.get("GHL_DESKTOP_NO_REEXEC") == "1":
        return
    env = dict(os.environ, **{name: value})
    if getattr(sys, "frozen", False):
        cmd = [sys.executable, *argv]
    else:
        cmd = [sys.executable, "-m", "ghl_desktop", *argv]
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None in a windowed (double-click) Windows exe
            stream.flush()
    if os.name == "nt":
        # Windows has no exec: os.execve would start the new process and end this one at once, so
        # whoever started us (Explorer, CI waiting for --self-test) would see exit 0 before the app ran
        import subprocess

        raise SystemExit(subprocess.call(cmd, env=env))
    os.execve(cmd[0], cmd, env)


DB_URL_HELP = "database URL (default: GHL_DESKTOP_DB_URL, else the data dir's SQLite file)"
SANDBOX_URL_HELP = ("use this already running `ghl-desktop sandbox` for HighLevel and the simulated WhatsApp "
                    "network instead of the real ones")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghl-desktop", description="Link WhatsApp numbers to HighLevel.")
    parser.add_argument("--version", action="version", version=f"ghl-desktop {__version__}")
    parser.add_argument("--sandbox", action="store_true", help="use an in-process HighLevel sandbox")
    parser.add_argument("--sandbox-port", type=int, default=0, help="port of the in-process sandbox")
    parser.add_argument("--db-url", default=None, dest="window_db_url", help=DB_URL_HELP + "; a PostgreSQL URL "
                        "makes the window a worker of that cluster")
    parser.add_argument("--self-test", action="store_true",
                        help="run the app offscreen in a temporary data dir (database, engine, QR, webhooks, "
                             "sandbox round trip, window); exit 1 naming the step that failed")
    sub = parser.add_subparsers(dest="command")

    sub.add_parser("doctor", help="check Python, Qt, neonize, data dir, database, keyring, credentials")

    sb = sub.add_parser("sandbox", help="run the HighLevel sandbox server and simulated WhatsApp network")
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=0, help="0 picks a free port")
    sb.add_argument("--locations", type=int, default=2, help="sandbox locations to seed")
    sb.add_argument("--redirect-uri", action="append", default=[], help="extra accepted OAuth redirect URI")
    sb.add_argument("--webhook-url", default=None, help="delivery URL for provider webhooks")
    sb.add_argument("--app-webhook-url", default=None, help="URL for INSTALL/UNINSTALL webhooks")
    sb.add_argument("--state-dir", default=None, help="keep sandbox state in this folder across restarts")
    sb.add_argument("--strict-versions", action="store_true",
                    help="refuse retired Version header values (2021-04-15, 2021-07-28 unless --retired-version)")
    sb.add_argument("--retired-version", action="append", default=None, help="a Version value strict mode refuses")

    nb = sub.add_parser("numbers", help="the WhatsApp numbers of the database (a cluster's, with --db-url)")
    nb_sub = nb.add_subparsers(dest="numbers_command", required=True)
    nb_list = nb_sub.add_parser("list", help="one line per number: phone, location, state, worker")
    nb_list.add_argument("--db-url", default=None, help=DB_URL_HELP)
    nb_list.add_argument("--sandbox-url", default=None, help=SANDBOX_URL_HELP)
    nb_link = nb_sub.add_parser("link", help="link a WhatsApp number to a connected location: prints "
                                             "'qr: PAYLOAD' (or 'pair-code: CODE'), then 'linked: +PHONE'")
    nb_link.add_argument("--location", required=True, help="the HighLevel location id")
    nb_link.add_argument("--pair-phone", default=None, help="pair by code for this E.164 number instead of a QR")
    nb_link.add_argument("--db-url", default=None, help=DB_URL_HELP)
    nb_link.add_argument("--sandbox-url", default=None, help=SANDBOX_URL_HELP)

    lc = sub.add_parser("locations", help="the HighLevel locations of the database")
    lc_sub = lc.add_subparsers(dest="locations_command", required=True)
    lc_connect = lc_sub.add_parser("connect", help="connect HighLevel locations through the consent page: prints "
                                                   "'consent: URL', then 'connected: LOCATION_ID NAME'")
    lc_connect.add_argument("--db-url", default=None, help=DB_URL_HELP)
    lc_connect.add_argument("--sandbox-url", default=None, help=SANDBOX_URL_HELP)

    hl = sub.add_parser("headless", help="run the bridge with no window (logs to stdout)")
    hl.add_argument("--sandbox", action="store_true", dest="headless_sandbox")
    hl.add_argument("--sandbox-port", type=int, default=0, dest="headless_sandbox_port")
    hl.add_argument("--sandbox-url", default=None, dest="headless_sandbox_url", help=SANDBOX_URL_HELP
                    + " (no automatic connect-and-link: use `locations connect` and `numbers link`)")
    hl.add_argument("--db-url", default=None, dest="headless_db_url", help=DB_URL_HELP)
    hl.add_argument("--worker", default=None, dest="headless_worker",
                    help="this worker's name in a cluster (PostgreSQL; default: GHL_DESKTOP_WORKER, else host-pid)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)

    if args.command == "doctor":
        from ghl_desktop.doctor import run_doctor

        return int(run_doctor())
    if args.command == "sandbox":
        from ghl_desktop.sandbox.cli import run_sandbox

        return int(run_sandbox(args))
    if args.command == "numbers" and args.numbers_command == "list":
        from ghl_desktop.numbers_cli import list_numbers

        return int(list_numbers(args.db_url))
    if args.command == "locations" and args.locations_command == "connect":
        from ghl_desktop.operator_cli import run_connect

        return int(run_connect(args.db_url, args.sandbox_url))
    if args.command == "headless" and args.headless_sandbox and args.headless_sandbox_url:
        parser.error("--sandbox (in-process sandbox) and --sandbox-url (a running one) exclude each other")
    if argv is None:
        ensure_engine_environment(args_list)
    if args.command == "numbers" and args.numbers_command == "link":
        from ghl_desktop.operator_cli import run_link

        return int(run_link(args.db_url, args.sandbox_url, args.location, args.pair_phone))
    if args.self_test:
        from ghl_desktop.self_test import run_self_test

        return int(run_self_test())
    if args.command == "headless":
        from ghl_desktop.headless import run_headless

        if args.headless_worker:  # read by the runtime (services/ownership.py worker_name)
            os.environ["GHL_DESKTOP_WORKER"] = args.headless_worker

        return int(run_headless(sandbox=args.headless_sandbox, sandbox_port=args.headless_sandbox_port,
                                sandbox_url=args.headless_sandbox_url, db_url=args.headless_db_url))
    from ghl_desktop.ui.main import run_gui

    return int(run_gui(sandbox=args.sandbox, sandbox_port=args.sandbox_port, db_url=args.window_db_url))


if __name__ == "__main__":
    raise SystemExit(main())
