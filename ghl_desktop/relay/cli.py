"""``ghl-relay`` command line: ``serve`` and ``token create|list|revoke``.

Configuration (flags win over environment):
  --db-url / GHL_RELAY_DB_URL        any SQLAlchemy URL; default SQLite in the data dir
  --data-dir / GHL_RELAY_DATA_DIR    default: the platform's user data dir for "ghl-relay"
  --host / GHL_RELAY_HOST            default 127.0.0.1 (the container passes 0.0.0.0)
  --port / PORT or GHL_RELAY_PORT    default 8788 (PORT is what Render and similar hosts set)
  GHL_WEBHOOK_ED25519_PUBLIC_KEY, GHL_WEBHOOK_RSA_PUBLIC_KEY   PEM text or file (default: HighLevel's)
  GHL_ACCEPT_UNSIGNED_WEBHOOKS=1     accept deliveries without a signature header (default: refuse)
  GHL_RELAY_BACKLOG_LIMIT            pending events before deliveries get 429 (default 100000)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import platformdirs

from ghl_desktop.core.errors import ConfigError, GhlDesktopError
from ghl_desktop.relay.logs import configure_json_logging
from ghl_desktop.relay.server import DEFAULT_BACKLOG_LIMIT, RelayConfig, RelayServer
from ghl_desktop.relay.store import RelayStore, default_db_url
from ghl_desktop.webhooks.gate import WebhookGate
from ghl_desktop.webhooks.verify import SignatureVerifier

DEFAULT_PORT = 8788


def _db_url(args: argparse.Namespace) -> str:
    if args.db_url:
        return str(args.db_url)
    if os.environ.get("GHL_RELAY_DB_URL"):
        return os.environ["GHL_RELAY_DB_URL"]
    data_dir = args.data_dir or os.environ.get("GHL_RELAY_DATA_DIR") or platformdirs.user_data_dir(
        "ghl-relay", appauthor=False)
    return default_db_url(Path(data_dir).expanduser())


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghl-relay", description="HighLevel webhook relay for ghl-desktop")
    parser.add_argument("--db-url", help="SQLAlchemy database URL")
    parser.add_argument("--data-dir", help="directory for the default SQLite database")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the relay server")
    serve.add_argument("--host", default=os.environ.get("GHL_RELAY_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int,
                       default=int(os.environ.get("PORT") or os.environ.get("GHL_RELAY_PORT") or DEFAULT_PORT))
    serve.add_argument("--db-url", dest="db_url_sub")
    serve.add_argument("--log-level", default=os.environ.get("GHL_RELAY_LOG_LEVEL", "INFO"))

    token = sub.add_parser("token", help="manage desktop install tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token (printed once, stored hashed)")
    create.add_argument("--name", required=True)
    create.add_argument("--location", action="append", default=None,
                        help="only stream this location's events (repeatable; default: all)")
    create.add_argument("--db-url", dest="db_url_sub")
    lst = token_sub.add_parser("list", help="list installs")
    lst.add_argument("--db-url", dest="db_url_sub")
    revoke = token_sub.add_parser("revoke", help="revoke a token and drop its pending events")
    revoke.add_argument("--name", required=True)
    revoke.add_argument("--db-url", dest="db_url_sub")
    return parser


async def _serve(args: argparse.Namespace, db_url: str) -> int:
    store = RelayStore.open(db_url)
    verifier = SignatureVerifier.from_values(
        os.environ.get("GHL_WEBHOOK_ED25519_PUBLIC_KEY") or None,
        os.environ.get("GHL_WEBHOOK_RSA_PUBLIC_KEY") or None,
        _truthy(os.environ.get("GHL_ACCEPT_UNSIGNED_WEBHOOKS")),
    )
    config = RelayConfig(backlog_limit=int(os.environ.get("GHL_RELAY_BACKLOG_LIMIT") or DEFAULT_BACKLOG_LIMIT))
    server = RelayServer(store, WebhookGate(verifier), host=args.host, port=args.port, config=config)
    try:
        await server.start()
    except OSError as exc:
        store.close()
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                          "is another relay running? choose another --port") from exc
    print(f"relay: {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows
            pass
    try:
        await stop.wait()
    finally:
        await server.stop()
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "db_url_sub", None):
        args.db_url = args.db_url_sub
    db_url = _db_url(args)
    try:
        if args.command == "serve":
            configure_json_logging(args.log_level)
            return asyncio.run(_serve(args, db_url))
        store = RelayStore.open(db_url)
        try:
            if args.token_command == "create":
                token = store.create_token(args.name, args.location)
                scope = ", ".join(args.location) if args.location else "all locations"
                print(f"created token for install {args.name!r} ({scope}). It is shown only once:")
                print(token)
            elif args.token_command == "list":
                for install in store.list_installs():
                    scope = ", ".join(sorted(install.locations)) if install.locations else "all locations"
                    print(f"{install.name}\t{scope}\tpending={store.pending_count(install.id)}")
            elif args.token_command == "revoke":
                if not store.revoke_token(args.name):
                    print(f"no token named {args.name!r}", file=sys.stderr)
                    return 1
                print(f"revoked {args.name!r}")
        finally:
            store.close()
    except GhlDesktopError as exc:
        print(f"ghl-relay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
