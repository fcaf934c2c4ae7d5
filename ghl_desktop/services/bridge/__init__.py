"""The bridge: WhatsApp ⇄ HighLevel, durable and exactly-once as the user sees it.

Edges (called from the transports and the webhook intake) only *store*: a message row plus the job
that will carry it across, in one transaction, before anything is acknowledged. Workers (job
handlers run by :class:`~ghl_desktop.services.jobs.JobRunner`) do the network work and are
idempotent, so a job that runs twice — after a crash, a lease expiry, or a manual retry — never makes
a second message appear:

- ``wa.inbound``: resolve the HighLevel contact, upload media, post the provider message with
  ``altId`` = WhatsApp id. On a retry it first asks HighLevel whether that ``altId`` already exists.
- ``ghl.outbound_message``: an agent's reply from a provider webhook. The WhatsApp message id is
  chosen and stored *before* sending, so a retry re-sends the same id (deduplicated by WhatsApp / the
  simulated network; neonize cannot take our id — see the transport's notes for the remaining window).
- ``ghl.status``: push delivered / read / failed to HighLevel, ordered per message.
- ``ghl.app_event``: INSTALL / UNINSTALL.
- ``wa.call``: a WhatsApp call → one line in the caller's conversation, optionally declined with a reply.
"""

from __future__ import annotations

from collections.abc import Callable

from ghl_desktop.core.models import Job
from ghl_desktop.core.ports import FetchedMedia
from ghl_desktop.services.bridge.calls import CALL, CallWork
from ghl_desktop.services.bridge.common import (
    APP_EVENT,
    INBOUND,
    OUTBOUND,
    STATUS,
    BridgeOptions,
    LocationsChanged,
    MessageLogged,
    Repositories,
    SessionAccess,
    new_wa_message_id,
    part_key,
)
from ghl_desktop.services.bridge.inbound import InboundWork
from ghl_desktop.services.bridge.outbound import OutboundWork
from ghl_desktop.services.bridge.status import StatusWork
from ghl_desktop.services.jobs import JobHandler

#: a leased WhatsApp message brings up to this many of its chat's next ones (Bridge.follows): a backlog
#: of one chat moves in runs of 8, about the batch the intake stores at once
INBOUND_FOLLOWERS = 7


class Bridge(InboundWork, OutboundWork, StatusWork, CallWork):
    """The kinds of work over one set of neighbours (``BridgeWork.__init__``)."""

    @property
    def handlers(self) -> dict[str, JobHandler]:
        return {
            INBOUND: self._handle_inbound,
            OUTBOUND: self._handle_outbound,
            STATUS: self._handle_status,
            APP_EVENT: self._handle_app_event,
            CALL: self._handle_call,
        }

    @property
    def prepares(self) -> dict[str, Callable[[Job], object]]:
        """Per kind, the blocking first reads the runner does in its lease's hop (services/jobs.py)."""
        return {INBOUND: self._prepare_inbound}

    @property
    def follows(self) -> dict[str, int]:
        """Per kind, how many of a chat's next jobs the runner leases along with one (services/jobs.py
        ``follow``): a chat's backlog of WhatsApp messages is posted one after another in one slot, each
        post starting while the previous one's completion is written."""
        return {INBOUND: INBOUND_FOLLOWERS}


__all__ = [
    "APP_EVENT", "CALL", "INBOUND", "OUTBOUND", "STATUS", "Bridge", "BridgeOptions", "FetchedMedia", "LocationsChanged",
    "MessageLogged", "Repositories", "SessionAccess", "new_wa_message_id", "part_key",
]
