"""``ghl-desktop sandbox``: run the HighLevel sandbox until SIGINT/SIGTERM.

The first line on stdout is ``sandbox: http://HOST:PORT`` once it listens (scripts wait for it), then
the sandbox app's credentials so a person can configure the desktop app against it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any
from urllib.parse import urlencode

from ghl_desktop.sandbox.server import running_sandbox
from ghl_desktop.sandbox.state import SandboxStateError

log = logging.getLogger("ghl.sandbox")


async def _serve(options: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with running_sandbox(**options) as sb:
        state = sb.state
        lines = [
            f"sandbox: {sb.url}",
            f"client_id: {sb.client_id}",
            f"client_secret: {sb.client_secret}",
            f"conversation_provider_id: {sb.provider_id}",
            f"company_id: {sb.company_id}",
            *(f"location: {loc.id} {loc.name}" for loc in state.locations.values()),
            *(f"redirect uri: {uri}" for uri in sb.sandbox.config.registered_redirect_uris()),
            f"scopes: {' '.join(sb.sandbox.config.registered_scopes())}",
            f"consent page: {sb.url}/oauth/chooselocation?"
            + urlencode({"client_id": sb.client_id, "redirect_uri": sb.sandbox.config.registered_redirect_uris()[0],
                         "response_type": "code", "scope": " ".join(sb.sandbox.config.registered_scopes())}),
            f"inbox: {sb.url}/",
            f"control: {sb.url}/_sandbox/state",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        await stop.wait()


def run_sandbox(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "locations": args.locations,
        "redirect_uris": list(args.redirect_uri or []),
        "webhook_url": args.webhook_url,
        "app_webhook_url": args.app_webhook_url,
        "state_dir": args.state_dir,
        "strict_versions": bool(getattr(args, "strict_versions", False)),
    }
    if getattr(args, "retired_version", None):
        options["retired_versions"] = list(args.retired_version)
    try:
        asyncio.run(_serve(options))
    except SandboxStateError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
