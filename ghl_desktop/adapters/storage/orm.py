"""The tables, as typed SQLAlchemy 2 ORM classes.

This module is the single description of the schema: the hand-written alembic migrations must
produce exactly this metadata (a test compares them on SQLite and PostgreSQL). Enum columns are
plain strings holding the ``core.models`` enum values, so adding a state never needs a type
migration. No token or secret has a column here: tokens live in the SecretStore only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: constraint names are fixed so migrations can refer to them on every backend
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as naive UTC
    text (which also sorts correctly) and given ``tzinfo=UTC`` again when read. A naive datetime is
    refused: its meaning (local time? UTC?) is a guess, and a wrong guess reorders the job queue."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: storage needs timezone-aware values (use UTC)")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}  # noqa: RUF012 (read by SQLAlchemy)


class LocationRow(Base):
    """A connected HighLevel sub-account (install). Token *expiry* only; the tokens are secrets."""

    __tablename__ = "locations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    company_id: Mapped[str | None] = mapped_column(String(64))
    provider_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(32))
    token_expires_at: Mapped[datetime | None]
    installed_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class FleetSecretRow(Base):
    """A secret of a cluster of workers on PostgreSQL (issue 14): the value AES-GCM sealed with the key
    from ``GHL_DESKTOP_SECRET_KEY`` (never stored here); see ``adapters/storage/secrets_db.py``."""

    __tablename__ = "fleet_secrets"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    sealed: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class SessionRow(Base):
    """A linked (or being-linked) WhatsApp number; removed with its location."""

    __tablename__ = "whatsapp_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    location_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("locations.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    state_until: Mapped[datetime | None]
    phone: Mapped[str | None] = mapped_column(String(32))
    jid: Mapped[str | None] = mapped_column(String(128))
    store_path: Mapped[str] = mapped_column(Text)
    proxy: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LocationRoutingRow(Base):
    """How replies choose a number on a location with several (issue 15, migration 0007): the default
    number of contacts who never wrote in, and whether a reply whose number is down falls back to another
    connected number instead of waiting. No row: no default, no fallback."""

    __tablename__ = "location_routing"

    location_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("locations.id", ondelete="CASCADE"), primary_key=True
    )
    default_session_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("whatsapp_sessions.id", ondelete="SET NULL")
    )
    fallback: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime]


class ContactLinkRow(Base):
    """Who a WhatsApp chat partner is in HighLevel. NULLs never collide in the unique keys, so a
    LID-only contact (no phone yet) and a phone-only contact can both exist."""

    __tablename__ = "contact_links"
    __table_args__ = (
        UniqueConstraint("location_id", "phone"),
        UniqueConstraint("location_id", "wa_jid"),
        UniqueConstraint("location_id", "wa_lid"),
        Index(None, "location_id", "ghl_contact_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    location_id: Mapped[str] = mapped_column(String(64), ForeignKey("locations.id", ondelete="CASCADE"))
    phone: Mapped[str | None] = mapped_column(String(32))
    wa_jid: Mapped[str | None] = mapped_column(String(128))
    wa_lid: Mapped[str | None] = mapped_column(String(128))
    ghl_contact_id: Mapped[str | None] = mapped_column(String(64))
    ghl_conversation_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    is_group: Mapped[bool] = mapped_column(Boolean)
    on_whatsapp: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime]


class MessageRow(Base):
    """One message crossing the bridge. The two unique keys make a duplicate row impossible, whatever
    path (webhook retry, engine redelivery, crash replay) tries to write it again. A session's
    removal keeps its message history (``session_id`` becomes NULL)."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("session_id", "wa_message_id"),
        UniqueConstraint("location_id", "ghl_message_id"),
        Index(None, "location_id", "id"),
        Index(None, "chat_jid"),
        # the message log's order and filters (migration 0002)
        Index(None, "created_at", "id"),
        Index(None, "status", "created_at"),
        Index(None, "session_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    location_id: Mapped[str] = mapped_column(String(64), ForeignKey("locations.id", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("whatsapp_sessions.id", ondelete="SET NULL")
    )
    direction: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    chat_jid: Mapped[str] = mapped_column(String(128))
    sender_jid: Mapped[str | None] = mapped_column(String(128))
    wa_message_id: Mapped[str | None] = mapped_column(String(128))
    ghl_message_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str | None] = mapped_column(Text)
    media_ref: Mapped[str | None] = mapped_column(Text)
    media_mime: Mapped[str | None] = mapped_column(String(255))
    media_name: Mapped[str | None] = mapped_column(Text)
    media_size: Mapped[int | None] = mapped_column(BigInteger)
    quoted_wa_id: Mapped[str | None] = mapped_column(String(128))
    from_me: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class JobRow(Base):
    """The durable job queue. Indexes serve the two lease paths (due pending jobs; expired running
    leases) and the per-``ordering_key`` "oldest unfinished" check."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "state", "next_attempt_at"),
        Index(None, "state", "lease_until"),
        Index(None, "ordering_key", "state", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    ordering_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: the number (session id) whose connection the job needs; in a cluster only its holder leases it (0006)
    route: Mapped[str | None] = mapped_column(String(64))


class JobHeadRow(Base):
    """The jobs that may run next: every unfinished job without an ``ordering_key``, and the oldest
    unfinished job of each ``ordering_key``. ``due_at`` is the job's ``next_attempt_at`` while pending
    and its ``lease_until`` while running (due again when the lease expires). Maintained by database
    triggers on ``jobs`` (migration 0003), never written by the application."""

    __tablename__ = "job_heads"
    __table_args__ = (Index(None, "due_at", "job_id"),)

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ordering_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    due_at: Mapped[datetime]


class NumberLeaseRow(Base):
    """Which cluster worker holds a linked number (issue 14, migration 0006): ``epoch`` grows at every
    takeover (the fencing token), ``expires_at`` is renewed by the holder's heartbeat (database time);
    ``worker`` NULL: released. See ``adapters/storage/ownership.py``."""

    __tablename__ = "number_leases"

    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("whatsapp_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    worker: Mapped[str | None] = mapped_column(String(128), index=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ClusterWorkerRow(Base):
    """A live worker of the cluster (its heartbeat): the fair share of numbers is counted over these."""

    __tablename__ = "cluster_workers"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class HistoryImportRow(Base):
    """A linked number's history import (issue 15, migration 0005): its own ``history_days`` (NULL: the
    setting) and whether the user cancelled it (what still waits is not imported, later chunks dropped)."""

    __tablename__ = "history_imports"

    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("whatsapp_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    days: Mapped[int | None] = mapped_column(Integer)
    cancelled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime]


class HistoryItemRow(Base):
    """One message a history import carries (its ``wa.history`` job posts it): pending, imported or
    cancelled. Progress (imported / total per number) is counted over these."""

    __tablename__ = "history_items"
    __table_args__ = (Index(None, "session_id", "state"),)

    message_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    session_id: Mapped[str] = mapped_column(String(64), ForeignKey("whatsapp_sessions.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
