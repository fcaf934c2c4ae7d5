"""History on link (issue 15): the chats WhatsApp's history sync offers after a number is linked are
imported into HighLevel — the messages of the last ``history_days`` days (0: off, the default; a number
may have its own value), oldest first, with their original dates, each exactly once.

How, and why so:

- ``on_history`` (the sessions service's history sink, awaited before the transport acknowledges the
  chunk) picks the chunk's messages within the days (``core.history.select_history``) and stores each
  as a message row with its ``wa.history`` job and a history item, all in one transaction
  (``adapters/storage/history.py``). A crash before that commit leaves the chunk unacknowledged
  (WhatsApp / the simulated network offers it again); after it, the jobs carry on after a restart.
- Exactly once with live messages: the row is keyed by (number, WhatsApp id) like a live one, and the
  job's dedupe key is the live path's (``wa:<session>:<id>``). Whichever path stores a message first
  carries it; the other finds it and adds nothing.
- A ``wa.history`` job runs the live inbound work (``wa.inbound``: contact, media, post with ``altId``
  = WhatsApp id, ``date`` = the message's own time, ``direction`` outbound for what the phone sent), so
  a retry after a crash asks HighLevel for the ``altId`` before posting again.
- Behind live traffic, never ahead: the jobs run on a runner of their own, one at a time, that leases
  only while the live runner has nothing running or due (:meth:`HistoryImport.gate`) and is not
  paused. Both share the HighLevel client and so its per-location rate scheduler. Per chat the jobs
  keep their order (``ordering_key`` ``history:<session>:<chat>``), separate from the live key, so a
  live message never waits behind an imported one.
- Cancel: the waiting items of the number are marked cancelled (their messages say so), their jobs
  deleted, and later chunks are dropped; progress is counted over the items.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ghl_desktop.core.convert import incoming_to_payload
from ghl_desktop.core.errors import GhlDesktopError
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.history import CANCELLED, HistoryChanged, HistoryProgress, check_history_days, select_history
from ghl_desktop.core.jobs import InboundPayload
from ghl_desktop.core.models import Direction, Job, Message, MessageStatus, NewJob, WhatsAppSession, utcnow
from ghl_desktop.core.whatsapp import HistorySync, IncomingMessage

log = logging.getLogger("ghl.bridge.history")

HISTORY = "wa.history"

JobHandler = Callable[[Job], Awaitable[None]]


def ordering_prefix(session_id: str) -> str:
    return f"history:{session_id}:"


class HistoryStore(Protocol):
    """The blocking storage of history imports (``adapters/storage/history.py``), run off the loop."""

    def days_of(self, session_id: str) -> tuple[int | None, bool]: ...
    def set_days(self, session_id: str, days: int | None) -> None: ...
    def store_chunk(self, session_id: str, items: Sequence[tuple[Message, NewJob]]) -> int: ...
    def item_state(self, message_id: int) -> str | None: ...
    def mark_imported(self, message_id: int) -> None: ...
    def mark_failed(self, message_id: int) -> None: ...
    def progress(self, session_ids: Sequence[str] | None = None) -> list[HistoryProgress]: ...
    def cancel(self, session_id: str, *, ordering_prefix: str) -> int: ...
    def live_work_due(self, kinds: Sequence[str], now: Any) -> bool: ...


Offload = Callable[..., Awaitable[Any]]


def history_row(session: WhatsAppSession, msg: IncomingMessage) -> Message:
    """The message row of a history message (as the live path stores one)."""
    return Message(
        location_id=session.location_id,
        direction=Direction.OUTBOUND if msg.from_me else Direction.INBOUND,
        kind=msg.kind, chat_jid=msg.chat, session_id=session.id, wa_message_id=msg.id, sender_jid=msg.sender,
        body=msg.text,
        media_mime=msg.media.mimetype if msg.media else None,
        media_name=msg.media.file_name if msg.media else None,
        media_size=msg.media.size if msg.media else None,
        quoted_wa_id=msg.target_id or msg.quoted_id, from_me=msg.from_me, status=MessageStatus.RECEIVED,
        sent_at=msg.timestamp,
    )


def history_job(session: WhatsAppSession, msg: IncomingMessage) -> NewJob:
    """Its job: the live inbound payload, the live dedupe key, a per-chat order of its own."""
    return NewJob(
        kind=HISTORY,
        payload=InboundPayload(session.id, incoming_to_payload(msg)).to_json(),
        dedupe_key=f"wa:{session.id}:{msg.id}",
        ordering_key=f"{ordering_prefix(session.id)}{msg.chat}",
    )


class HistoryImport:
    def __init__(
        self,
        store: HistoryStore,
        offload: Offload,
        inbound: JobHandler,
        *,
        days: Callable[[], int],
        live_kinds: Sequence[str],
        live_paused: Callable[[], bool] = lambda: False,
        ignore_groups: bool = False,
        bus: EventBus | None = None,
        on_enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._run = offload
        self._inbound = inbound
        self._days = days
        self._live_kinds = list(live_kinds)
        self._live_paused = live_paused
        self._ignore_groups = ignore_groups
        self._bus = bus
        self._on_enqueued = on_enqueued

    @property
    def handlers(self) -> dict[str, JobHandler]:
        return {HISTORY: self.handle}

    # --- the sessions service's sink -----------------------------------------------------------------

    async def on_history(self, session: WhatsAppSession, sync: HistorySync) -> None:
        """One history chunk, before it is acknowledged: what is within the number's days is stored."""
        own, cancelled = await self._run(self._store.days_of, session.id)
        days = own if own is not None else self._days()
        if cancelled or days <= 0:
            log.info("session %s: history chunk %d not imported (%s)", session.id, sync.chunk_order,
                     "import cancelled" if cancelled else "history_days is 0")
            return
        picked = select_history(sync, days, utcnow(), ignore_groups=self._ignore_groups)
        if not picked:
            return
        items = [(history_row(session, m), history_job(session, m)) for m in picked]
        created = await self._run(self._store.store_chunk, session.id, items)
        log.info("session %s: history chunk %d: %d of %d message(s) within %d days queued for import",
                 session.id, sync.chunk_order, created, len(picked), days)
        if created:
            self._changed(session.id)
            self._on_enqueued()

    # --- the job -----------------------------------------------------------------------------------

    async def handle(self, job: Job) -> None:
        message_id = job.payload.get("message_id")
        if isinstance(message_id, int):
            if await self._run(self._store.item_state, message_id) == CANCELLED:
                return
        try:
            await self._inbound(job)
        except GhlDesktopError as error:
            if not error.transient and isinstance(message_id, int):  # the runner dead-letters it
                await self._run(self._store.mark_failed, message_id)
                self._changed(str(job.payload.get("session_id", "")))
            raise
        if isinstance(message_id, int):
            await self._run(self._store.mark_imported, message_id)
            self._changed(str(job.payload.get("session_id", "")))

    async def gate(self) -> bool:
        """Whether the history runner may lease now: the live runner is not paused and has nothing
        running or due."""
        if self._live_paused():
            return False
        return not await self._run(self._store.live_work_due, self._live_kinds, utcnow())

    # --- what the window does ---------------------------------------------------------------------

    async def progress(self, session_ids: Sequence[str] | None = None) -> list[HistoryProgress]:
        return list(await self._run(self._store.progress, session_ids))

    async def set_days(self, session_id: str, days: int | None) -> None:
        """The number's own history_days (None: follow the setting); ConfigError above the maximum."""
        if days is not None:
            days = check_history_days(days, "the number's history days")
        await self._run(self._store.set_days, session_id, days)
        self._changed(session_id)

    async def cancel(self, session_id: str) -> int:
        """Stop the number's import; returns how many waiting messages will not be imported."""
        cancelled = int(await self._run(self._store.cancel, session_id, ordering_prefix=ordering_prefix(session_id)))
        log.info("session %s: history import cancelled (%d message(s) not imported)", session_id, cancelled)
        self._changed(session_id)
        return cancelled

    def _changed(self, session_id: str) -> None:
        if self._bus is not None and session_id:
            self._bus.publish(HistoryChanged(session_id))
