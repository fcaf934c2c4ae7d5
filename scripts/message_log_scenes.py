"""Screenshot scene of the message log with its details pane, for ``make screenshots``.

scripts/screenshots.py registers :func:`message_log_details` (it takes its ``Stage``: the running
sandbox-mode window, after the scenes that linked a number and let customers write). It saves

- ``25-message-log-details`` — the Messages tab: every message with its number, location, contact
  (name and phone) and tick icons, a failed reply selected, and the details pane beside the table with
  the failure reason in full, the three ids, the times and the job's redacted payload.

The failure is real: an agent answers, through the sandbox's control API, a HighLevel contact whose
phone is on no simulated WhatsApp account, and the bridge fails the message with its reason.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NOT_ON_WHATSAPP = "+15550109999"


async def message_log_details(stage: Any) -> None:
    from ghl_desktop.core.message_log import LogFilter, LogSort
    from ghl_desktop.core.models import MessageStatus

    w = stage.window
    panel = w.log_panel
    service = panel.service
    location_id = w.locations.model.record(0).id
    contact = await stage.post(f"/_sandbox/locations/{location_id}/contacts",
                               {"phone": NOT_ON_WHATSAPP, "name": "Dana Whitfield"})
    await stage.post(f"/_sandbox/locations/{location_id}/reply",
                     {"contactId": contact["id"], "message": "Your new appointment: Thursday 3:30 pm."})
    failed = LogFilter(statuses=frozenset({MessageStatus.FAILED}))

    def a_failure() -> int | None:
        ids = service.ids_now(failed, LogSort())
        return ids[0] if ids else None

    message_id = await stage.until(a_failure)
    w.log_tabs.setCurrentWidget(panel)
    # as a user looking into a failure would: the log dragged taller (the splitter is restored after)
    sizes = w.main_splitter.sizes()
    w.main_splitter.setSizes([sum(sizes) - max(sizes[1], 520), max(sizes[1], 520)])
    await panel.wait_idle()
    panel.select_message(message_id)
    await panel.wait_idle()
    panel.select_message(message_id)
    await stage.settle()
    stage.save(w.log_tabs, "25-message-log-details")
    w.main_splitter.setSizes(sizes)


__all__ = ["message_log_details"]
