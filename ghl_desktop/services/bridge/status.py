"""Status work: WhatsApp receipts become message statuses (never ahead of WhatsApp) and
``ghl.status`` jobs push them to HighLevel; ``ghl.app_event`` handles INSTALL / UNINSTALL."""

from __future__ import annotations

from collections.abc import Sequence

from ghl_desktop.core.jobs import ProviderPayload, StatusPayload
from ghl_desktop.core.models import (
    Direction,
    Job,
    LocationState,
    Message,
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
    status_job,
)


class StatusWork(BridgeWork):
    async def on_receipt(self, session: WhatsAppSession, receipt: Receipt) -> None:
        """Delivery/read receipts for messages we sent: real ticks only, never ahead of WhatsApp."""
        new_status = RECEIPT_STATUS.get(receipt.kind)
        if new_status is None:
            return
        updated, enqueued = await self._repos.run(self._apply_receipt, session.id, receipt.message_ids, new_status)
        for row in updated:
            self._logged(row)
        if enqueued:
            self._on_enqueued()

    def _apply_receipt(
        self, session_id: str, wa_ids: Sequence[str], new_status: MessageStatus,
    ) -> tuple[list[Message], bool]:
        """(storage thread) The receipt's messages moved to ``new_status`` and their status jobs
        enqueued: (the rows that changed, whether a job was enqueued)."""
        repos = self._repos.sync
        changed: list[Message] = []
        enqueued = False
        for wa_id in wa_ids:
            row = repos.messages.by_wa_id(session_id, wa_id)
            if row is None or row.id is None or row.direction is not Direction.OUTBOUND:
                continue
            if row.status is MessageStatus.FAILED or new_status.rank < row.status.rank:
                continue
            if new_status is not row.status:
                row = repos.messages.update(row.id, status=new_status)
                changed.append(row)
            # The same receipt again (redelivered because the process died before acking it) enqueues
            # again too: the status job may never have been stored (deduplicated by its key).
            job = status_job(row, new_status, None) if row.ghl_message_id and not row.from_me else None
            if job is not None:
                repos.jobs.enqueue(job)
                enqueued = True
        return changed, enqueued

    async def _handle_status(self, job: Job) -> None:
        p = StatusPayload.from_json(job.payload)
        await self._ghl.update_status(p.location_id, p.message_id, p.status, p.error)

    async def _handle_app_event(self, job: Job) -> None:
        event = ProviderPayload.from_json(job.payload).event
        kind = str(event.get("type", ""))
        location_id = event.get("locationId")
        if kind == "UNINSTALL" and location_id:
            await self._repos.run(self._uninstalled, str(location_id))
        self._bus.publish(LocationsChanged(str(location_id) if location_id else None, kind))

    def _uninstalled(self, location_id: str) -> None:
        """(storage thread) The app was uninstalled from a location we know: mark it so."""
        locations = self._repos.sync.locations
        if locations.get(location_id):
            locations.set_state(location_id, LocationState.UNINSTALLED)
