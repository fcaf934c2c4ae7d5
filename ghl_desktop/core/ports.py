"""Ports: what the services need from the outside world, as Protocols.

Storage has two sides. The repositories (``LocationRepository`` ... ``MessageLogQuery``) are
synchronous: each method is one short SQLite/PostgreSQL transaction that blocks its thread until it
commits (SQLite ``synchronous=FULL`` waits for the fsync). They run only on the storage executor's
threads (``adapters.storage.offloop``), never on the event loop thread.

Services, webhooks and the relay take the ``Async*`` Protocols below instead: the same methods as
``async def``, each awaited while the repository method runs on the executor (one writer thread for
SQLite, a small pool for PostgreSQL). So no service can call blocking storage by accident: a service
typed against ``AsyncJobQueue`` has no synchronous method to call. An awaited write has committed
when it returns (stored before acknowledged, as before).
"""

from __future__ import annotations

from array import array
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ghl_desktop.core.message_log import DeadLetter, FilterChoice, LogDetails, LogFilter, LogRow, LogSort
from ghl_desktop.core.models import (
    ContactLink,
    Job,
    Location,
    LocationState,
    Message,
    MessageStatus,
    NewJob,
    SessionState,
    WhatsAppSession,
)


class LocationRepository(Protocol):
    def upsert(self, location: Location) -> Location: ...
    def get(self, location_id: str) -> Location | None: ...
    def list(self) -> list[Location]: ...
    def set_state(self, location_id: str, state: LocationState) -> None: ...
    def set_token_expiry(self, location_id: str, expires_at: datetime | None) -> None: ...
    def delete(self, location_id: str) -> None: ...


class SessionRepository(Protocol):
    def create(self, session: WhatsAppSession) -> WhatsAppSession: ...
    def get(self, session_id: str) -> WhatsAppSession | None: ...
    def list(self, location_id: str | None = None) -> list[WhatsAppSession]: ...
    def set_state(
        self,
        session_id: str,
        state: SessionState,
        detail: str | None = None,
        state_until: datetime | None = None,
    ) -> WhatsAppSession: ...
    def set_identity(self, session_id: str, phone: str | None, jid: str | None) -> WhatsAppSession: ...
    def delete(self, session_id: str) -> None: ...


class ContactRepository(Protocol):
    def find(
        self,
        location_id: str,
        *,
        phone: str | None = None,
        wa_jid: str | None = None,
        wa_lid: str | None = None,
        ghl_contact_id: str | None = None,
    ) -> ContactLink | None:
        """The first link matching any of the given keys (phone, then JID, then LID, then contact id)."""
        ...

    def save(self, link: ContactLink) -> ContactLink:
        """Insert, or update the row with the same id (or same location+phone / location+jid / location+lid)."""
        ...

    def forget_ghl_contact(self, location_id: str, ghl_contact_id: str) -> int:
        """Clear a HighLevel contact id that HighLevel says no longer exists (merged); returns rows changed."""
        ...


class MessageRepository(Protocol):
    def record(self, message: Message, job: NewJob | None = None) -> tuple[Message, bool]:
        """Store the message and (optionally) its job in ONE transaction.

        Returns (stored message, created). If a message with the same (session_id, wa_message_id) or
        (location_id, ghl_message_id) exists, nothing is written and (existing, False) comes back."""
        ...

    def get(self, message_id: int) -> Message | None: ...
    def by_wa_id(self, session_id: str, wa_message_id: str) -> Message | None: ...
    def by_ghl_id(self, location_id: str, ghl_message_id: str) -> Message | None: ...
    def update(
        self,
        message_id: int,
        *,
        status: MessageStatus | None = None,
        error: str | None = None,
        wa_message_id: str | None = None,
        ghl_message_id: str | None = None,
        media_ref: str | None = None,
        session_id: str | None = None,
    ) -> Message:
        """Change the given fields. A status never moves backwards (read stays read when a late
        delivery receipt arrives), except to FAILED."""
        ...

    def recent(self, limit: int = 200, location_id: str | None = None) -> list[Message]: ...

    def reset_failed(self, message_id: int) -> Message:
        """User pressed retry: FAILED -> PENDING (outbound) / RECEIVED (inbound), error cleared;
        other statuses unchanged."""
        ...


class JobQueue(Protocol):
    def enqueue(self, job: NewJob) -> tuple[int, bool]:
        """Returns (job id, created). Same ``dedupe_key`` → the existing job's id and False."""
        ...

    def lease(self, owner: str, *, now: datetime, lease_seconds: float, limit: int = 10,
              kinds: Sequence[str] | None = None, routes: Sequence[str] | None = None,
              prepare: Callable[[Sequence[Job]], object] | None = None,
              follow: Mapping[str, int] | None = None) -> list[Job]:
        """Atomically claim due jobs: pending with ``next_attempt_at <= now``, or running with an expired
        lease (the worker died). For one ``ordering_key`` only the oldest unfinished job is eligible.
        ``prepare(jobs)``: run after the commit on the same thread with the leased jobs (their handlers'
        first reads, without another hop); what it raises is logged, the lease stands."""
        ...

    def extend_lease(self, job_id: int, owner: str, *, until: datetime) -> bool:
        """Keep a long-running job leased (heartbeat); False when the lease was already lost."""
        ...

    def complete(self, job_id: int, owner: str) -> None: ...
    def complete_many(self, job_ids: Sequence[int], owner: str) -> int:
        """Complete the jobs ``owner`` still holds, in one transaction; returns how many."""
        ...

    def complete_and_lease(self, done: Sequence[int], owner: str, *, now: datetime, lease_seconds: float,
                           limit: int = 10, kinds: Sequence[str] | None = None,
                           routes: Sequence[str] | None = None,
                           finish: Mapping[int, Callable[[], object]] | None = None,
                           prepare: Callable[[Sequence[Job]], object] | None = None,
                           follow: Mapping[str, int] | None = None) -> list[Job]:
        """``complete_many(done)`` and ``lease(limit=..., kinds=..., routes=..., prepare=...)`` in ONE
        transaction (one commit): a finished job's successor on its ``ordering_key`` is eligible in the
        same call. ``limit`` 0: complete only. ``finish``: per job, its handler's last write (blocking, over
        this database's repositories), run first in the same transaction; a job whose write raises is not
        completed. ``follow`` (per kind, how many): a leased job of such a kind also brings its key's next
        consecutive due pending jobs of such kinds, leased too, after the leased ones (not counted in
        ``limit``); the caller runs them in order or gives them back with ``release``."""
        ...

    def release(self, job_ids: Sequence[int], owner: str) -> int:
        """Give back leased jobs that never started: pending again, due as before, the lease's attempt not
        counted. Returns how many ``owner`` still held."""
        ...

    def retry_later(self, job_id: int, owner: str, *, error: str, run_at: datetime) -> None: ...
    def dead_letter(self, job_id: int, owner: str, *, error: str) -> None: ...
    def requeue_dead(self, job_id: int) -> bool:
        """Move a dead job back to pending with its attempts reset (the user pressed retry)."""
        ...

    def purge_done(self, *, finished_before: datetime) -> int:
        """Delete jobs that finished before the given time; returns how many. Safe because every handler
        is idempotent on the messages' unique keys: a late repeat of a purged job's work is a no-op."""
        ...

    def get(self, job_id: int) -> Job | None: ...
    def count(self, state: str | None = None) -> int: ...
    def count_backlog(self) -> int:
        """Pending jobs that will run by themselves: not those waiting for a person or time
        (``last_error`` starts with ``models.WAITING_PREFIX``). Drives the webhook 429."""
        ...

    def list(self, state: str | None = None, limit: int = 100) -> list[Job]: ...


class MessageLogQuery(Protocol):
    """The message log's reads over all history (``core.message_log``), and its one write: Retry.

    ``ids`` may take a while on a big database; it is safe to call from a worker thread when
    ``threadsafe`` is true (each call opens its own session)."""

    @property
    def threadsafe(self) -> bool: ...

    def ids(self, log_filter: LogFilter, sort: LogSort, limit: int | None = None) -> array[int]:
        """The ids of every matching message (the first ``limit``), in ``sort`` order (ties in time order)."""
        ...

    def count(self, log_filter: LogFilter) -> int:
        """How many messages match (no ids read: the log's row count before its ids arrive)."""
        ...

    def rows(self, message_ids: Sequence[int], *, full_text: bool = False) -> list[LogRow]:
        """The rows of these ids (any order; ids that no longer exist are left out); ``text`` is the first
        ``ROW_TEXT_CHARS`` on one line, or with ``full_text`` the whole message as written."""
        ...

    def matches(self, message_id: int, log_filter: LogFilter) -> bool: ...

    def details(self, message_id: int) -> LogDetails | None:
        """The message with the jobs that carry it (payloads as JSON text, not yet redacted)."""
        ...

    def dead_letters(self, limit: int = 500) -> list[DeadLetter]:
        """Dead jobs, the most recent failure first."""
        ...

    def dead_letters_stamp(self) -> tuple[int, int, str]:
        """Changes whenever the dead letters change (count, newest id, latest change): cheap to poll."""
        ...

    def dead_jobs_of(self, message_id: int) -> list[int]:
        """The dead jobs that carried this message."""
        ...

    def requeue_dead(self, job_ids: Sequence[int]) -> tuple[int, list[Message]]:
        """Dead jobs back to pending (attempts reset) and their FAILED messages back to where they
        started, in one transaction; (jobs requeued, messages changed). Jobs no longer dead are left."""
        ...

    def retry_failed(self, message_id: int, job: NewJob) -> Message | None:
        """A FAILED message back to PENDING/RECEIVED and ``job`` enqueued, in one transaction; None (and
        nothing written) when the message is not FAILED (already retried)."""
        ...

    def message(self, message_id: int) -> Message | None: ...

    def job_payload(self, dedupe_key: str) -> dict[str, Any] | None:
        """The payload of the job with this dedupe key, while it is still stored (done jobs are purged)."""
        ...

    def retry_count(self, dedupe_key: str) -> int:
        """How many retry jobs (``<dedupe_key>#retry-N``) were made of this job."""
        ...

    def location_choices(self) -> list[FilterChoice]: ...
    def number_choices(self) -> list[FilterChoice]: ...


# --- the same repositories, awaited (what services use) --------------------------------------------


class AsyncLocationRepository(Protocol):
    async def upsert(self, location: Location) -> Location: ...
    async def get(self, location_id: str) -> Location | None: ...
    async def list(self) -> list[Location]: ...
    async def set_state(self, location_id: str, state: LocationState) -> None: ...
    async def set_token_expiry(self, location_id: str, expires_at: datetime | None) -> None: ...
    async def delete(self, location_id: str) -> None: ...


class AsyncSessionRepository(Protocol):
    async def create(self, session: WhatsAppSession) -> WhatsAppSession: ...
    async def get(self, session_id: str) -> WhatsAppSession | None: ...
    async def list(self, location_id: str | None = None) -> list[WhatsAppSession]: ...
    async def set_state(
        self,
        session_id: str,
        state: SessionState,
        detail: str | None = None,
        state_until: datetime | None = None,
    ) -> WhatsAppSession: ...
    async def set_identity(self, session_id: str, phone: str | None, jid: str | None) -> WhatsAppSession: ...
    async def delete(self, session_id: str) -> None: ...


class AsyncContactRepository(Protocol):
    """:class:`ContactRepository`, awaited."""

    async def find(
        self,
        location_id: str,
        *,
        phone: str | None = None,
        wa_jid: str | None = None,
        wa_lid: str | None = None,
        ghl_contact_id: str | None = None,
    ) -> ContactLink | None: ...
    async def save(self, link: ContactLink) -> ContactLink: ...
    async def forget_ghl_contact(self, location_id: str, ghl_contact_id: str) -> int: ...


class AsyncMessageRepository(Protocol):
    """:class:`MessageRepository`, awaited."""

    async def record(self, message: Message, job: NewJob | None = None) -> tuple[Message, bool]: ...
    async def get(self, message_id: int) -> Message | None: ...
    async def by_wa_id(self, session_id: str, wa_message_id: str) -> Message | None: ...
    async def by_ghl_id(self, location_id: str, ghl_message_id: str) -> Message | None: ...
    async def update(
        self,
        message_id: int,
        *,
        status: MessageStatus | None = None,
        error: str | None = None,
        wa_message_id: str | None = None,
        ghl_message_id: str | None = None,
        media_ref: str | None = None,
        session_id: str | None = None,
    ) -> Message: ...
    async def recent(self, limit: int = 200, location_id: str | None = None) -> list[Message]: ...
    async def reset_failed(self, message_id: int) -> Message: ...


class AsyncJobQueue(Protocol):
    """:class:`JobQueue`, awaited."""

    async def enqueue(self, job: NewJob) -> tuple[int, bool]: ...
    async def lease(self, owner: str, *, now: datetime, lease_seconds: float, limit: int = 10,
                    kinds: Sequence[str] | None = None, routes: Sequence[str] | None = None,
                    prepare: Callable[[Sequence[Job]], object] | None = None,
                    follow: Mapping[str, int] | None = None) -> list[Job]: ...
    async def extend_lease(self, job_id: int, owner: str, *, until: datetime) -> bool: ...
    async def release(self, job_ids: Sequence[int], owner: str) -> int: ...
    async def complete(self, job_id: int, owner: str) -> None: ...
    async def complete_many(self, job_ids: Sequence[int], owner: str) -> int: ...
    async def complete_and_lease(self, done: Sequence[int], owner: str, *, now: datetime, lease_seconds: float,
                                 limit: int = 10, kinds: Sequence[str] | None = None,
                                 routes: Sequence[str] | None = None,
                                 finish: Mapping[int, Callable[[], object]] | None = None,
                                 prepare: Callable[[Sequence[Job]], object] | None = None,
                                 follow: Mapping[str, int] | None = None) -> list[Job]: ...
    async def retry_later(self, job_id: int, owner: str, *, error: str, run_at: datetime) -> None: ...
    async def dead_letter(self, job_id: int, owner: str, *, error: str) -> None: ...
    async def requeue_dead(self, job_id: int) -> bool: ...
    async def purge_done(self, *, finished_before: datetime) -> int: ...
    async def get(self, job_id: int) -> Job | None: ...
    async def count(self, state: str | None = None) -> int: ...
    async def count_backlog(self) -> int: ...
    async def list(self, state: str | None = None, limit: int = 100) -> list[Job]: ...


class AsyncMessageLogQuery(Protocol):
    """:class:`MessageLogQuery`, awaited (every call runs on the storage executor, so ``threadsafe`` is
    not needed here)."""

    async def ids(self, log_filter: LogFilter, sort: LogSort, limit: int | None = None) -> array[int]: ...
    async def count(self, log_filter: LogFilter) -> int: ...
    async def rows(self, message_ids: Sequence[int], *, full_text: bool = False) -> list[LogRow]: ...
    async def matches(self, message_id: int, log_filter: LogFilter) -> bool: ...
    async def details(self, message_id: int) -> LogDetails | None: ...
    async def dead_letters(self, limit: int = 500) -> list[DeadLetter]: ...
    async def dead_letters_stamp(self) -> tuple[int, int, str]: ...
    async def dead_jobs_of(self, message_id: int) -> list[int]: ...
    async def requeue_dead(self, job_ids: Sequence[int]) -> tuple[int, list[Message]]: ...
    async def retry_failed(self, message_id: int, job: NewJob) -> Message | None: ...
    async def message(self, message_id: int) -> Message | None: ...
    async def job_payload(self, dedupe_key: str) -> dict[str, Any] | None: ...
    async def retry_count(self, dedupe_key: str) -> int: ...
    async def location_choices(self) -> list[FilterChoice]: ...
    async def number_choices(self) -> list[FilterChoice]: ...


class SecretStore(Protocol):
    """Where tokens and client secrets live: the OS keyring, or the passphrase vault."""

    @property
    def description(self) -> str:
        """Plain words for the user: which store is in use (e.g. "GNOME Keyring (Secret Service)")."""
        ...

    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str) -> None: ...
    def delete(self, key: str) -> None: ...


# --- HighLevel, as the bridge needs it ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchedMedia:
    """An agent's attachment, downloaded (within a size limit) to be sent over WhatsApp."""

    data: bytes
    content_type: str
    file_name: str


#: Download an attachment URL with a byte limit. Raises MediaTooLarge over the limit, a transient
#: GhlDesktopError for network/5xx failures, a permanent one for 4xx.
MediaFetcher = Callable[[str, int], Awaitable[FetchedMedia]]


class PostedMessage(Protocol):
    @property
    def message_id(self) -> str: ...
    @property
    def conversation_id(self) -> str | None: ...


class HighLevelGateway(Protocol):
    """The HighLevel calls the bridge makes, per location (the adapter handles tokens, rate limits,
    retries of transient failures and the status-update race)."""

    async def upsert_contact(
        self, location_id: str, *, phone: str | None, name: str | None, tags: Sequence[str]
    ) -> str:
        """Find-or-create a contact (by E.164 phone when given) and return its id."""
        ...

    async def name_contact(self, location_id: str, contact_id: str, name: str, *, placeholder: str) -> str:
        """Give the contact ``name`` unless it already has a name other than ``placeholder`` (one an
        agent set is never overwritten); returns the contact's name in HighLevel afterwards."""
        ...

    async def post_message(
        self,
        location_id: str,
        *,
        contact_id: str,
        text: str,
        attachments: Sequence[str],
        alt_id: str,
        direction: str,
        date: datetime,
    ) -> PostedMessage:
        """Add a provider message (inbound, or outbound for messages typed on the phone)."""
        ...

    async def find_message_by_alt_id(self, location_id: str, *, contact_id: str, alt_id: str) -> str | None:
        """The HighLevel message id already holding ``alt_id`` (crash recovery), or None."""
        ...

    async def update_status(self, location_id: str, message_id: str, status: str, error: str | None) -> None: ...

    async def upload(
        self,
        location_id: str,
        *,
        contact_id: str,
        conversation_id: str | None,
        filename: str,
        data: bytes,
        content_type: str,
    ) -> str:
        """Upload an attachment; returns its public URL."""
        ...
