"""``python -m ghl_desktop.relay`` = ``ghl-relay``."""

from __future__ import annotations

from ghl_desktop.relay.cli import main

raise SystemExit(main())
