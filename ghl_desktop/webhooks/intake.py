"""The durable hand-off: a verified webhook becomes a job in the desktop's queue before we answer.

HighLevel retries a delivery only when it gets a 429, so every answer here is chosen for that:
200 once the job is committed (or already was — a duplicate), 429 while the pending backlog is over
the limit or the database cannot take the write right now, and nothing is stored for a refusal.

Job payload (what the bridge reads): ``{"event": <the HighLevel body>, "received_at": ISO-8601,
"signature": "ed25519"|"rsa-sha256"|"unsigned", "via": "direct"|"relay"}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ghl_desktop.core.errors import WebhookBacklogFull
from ghl_desktop.core.events import EventBus
from ghl_desktop.core.jobs import ProviderPayload
from ghl_desktop.core.models import NewJob, utcnow
from ghl_desktop.core.ports import AsyncJobQueue
from ghl_desktop.core.storage_health import StorageMonitor
from ghl_desktop.webhooks.gate import VerifiedEvent, classify_kind
from ghl_desktop.webhooks.verify import SignatureScheme

log = logging.getLogger("ghl.webhooks")

DEFAULT_BACKLOG_LIMIT = 100_000
#: a relayed event this desktop could not process, kept (dead-lettered) instead of blocking the stream
KIND_QUARANTINED = "relay.quarantined"
#: how much of a quarantined frame is kept for the user to look at
QUARANTINE_EXCERPT_CHARS = 2000


class WebhookStoreUnavailable(WebhookBacklogFull):
    """The database refused the write; 429 so HighLevel delivers again later instead of losing it."""


@dataclass(frozen=True)
class WebhookReceived:
    """Published after a delivery is durably stored (``duplicate``: it already was)."""

    kind: str
    job_id: int
    dedupe_key: str
    location_id: str | None
    event_type: str | None
    duplicate: bool
    via: str


@dataclass(frozen=True)
class WebhookRefused:
    """Published when a delivery is refused, for the health panel (no body, no headers)."""

    route: str
    status: int
    reason: str


@dataclass(frozen=True)
class StoredEvent:
    job_id: int
    created: bool


class WebhookIntake:
    """Stores verified events in the job queue (idempotently, by dedupe key). The queue is the async
    facade (``db.aio.jobs``): every write runs on the storage executor, never on the loop thread."""

    def __init__(
        self,
        queue: AsyncJobQueue,
        *,
        backlog_limit: int = DEFAULT_BACKLOG_LIMIT,
        bus: EventBus | None = None,
        pending_count: Callable[[], Awaitable[int]] | None = None,
        backlog_recount_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        monitor: StorageMonitor | None = None,
    ) -> None:
        self._queue = queue
        #: whether durable writes currently fail (disk full…): the 429 body and /healthz say it
        self.monitor = monitor or StorageMonitor(bus)
        self.backlog_limit = backlog_limit
        self._bus = bus
        # jobs waiting for a reconnect / a ban to end never run by themselves: not backlog (issue 11 item 2)
        self._pending_count = pending_count or queue.count_backlog
        #: counting pending jobs costs O(backlog); recount at most this often and add our own inserts
        #: in between. The limit is a soft guard against a runaway backlog, so that is precise enough.
        self.backlog_recount_seconds = backlog_recount_seconds
        self._clock = clock
        self._pending = 0
        self._counted_at = float("-inf")

    async def backlog_full(self) -> bool:
        now = self._clock()
        if now - self._counted_at >= self.backlog_recount_seconds:
            self._counted_at = now  # before the await: concurrent deliveries do not all recount
            self._pending = await self._pending_count()
        return self._pending >= self.backlog_limit

    async def store(self, event: VerifiedEvent, *, via: str = "direct") -> StoredEvent:
        """Enqueue ``event``; raise :class:`WebhookBacklogFull` (→ 429) when it cannot be taken now."""
        try:
            if await self.backlog_full():
                raise WebhookBacklogFull(f"more than {self.backlog_limit} events are waiting; try later")
            job_id, created = await self._queue.enqueue(
                NewJob(
                    kind=event.kind,
                    payload=ProviderPayload(event.event, via, {
                        "received_at": event.received_at.isoformat(),
                        "signature": str(event.scheme),
                    }).to_json(),
                    dedupe_key=event.dedupe_key,
                    ordering_key=event.ordering_key,
                )
            )
        except WebhookBacklogFull:
            raise
        except Exception as exc:  # a storage failure must become a 429, never a lost delivery
            log.exception("could not store webhook %s", event.dedupe_key)
            problem = self.monitor.failed(exc)
            raise WebhookStoreUnavailable(f"{problem.text}; try later") from exc
        self.monitor.ok()
        if created:
            self._pending += 1
        event_type = event.event.get("type")
        log.info(
            "webhook %s %s as job %d (%s, via %s)",
            event.dedupe_key,
            "stored" if created else "duplicate",
            job_id,
            event.kind,
            via,
        )
        if self._bus is not None:
            self._bus.publish(
                WebhookReceived(
                    kind=event.kind,
                    job_id=job_id,
                    dedupe_key=event.dedupe_key,
                    location_id=event.location_id,
                    event_type=event_type if isinstance(event_type, str) else None,
                    duplicate=not created,
                    via=via,
                )
            )
        return StoredEvent(job_id, created)

    async def store_relayed(self, kind: str, event: dict[str, Any]) -> StoredEvent:
        """An event the relay verified: re-check its shape, derive the same keys, store it."""
        dedupe, ordering = classify_kind(kind, event)
        verified = VerifiedEvent(kind=kind, event=event, dedupe_key=dedupe, ordering_key=ordering,
                                 scheme=SignatureScheme.RELAY)
        return await self.store(verified, via="relay")

    async def quarantine(self, kind: str, raw: str, reason: str, *, key: str, relay_event_id: int | None = None) -> int:
        """Keep an event that cannot be processed as a dead-lettered job (the Dead letters tab shows it
        with ``reason``); idempotent on ``key``. Raises WebhookStoreUnavailable when it cannot be kept."""
        try:
            job_id, created = await self._queue.enqueue(NewJob(
                kind=KIND_QUARANTINED,
                payload={"kind": kind, "reason": reason, "relay_event_id": relay_event_id,
                         "excerpt": raw[:QUARANTINE_EXCERPT_CHARS], "size": len(raw)},
                dedupe_key=f"quarantine:{key}",
            ))
            if created:
                for job in await self._queue.lease("quarantine", now=utcnow(), lease_seconds=300, limit=100,
                                                   kinds=[KIND_QUARANTINED]):
                    await self._queue.dead_letter(job.id, "quarantine", error=f"quarantined: {reason}")
        except Exception as exc:
            log.exception("could not keep a quarantined event")
            raise WebhookStoreUnavailable(f"{self.monitor.failed(exc).text}; try later") from exc
        return job_id

    def refused(self, route: str, status: int, reason: str) -> None:
        if self._bus is not None:
            self._bus.publish(WebhookRefused(route=route, status=status, reason=reason))


__all__ = [
    "DEFAULT_BACKLOG_LIMIT",
    "KIND_QUARANTINED",
    "StoredEvent",
    "WebhookIntake",
    "WebhookReceived",
    "WebhookRefused",
    "WebhookStoreUnavailable",
]
