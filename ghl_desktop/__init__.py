"""ghl-desktop: link WhatsApp numbers to HighLevel sub-accounts from the desktop."""

from __future__ import annotations

__version__ = "0.1.0"
