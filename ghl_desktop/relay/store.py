"""The relay's own small database: desktop install tokens and the per-install event queues.

Tables (created with ``create_all``; the schema is small and only ever grows by new tables):

- ``relay_tokens``: one row per desktop install. Only the SHA-256 of the bearer token is kept.
  ``locations`` (JSON list) limits which locations' events the install receives; NULL = all.
- ``relay_events``: pending events, one row per (install, event). ``id`` order is stream order;
  ``(install_id, dedupe_key)`` is unique; a row is deleted only when that install acknowledges it.
- ``relay_seen``: dedupe keys already accepted per install, so a HighLevel retry that arrives after
  the desktop acknowledged (and the row was deleted) is not streamed twice. Pruned after 7 days.
- ``relay_oauth_pending``: sign-ins a desktop started (``POST /v1/oauth/authorizations``), keyed by the
  SHA-256 of the OAuth ``state`` and bound to that desktop's install. Single use; expire after 10 min.

Routing: an event with a ``locationId`` goes to every install whose ``locations`` is NULL or contains
it; events without one (agency INSTALL/UNINSTALL) go to every install. A one-agency relay with one
desktop therefore needs one token and no configuration. An OAuth code goes only to the install that
registered its ``state`` (:meth:`RelayStore.store_oauth_code`); a redirect with any other state stores
nothing, and OAuth rows never count toward the webhook backlog, so anonymous ``/oauth/callback``
requests can neither leak a code to another desktop nor fill the backlog.

Every method is one short transaction and synchronous; the server runs them on one worker thread.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ghl_desktop.core.errors import ConfigError, StorageError
from ghl_desktop.core.files import ensure_private_dir, ensure_private_sqlite

TOKEN_PREFIX = "ghlr_"
SEEN_RETENTION = timedelta(days=7)
#: an OAuth authorization code is useless after a few minutes; do not keep one around longer
OAUTH_CODE_RETENTION = timedelta(minutes=10)
#: a desktop may have this many sign-ins waiting at once (older ones are dropped)
MAX_PENDING_AUTHORIZATIONS = 5
KIND_OAUTH_CODE = "oauth.code"
#: the largest id SQLite/PostgreSQL BIGINT can hold; an ack above it cannot name a row
MAX_EVENT_ID = 2**63 - 1

metadata = MetaData()
_id_type = BigInteger().with_variant(Integer, "sqlite")

relay_tokens = Table(
    "relay_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("locations", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    sqlite_autoincrement=True,
)

relay_events = Table(
    "relay_events",
    metadata,
    Column("id", _id_type, primary_key=True, autoincrement=True),
    Column("install_id", Integer, ForeignKey("relay_tokens.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(64), nullable=False),
    Column("event", Text, nullable=False),
    Column("dedupe_key", String(300), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("install_id", "dedupe_key", name="uq_relay_events_install_dedupe"),
    sqlite_autoincrement=True,
)

relay_seen = Table(
    "relay_seen",
    metadata,
    Column("install_id", Integer, ForeignKey("relay_tokens.id", ondelete="CASCADE"), primary_key=True),
    Column("dedupe_key", String(300), primary_key=True),
    Column("seen_at", DateTime(timezone=True), nullable=False, index=True),
)


relay_oauth_pending = Table(
    "relay_oauth_pending",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("install_id", Integer, ForeignKey("relay_tokens.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def default_db_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'relay.db'}"


@dataclass(frozen=True)
class Install:
    """A desktop install allowed to stream (one bearer token)."""

    id: int
    name: str
    locations: frozenset[str] | None  # None: every location

    def wants(self, location_id: str | None) -> bool:
        return self.locations is None or location_id is None or location_id in self.locations


@dataclass(frozen=True)
class PendingEvent:
    """A queued event as stored: the JSON text is streamed as it is, never re-parsed on the relay
    (so no body, however it got into the table, can break the sender)."""

    id: int
    kind: str
    text: str

    @property
    def event(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.text)
        return value

    def frame(self) -> str:
        return f'{{"id":{self.id},"kind":{json.dumps(self.kind)},"event":{self.text}}}'


@dataclass(frozen=True)
class StoreResult:
    """``new``: installs that got a new row; ``duplicate``: installs that already had it."""

    new: tuple[int, ...]
    duplicate: tuple[int, ...]

    @property
    def matched(self) -> bool:
        return bool(self.new or self.duplicate)


def _now() -> datetime:
    return datetime.now(UTC)


class RelayStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> RelayStore:
        """Open (and create) the relay database. SQLite gets WAL and full fsync on commit: an answer
        of 200 to HighLevel must survive a power cut."""
        try:
            if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
                path = Path(url.removeprefix("sqlite:///")).expanduser()
                # a new folder 0700 (the queue holds message bodies and phone numbers); an existing one is the user's
                ensure_private_dir(path.parent, tighten_existing=False)
                ensure_private_sqlite(path)
            engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        except (SQLAlchemyError, ValueError, OSError) as exc:
            raise ConfigError(f"relay database URL is not usable: {exc}") from exc
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()

        try:
            metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise StorageError(f"could not open the relay database: {exc}") from exc
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """One round trip to the database (the liveness check)."""
        with self.engine.connect() as conn:
            conn.execute(select(1))

    # --- tokens ---------------------------------------------------------------------------------

    def create_token(self, name: str, locations: Iterable[str] | None = None) -> str:
        """Create an install and return its bearer token (shown once; only its hash is stored)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        locs = sorted(set(locations)) if locations else None
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(relay_tokens).values(
                    name=name, token_hash=hash_token(token), locations=json.dumps(locs) if locs else None,
                    created_at=_now()))
        except IntegrityError as exc:
            raise ConfigError(f"a token named {name!r} exists already; revoke it first") from exc
        return token

    def revoke_token(self, name: str) -> bool:
        with self.engine.begin() as conn:
            row = conn.execute(select(relay_tokens.c.id).where(relay_tokens.c.name == name)).first()
            if row is None:
                return False
            conn.execute(delete(relay_events).where(relay_events.c.install_id == row.id))
            conn.execute(delete(relay_seen).where(relay_seen.c.install_id == row.id))
            conn.execute(delete(relay_oauth_pending).where(relay_oauth_pending.c.install_id == row.id))
            conn.execute(update(relay_tokens).where(relay_tokens.c.id == row.id).values(
                revoked_at=_now(), name=f"{name}#revoked-{row.id}"))
        return True

    def list_installs(self) -> list[Install]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(relay_tokens).where(relay_tokens.c.revoked_at.is_(None))
                                .order_by(relay_tokens.c.id)).all()
        return [self._install(r) for r in rows]

    @staticmethod
    def _install(row: Any) -> Install:
        locs = json.loads(row.locations) if row.locations else None
        return Install(id=row.id, name=row.name, locations=frozenset(locs) if locs else None)

    def is_active(self, install_id: int) -> bool:
        """False once the install's token was revoked (open streams are closed on that)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(relay_tokens.c.id).where(
                relay_tokens.c.id == install_id, relay_tokens.c.revoked_at.is_(None))).first()
        return row is not None

    def authenticate(self, token: str) -> Install | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(relay_tokens).where(
                relay_tokens.c.token_hash == hash_token(token), relay_tokens.c.revoked_at.is_(None))).first()
        return None if row is None else self._install(row)

    # --- events ---------------------------------------------------------------------------------

    def store_event(self, kind: str, body: dict[str, Any], dedupe_key: str, location_id: str | None) -> StoreResult:
        """Queue ``body`` for every install that wants it, in one transaction (all or nothing)."""
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        now = _now()
        new: list[int] = []
        dup: list[int] = []
        with self.engine.begin() as conn:
            installs = [self._install(r) for r in conn.execute(
                select(relay_tokens).where(relay_tokens.c.revoked_at.is_(None))).all()]
            targets = [i.id for i in installs if i.wants(location_id)]
            if not targets:
                return StoreResult((), ())
            seen = set(conn.execute(select(relay_seen.c.install_id).where(
                relay_seen.c.dedupe_key == dedupe_key, relay_seen.c.install_id.in_(targets))).scalars())
            for install_id in targets:
                if install_id in seen:
                    dup.append(install_id)
                    continue
                conn.execute(insert(relay_seen).values(install_id=install_id, dedupe_key=dedupe_key, seen_at=now))
                conn.execute(insert(relay_events).values(install_id=install_id, kind=kind, event=text,
                                                         dedupe_key=dedupe_key, created_at=now))
                new.append(install_id)
        return StoreResult(tuple(new), tuple(dup))

    # --- OAuth hand-off ---------------------------------------------------------------------------

    def expect_authorization(self, install_id: int, state: str, now: datetime | None = None) -> None:
        """Bind a sign-in the desktop ``install_id`` started to its ``state`` (stored hashed)."""
        if not state or len(state) > 1024:
            raise ValueError("state must be 1-1024 characters")
        now = now or _now()
        state_hash = hash_token(state)
        with self.engine.begin() as conn:
            conn.execute(delete(relay_oauth_pending).where(relay_oauth_pending.c.state_hash == state_hash))
            older = conn.execute(select(relay_oauth_pending.c.state_hash)
                                 .where(relay_oauth_pending.c.install_id == install_id)
                                 .order_by(relay_oauth_pending.c.created_at.desc())
                                 .offset(MAX_PENDING_AUTHORIZATIONS - 1)).scalars().all()
            if older:
                conn.execute(delete(relay_oauth_pending).where(relay_oauth_pending.c.state_hash.in_(older)))
            conn.execute(insert(relay_oauth_pending).values(state_hash=state_hash, install_id=install_id,
                                                            created_at=now))

    def store_oauth_code(self, state: str | None, body: dict[str, Any],
                         now: datetime | None = None) -> int | None:
        """Queue an OAuth redirect for the install that registered ``state``; returns that install's id,
        or None (nothing stored) when no live sign-in has this state. Consumes the registration."""
        if not state:
            return None
        now = now or _now()
        state_hash = hash_token(state)
        with self.engine.begin() as conn:
            row = conn.execute(select(relay_oauth_pending.c.install_id).where(
                relay_oauth_pending.c.state_hash == state_hash,
                relay_oauth_pending.c.created_at >= now - OAUTH_CODE_RETENTION)).first()
            if row is None:
                return None
            conn.execute(delete(relay_oauth_pending).where(relay_oauth_pending.c.state_hash == state_hash))
            conn.execute(insert(relay_events).values(
                install_id=row.install_id, kind=KIND_OAUTH_CODE,
                event=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                dedupe_key=f"oauth:{state_hash}", created_at=now))
        return int(row.install_id)

    def pending(self, install_id: int, after_id: int = 0, limit: int = 100) -> list[PendingEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(relay_events.c.id, relay_events.c.kind, relay_events.c.event)
                .where(relay_events.c.install_id == install_id, relay_events.c.id > after_id)
                .order_by(relay_events.c.id)
                .limit(limit)
            ).all()
        return [PendingEvent(int(r.id), r.kind, r.event) for r in rows]

    def ack(self, install_id: int, event_id: int) -> bool:
        if not 0 < event_id <= MAX_EVENT_ID:
            return False
        with self.engine.begin() as conn:
            result = conn.execute(delete(relay_events).where(
                relay_events.c.install_id == install_id, relay_events.c.id == event_id))
        return bool(result.rowcount)

    def pending_count(self, install_id: int | None = None, *, webhooks_only: bool = False) -> int:
        """Pending rows (of one install). ``webhooks_only``: without OAuth redirects — the backlog
        that decides 429 counts only what HighLevel delivered, never what anonymous callers caused."""
        query = select(func.count()).select_from(relay_events)
        if webhooks_only:
            query = query.where(relay_events.c.kind != KIND_OAUTH_CODE)
        if install_id is not None:
            query = query.where(relay_events.c.install_id == install_id)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def prune(self, now: datetime | None = None) -> tuple[int, int]:
        """Forget old dedupe keys and expire unclaimed OAuth codes; returns (seen, codes) removed."""
        now = now or _now()
        with self.engine.begin() as conn:
            seen = conn.execute(delete(relay_seen).where(relay_seen.c.seen_at < now - SEEN_RETENTION)).rowcount
            codes = conn.execute(delete(relay_events).where(
                relay_events.c.kind == KIND_OAUTH_CODE,
                relay_events.c.created_at < now - OAUTH_CODE_RETENTION)).rowcount
            conn.execute(delete(relay_oauth_pending).where(
                relay_oauth_pending.c.created_at < now - OAUTH_CODE_RETENTION))
        return int(seen or 0), int(codes or 0)


__all__ = [
    "KIND_OAUTH_CODE",
    "MAX_EVENT_ID",
    "Install",
    "PendingEvent",
    "RelayStore",
    "StoreResult",
    "default_db_url",
    "hash_token",
    "metadata",
]
