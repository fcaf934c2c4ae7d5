"""Developer entry point: ``python -m ghl_desktop.adapters.storage upgrade URL | revision "message"``."""

from __future__ import annotations

from ghl_desktop.adapters.storage.migrate import main

raise SystemExit(main())
