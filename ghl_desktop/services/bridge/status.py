"""Status work: WhatsApp receipts become message statuses (never ahead of WhatsApp) and
``ghl.status`` jobs push them to HighLevel; ``ghl.app_event`` handles INSTALL / UNINSTALL."""

from __future__ import annotations

from ghl_desktop.core.jobs import ProviderPayload, StatusPayload
from ghl_desktop.core.models import (
    Direction,
    Job,
    LocationState,
    MessageStatus,
    WhatsAppSession,
)
from ghl_desktop.core.whatsapp import (
    Receipt,
)
from ghl_desktop.services.bridge.common import (
    RECEIPT_STATUS,
    BridgeWork,
    LocationsChanged,
)


class StatusWork(BridgeWork):
    async def on_receipt(self, session: WhatsAppSession, receipt: Receipt) -> None:
        """Delivery/read receipts for messages we sent: real ticks only, never ahead of WhatsApp."""
        new_status = RECEIPT_STATUS.get(receipt.kind)
        if new_status is None:
            return
        for wa_id in receipt.message_ids:
            row = self._repos.messages.by_wa_id(session.id, wa_id)
            if row is None or row.id is None or row.direction is not Direction.OUTBOUND:
                continue
            if row.status is MessageStatus.FAILED or new_status.rank < row.status.rank:
                continue
            if new_status is row.status:
                # The same receipt again (redelivered because the process died before acking it):
                # the status job may never have been stored, so enqueue it again (deduplicated).
                if row.ghl_message_id and not row.from_me:
                    self._enqueue_status(row, new_status, None)
                continue
            updated = self._repos.messages.update(row.id, status=new_status)
            self._logged(updated)
            if updated.ghl_message_id and not updated.from_me:
                self._enqueue_status(updated, new_status, None)

    async def _handle_status(self, job: Job) -> None:
        p = StatusPayload.from_json(job.payload)
        await self._ghl.update_status(p.location_id, p.message_id, p.status, p.error)

    async def _handle_app_event(self, job: Job) -> None:
        event = ProviderPayload.from_json(job.payload).event
        kind = str(event.get("type", ""))
        location_id = event.get("locationId")
        if kind == "UNINSTALL" and location_id and self._repos.locations.get(str(location_id)):
            self._repos.locations.set_state(str(location_id), LocationState.UNINSTALLED)
        self._bus.publish(LocationsChanged(str(location_id) if location_id else None, kind))
