"""The message log and the dead letters, as the window uses them (Qt-free).

:class:`MessageLogService` is what ``cockpit.log`` is: the message-log panel and the dead-letters
panel call only this. It answers

- **the log**: :meth:`ids` (every matching id, in order — on a worker thread of its own for a file
  database, since a million ids take a fraction of a second to a few seconds, so it never holds up
  the storage executor's writes), :meth:`head` (the first ids and the rows of the first page, one
  hop), :meth:`rows` (one page), :meth:`changes` (which of these changed messages still belong to
  the filtered view, with their rows: one hop for a burst of live updates), :meth:`details` (ids,
  timestamps, the error in full, the jobs that carried it with their payloads redacted),
  :meth:`filter_choices`, :meth:`export_csv` (the filtered view streamed to a file in batches, on a
  worker thread);
- **retry**: :meth:`retry_message` (a failed message: its dead job requeued, or — when its job
  finished by failing it — a new job of the same work, both atomic with the message's reset to
  pending; pressing it twice retries once), :meth:`dead_letters`, :meth:`dead_letters_if_changed`,
  :meth:`retry_dead`, :meth:`retry_all_dead`.

Every read and write is a coroutine whose database work runs off the event loop thread, on the
storage executor (``run``: ``db.aio.run`` in the app, see docs/event-loop.md), one hop per user
action or page; only the results come back to the loop (bus events are published there).

Every change to a message is published as ``MessageLogged`` on the bus, as the bridge does, so the
panels update the same way whoever changed it. Retrying needs no running bridge: the job waits in
the queue; ``wake`` (the job runner's) starts it at once when there is one.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import re
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ghl_desktop.core.events import EventBus
from ghl_desktop.core.jobs import ProviderPayload
from ghl_desktop.core.message_log import (
    DeadLetter,
    FilterChoice,
    LogColumn,
    LogDetails,
    LogFilter,
    LogRow,
    LogSort,
    RetryResult,
)
from ghl_desktop.core.models import Direction, Message, MessageStatus, NewJob
from ghl_desktop.core.ports import MessageLogQuery
from ghl_desktop.services.bridge import OUTBOUND, MessageLogged
from ghl_desktop.webhooks.intake import KIND_QUARANTINED

if TYPE_CHECKING:
    from ghl_desktop.app import App
    from ghl_desktop.runtime import BridgeRuntime

log = logging.getLogger("ghl.message_log")

T = TypeVar("T")
#: runs a blocking function off the loop thread and awaits it (``db.aio.run``: the storage executor)
Offload = Callable[..., Awaitable[Any]]

#: rows per batch when exporting (never the whole view in memory)
EXPORT_BATCH = 2000

CSV_COLUMNS = ("id", "time_local", "time_utc", "direction", "number", "location", "contact_name",
               "contact_phone", "chat", "kind", "status", "error", "text")

DIRECTION_LABELS = {Direction.INBOUND: "WhatsApp → HighLevel", Direction.OUTBOUND: "HighLevel → WhatsApp"}

JOB_KIND_LABELS: dict[str, str] = {
    "wa.inbound": "WhatsApp → HighLevel",
    "ghl.outbound_message": "HighLevel → WhatsApp",
    "ghl.status": "Status to HighLevel",
    "ghl.app_event": "Install/uninstall",
}

#: payload keys whose values are secrets or key material (a WhatsApp media handle holds the media key)
_PAYLOAD_SECRET_KEYS = re.compile(
    r"(?i)^(handle|media_key|mediakey|signature|x-wh-signature|token|access_token|refresh_token|id_token|"
    r"client_secret|secret|password|passphrase|api_key|apikey|authorization|code)$"
)
REDACTED = "[REDACTED]"


def _redact_payload(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if _PAYLOAD_SECRET_KEYS.match(str(k)) and v not in (None, "") else _redact_payload(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_payload(v) for v in value]
    return value


#: dead-letter kinds that no handler can run again (a relay event quarantined as unreadable)
UNRETRYABLE_KINDS = frozenset({KIND_QUARANTINED})


class MessageLogService:
    def __init__(
        self,
        query: MessageLogQuery,
        *,
        run: Offload | None = None,
        bus: EventBus | None = None,
        wake: Callable[[], None] | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.query = query
        self._run: Offload = run or _default_offload(query)
        self._bus = bus
        self._wake = wake or (lambda: None)
        self._redact = redact or (lambda text: text)

    @classmethod
    def for_app(cls, app: App, runtime: BridgeRuntime | None = None) -> MessageLogService:
        """The service on the app's database (its storage executor), bus and log redactor; the runtime's
        runner is woken on retry."""
        wake = runtime.runner.wake if runtime is not None else None
        return cls(app.db.message_log, run=app.db.aio.run, bus=app.bus, wake=wake,
                   redact=app.logging.redactor.redact)

    async def _off(self, fn: Callable[..., T], /, *args: Any) -> T:
        result: T = await self._run(fn, *args)
        return result

    # -- the log -------------------------------------------------------------------------------

    async def ids(self, log_filter: LogFilter, sort: LogSort, limit: int | None = None) -> array[int]:
        """Every matching id (the first ``limit``) in order. A long query on a file database runs on a
        thread of its own (SQLite WAL readers do not wait for the writer), else on the executor."""
        if limit is None and self.query.threadsafe:
            return await asyncio.to_thread(self.query.ids, log_filter, sort)
        return await self._off(self.query.ids, log_filter, sort, limit)

    def ids_now(self, log_filter: LogFilter, sort: LogSort, limit: int | None = None) -> array[int]:
        """The same, on the calling thread: for scripts and code that is not on the event loop."""
        return self.query.ids(log_filter, sort, limit)

    @staticmethod
    def head_is_cheap(log_filter: LogFilter, sort: LogSort) -> bool:
        """Whether the first rows of this view come straight off an index (a bounded scan that stops)."""
        return log_filter.is_empty and sort.column is LogColumn.TIME

    async def head(self, log_filter: LogFilter, sort: LogSort, limit: int, first_rows: int
                   ) -> tuple[array[int], list[LogRow]]:
        """The first ``limit`` ids and the rows of the first ``first_rows`` of them, in one hop."""
        def read() -> tuple[array[int], list[LogRow]]:
            ids = self.query.ids(log_filter, sort, limit)
            return ids, self.query.rows(list(ids[:first_rows]))

        return await self._off(read)

    async def ends(self, log_filter: LogFilter, sort: LogSort, limit: int, first_rows: int
                   ) -> tuple[int, array[int], array[int], list[LogRow]]:
        """The view's two ends before its whole id list, in one hop: (how many match, the first
        ``limit`` ids, the last ``limit`` ids — empty when the first are all —, the rows of the first
        and of the last ``first_rows`` of them). Each is a bounded index scan (``head_is_cheap``) and
        the count an index count, so a million messages open (and scroll to the end) at once."""
        def read() -> tuple[int, array[int], array[int], list[LogRow]]:
            head = self.query.ids(log_filter, sort, limit)
            if len(head) < limit:
                return len(head), head, array("q"), self.query.rows(list(head[:first_rows]))
            count = self.query.count(log_filter)
            tail = array("q")
            if count > len(head):
                tail = self.query.ids(log_filter, LogSort(sort.column, not sort.descending), limit)
                tail.reverse()
            wanted = list(dict.fromkeys([*head[:first_rows], *tail[-first_rows:]]))
            return count, head, tail, self.query.rows(wanted)

        return await self._off(read)

    async def rows(self, message_ids: Sequence[int]) -> list[LogRow]:
        """One page of rows (ids that no longer exist are left out)."""
        if not message_ids:
            return []
        return await self._off(self.query.rows, list(message_ids))

    async def matches(self, message_id: int, log_filter: LogFilter) -> bool:
        if log_filter.is_empty:
            return True
        return await self._off(self.query.matches, message_id, log_filter)

    async def changes(self, message_ids: Sequence[int], log_filter: LogFilter) -> dict[int, LogRow | None]:
        """For messages that changed: id → its row when it belongs to the filtered view, else None
        (filtered out, or deleted). One hop for the whole burst."""
        wanted = list(dict.fromkeys(message_ids))

        def read() -> dict[int, LogRow | None]:
            keep = wanted if log_filter.is_empty else [i for i in wanted if self.query.matches(i, log_filter)]
            found = {row.id: row for row in self.query.rows(keep)} if keep else {}
            return {i: found.get(i) for i in wanted}

        if not wanted:
            return {}
        return await self._off(read)

    async def details(self, message_id: int) -> LogDetails | None:
        """The message's details with every job payload redacted (secrets, tokens, media keys)."""
        return await self._off(self._details, message_id)

    def _details(self, message_id: int) -> LogDetails | None:
        details = self.query.details(message_id)
        if details is None:
            return None
        jobs = tuple(replace(job, payload=self._redact_text(job.payload),
                             last_error=self._redact(job.last_error) if job.last_error else None)
                     for job in details.jobs)
        return replace(details, jobs=jobs, retryable=self._retryable(details))

    def _redact_text(self, payload_json: str) -> str:
        try:
            data = json.loads(payload_json)
        except ValueError:
            return self._redact(payload_json)
        return self._redact(json.dumps(_redact_payload(data), indent=2, sort_keys=True, ensure_ascii=False))

    @staticmethod
    def _retryable(details: LogDetails) -> bool:
        return details.row.status is MessageStatus.FAILED or any(job.state == "dead" for job in details.jobs)

    async def filter_choices(self) -> tuple[list[FilterChoice], list[FilterChoice]]:
        """(locations, numbers) for the filter boxes, in one hop."""
        def read() -> tuple[list[FilterChoice], list[FilterChoice]]:
            return self.query.location_choices(), self.query.number_choices()

        return await self._off(read)

    async def location_choices(self) -> list[FilterChoice]:
        return await self._off(self.query.location_choices)

    async def number_choices(self) -> list[FilterChoice]:
        return await self._off(self.query.number_choices)

    # -- export ----------------------------------------------------------------------------------

    async def export_csv(self, path: str | Path, log_filter: LogFilter, sort: LogSort,
                         *, ids: Sequence[int] | None = None) -> int:
        """Write the filtered view to ``path`` (UTF-8 CSV with a header), on a worker thread, reading
        rows in batches of ``EXPORT_BATCH``; returns the number of messages written. ``ids``: the view's
        ids as already loaded (else they are queried). Written to a temporary file first, then renamed."""
        if self.query.threadsafe:
            return await asyncio.to_thread(self._export, Path(path), log_filter, sort, ids)
        return self._export(Path(path), log_filter, sort, ids)

    def _export(self, path: Path, log_filter: LogFilter, sort: LogSort, ids: Sequence[int] | None) -> int:
        order = ids if ids is not None else self.query.ids(log_filter, sort)
        partial = path.with_name(path.name + ".part")
        written = 0
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for start in range(0, len(order), EXPORT_BATCH):
                chunk = list(order[start:start + EXPORT_BATCH])
                by_id = {row.id: row for row in self.query.rows(chunk, full_text=True)}
                for message_id in chunk:
                    row = by_id.get(message_id)
                    if row is None:
                        continue  # deleted meanwhile (its location was removed)
                    writer.writerow(csv_record(row))
                    written += 1
        partial.replace(path)
        log.info("exported %d messages to %s", written, path)
        return written

    # -- retry -----------------------------------------------------------------------------------

    async def retry_message(self, message_id: int) -> RetryResult:
        """Retry a failed message (idempotent: a second press finds nothing left to retry). The reads and
        the write run in one hop off the loop; the change is published on the loop."""
        result, changed = await self._off(self._retry_message, message_id)
        self._after_retry(result, changed)
        return result

    def _retry_message(self, message_id: int) -> tuple[RetryResult, list[Message]]:
        dead = self.query.dead_jobs_of(message_id)
        if dead:
            return self._retry_dead(dead)
        message = self.query.message(message_id)
        if message is None:
            return RetryResult(0, "That message no longer exists."), []
        if message.status is not MessageStatus.FAILED:
            return RetryResult(0, "Nothing to retry: the message is not failed (already retried?)."), []
        if message.direction is not Direction.OUTBOUND or not message.ghl_message_id:
            return RetryResult(0, "This message cannot be sent again from here: WhatsApp has to deliver it "
                                  "again."), []
        base = f"ghl:msg:{message.ghl_message_id}"
        payload = self.query.job_payload(base) or _outbound_payload(message.location_id, message.ghl_message_id,
                                                                    message.chat_jid, message.body,
                                                                    message.media_ref)
        contact = ProviderPayload.from_json(payload).contact_id
        attempt = self.query.retry_count(base) + 1
        job = NewJob(
            kind=OUTBOUND,
            payload={**payload, "retry_of_message": message_id, "retried_at": datetime.now(UTC).isoformat()},
            dedupe_key=f"{base}#retry-{attempt}",
            ordering_key=f"ghl:conv:{message.location_id}:{contact}" if contact else None,
        )
        updated = self.query.retry_failed(message_id, job)
        if updated is None:
            return RetryResult(0, "Nothing to retry: the message is not failed (already retried?)."), []
        log.info("message %s: retry queued (%s)", message_id, job.dedupe_key)
        return RetryResult(1, "Queued again: it will be sent as soon as its WhatsApp number is connected."), [updated]

    def _after_retry(self, result: RetryResult, changed: Sequence[Message]) -> None:
        """On the loop: publish what changed, wake the runner when something was queued."""
        self._publish(changed)
        if result.requeued:
            self._wake()

    async def dead_letters(self, limit: int = 500) -> list[DeadLetter]:
        return await self._off(self._dead_letters, limit)

    def _dead_letters(self, limit: int = 500) -> list[DeadLetter]:
        return [replace(d, reason=self._redact(d.reason), summary=self._redact(d.summary))
                for d in self.query.dead_letters(limit)]

    async def dead_letters_stamp(self) -> tuple[int, int, str]:
        """Poll this (one aggregate query) and read :meth:`dead_letters` only when it changed."""
        return await self._off(self.query.dead_letters_stamp)

    async def dead_letters_if_changed(self, stamp: tuple[int, int, str] | None, limit: int = 500
                                      ) -> tuple[tuple[int, int, str], list[DeadLetter] | None]:
        """(the stamp now, the dead letters — or None when the stamp is still ``stamp``), one hop."""
        def read() -> tuple[tuple[int, int, str], list[DeadLetter] | None]:
            now = self.query.dead_letters_stamp()
            return now, (None if now == stamp else self._dead_letters(limit))

        return await self._off(read)

    async def retry_dead(self, job_ids: Sequence[int]) -> RetryResult:
        """Requeue these dead jobs (their failed messages back to where they started).

        A quarantined relay event (:data:`UNRETRYABLE_KINDS`) is kept only for the user to read: no
        handler can process it, so requeueing it would leave it pending forever and count toward the
        webhook backlog. It stays where it is and the answer says why."""
        result, changed = await self._off(self._retry_dead, list(job_ids))
        self._after_retry(result, changed)
        return result

    def _retry_dead(self, job_ids: Sequence[int]) -> tuple[RetryResult, list[Message]]:
        kinds = {d.job_id: d.kind for d in self.query.dead_letters(limit=100_000)}
        wanted = [job_id for job_id in job_ids if kinds.get(job_id) not in UNRETRYABLE_KINDS]
        if job_ids and not wanted:
            return RetryResult(0, "This event could not be read when it arrived, so it cannot be retried; "
                                  "it is kept here for you to look at."), []
        requeued, messages = self.query.requeue_dead(wanted)
        if requeued:
            log.info("requeued %d dead job(s)", requeued)
            return RetryResult(requeued, f"{requeued} job{'s' * (requeued != 1)} queued again."), messages
        return RetryResult(0, "Nothing to retry (already retried?)."), messages

    async def retry_all_dead(self) -> RetryResult:
        def run() -> tuple[RetryResult, list[Message]]:
            return self._retry_dead([d.job_id for d in self.query.dead_letters(limit=100_000)])

        result, changed = await self._off(run)
        self._after_retry(result, changed)
        return result

    def _publish(self, messages: Sequence[Any]) -> None:
        if self._bus is not None:
            for message in messages:
                self._bus.publish(MessageLogged(message))


def _default_offload(query: MessageLogQuery) -> Offload:
    """Without the app's executor (scripts, a bare query): a worker thread for a file database; an
    in-memory one (one shared connection) runs where it is called."""
    if query.threadsafe:
        return asyncio.to_thread

    async def inline(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return inline


def _outbound_payload(location_id: str, ghl_id: str, chat_jid: str, body: str | None,
                      media_ref: str | None) -> dict[str, Any]:
    """The provider webhook the bridge would have received, rebuilt from the stored message (its job
    was purged). Only what the outbound handler reads."""
    user = chat_jid.partition("@")[0].split(":", 1)[0]
    return {"event": {
        "type": "SMS", "locationId": location_id, "messageId": ghl_id,
        "phone": "+" + user if user.isdigit() else "", "message": body or "",
        "attachments": media_ref.split() if media_ref else [],
    }, "via": "retry"}


def local_time(value: datetime) -> datetime:
    return value.astimezone() if value.tzinfo else value.replace(tzinfo=UTC).astimezone()


def csv_record(row: LogRow) -> list[str]:
    return [
        str(row.id), local_time(row.time).isoformat(timespec="seconds"),
        row.time.astimezone(UTC).isoformat(timespec="seconds"), row.direction.value, row.number or "",
        row.location_name or row.location_id, row.contact_name or "", row.contact_phone or "", row.chat_jid,
        row.kind.value, row.status.value, row.error or "", row.text,
    ]


__all__ = ["CSV_COLUMNS", "DIRECTION_LABELS", "EXPORT_BATCH", "JOB_KIND_LABELS", "MessageLogService", "csv_record"]
