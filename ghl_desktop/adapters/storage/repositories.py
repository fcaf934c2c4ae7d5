"""Repositories for locations, WhatsApp sessions, contact links and messages (the ``core.ports``
Protocols), mapping rows to the frozen ``core.models`` dataclasses. Each method is one transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, delete, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ghl_desktop.adapters.storage import direct
from ghl_desktop.adapters.storage.jobs import insert_job, insert_new
from ghl_desktop.adapters.storage.orm import ContactLinkRow, LocationRow, MessageRow, SessionRow
from ghl_desktop.adapters.storage.tx import RecordNotFound, StorageConflict, Transactions, is_busy
from ghl_desktop.core.errors import StorageBusy, StorageError
from ghl_desktop.core.models import (
    ContactLink,
    Direction,
    Location,
    LocationState,
    Message,
    MessageKind,
    MessageStatus,
    NewJob,
    SessionState,
    WhatsAppSession,
    utcnow,
)

log = logging.getLogger("ghl.storage")


@contextmanager
def read_connection(tx: Transactions) -> Iterator[Connection]:
    """``tx.read()`` for Core statements: a connection in one read transaction, without an ORM session
    (for the hot lookups of the message path, building the session cost about as much as the query).
    Inside ``tx.reading()`` on this thread: that block's connection (one transaction for several reads)."""
    joined = tx.joined_read
    try:
        if joined is not None:
            yield joined
            return
        with tx.engine.connect() as conn:
            yield conn
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        text = first[0] if first else type(exc).__name__
        if is_busy(exc):
            raise StorageBusy(f"Database busy, will retry: {text}", detail=str(exc)) from exc
        raise StorageError(f"Database read failed: {text}", detail=str(exc)) from exc

# --- locations -------------------------------------------------------------------------------


_LOCATIONS = cast(Table, LocationRow.__table__)
_LOCATION_BY_ID = select(_LOCATIONS).where(_LOCATIONS.c.id == bindparam("id"))


def _location(row: Any) -> Location:
    """A location from an ORM row or a Core row of its table (same attribute names)."""
    return Location(
        id=row.id,
        name=row.name,
        company_id=row.company_id,
        provider_id=row.provider_id,
        state=LocationState(row.state),
        token_expires_at=row.token_expires_at,
        installed_at=row.installed_at,
        updated_at=row.updated_at,
    )


class SqlLocationRepository:
    """HighLevel sub-accounts. Deleting one removes its sessions, contact links and messages."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def upsert(self, location: Location) -> Location:
        """Insert, or update every field but ``installed_at`` (the first install date is kept)."""
        state = LocationState(location.state)
        for attempt in range(2):
            try:
                with self._tx.write() as s:
                    row = s.get(LocationRow, location.id)
                    if row is None:
                        row = LocationRow(id=location.id, installed_at=location.installed_at)
                        s.add(row)
                    row.name = location.name
                    row.company_id = location.company_id
                    row.provider_id = location.provider_id
                    row.state = state.value
                    row.token_expires_at = location.token_expires_at
                    row.updated_at = utcnow()
                    s.flush()
                    return _location(row)
            except StorageConflict:  # PostgreSQL: a concurrent insert of the same id won the race
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, location_id: str) -> Location | None:
        with read_connection(self._tx) as conn:
            row = direct.execute(conn, _LOCATION_BY_ID, {"id": location_id}).first()
            return _location(row) if row else None

    def list(self) -> list[Location]:
        with self._tx.read() as s:
            return [_location(r) for r in s.scalars(select(LocationRow).order_by(LocationRow.name, LocationRow.id))]

    def set_state(self, location_id: str, state: LocationState) -> None:
        self._set(location_id, state=LocationState(state).value)

    def set_token_expiry(self, location_id: str, expires_at: datetime | None) -> None:
        self._set(location_id, token_expires_at=expires_at)

    def delete(self, location_id: str) -> None:
        with self._tx.write() as s:
            s.execute(delete(LocationRow).where(LocationRow.id == location_id))

    def _set(self, location_id: str, **values: Any) -> None:
        with self._tx.write() as s:
            result = s.execute(
                update(LocationRow).where(LocationRow.id == location_id).values(updated_at=utcnow(), **values)
            )
            if _rowcount(result) == 0:
                raise RecordNotFound(f"No location {location_id!r}")


# --- WhatsApp sessions -----------------------------------------------------------------------


def _session(row: SessionRow) -> WhatsAppSession:
    return WhatsAppSession(
        id=row.id,
        location_id=row.location_id,
        state=SessionState(row.state),
        store_path=row.store_path,
        phone=row.phone,
        jid=row.jid,
        detail=row.detail,
        state_until=row.state_until,
        proxy=row.proxy,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlSessionRepository:
    """Linked WhatsApp numbers. State transitions are the session service's business
    (``core.models.can_transition``); this stores whatever state it is given."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def create(self, session: WhatsAppSession) -> WhatsAppSession:
        try:
            with self._tx.write() as s:
                if s.get(SessionRow, session.id) is not None:
                    raise StorageConflict(f"A WhatsApp session with id {session.id!r} already exists")
                row = SessionRow(
                    id=session.id,
                    location_id=session.location_id,
                    state=SessionState(session.state).value,
                    detail=session.detail,
                    state_until=session.state_until,
                    phone=session.phone,
                    jid=session.jid,
                    store_path=session.store_path,
                    proxy=session.proxy,
                    created_at=session.created_at,
                    updated_at=session.updated_at,
                )
                s.add(row)
                s.flush()
                return _session(row)
        except StorageConflict as exc:
            if exc.detail is None:
                raise
            raise StorageConflict(
                f"Cannot create WhatsApp session {session.id!r} for location {session.location_id!r}: "
                "the location does not exist or the id is taken",
                detail=exc.detail,
            ) from exc

    def get(self, session_id: str) -> WhatsAppSession | None:
        with self._tx.read() as s:
            row = s.get(SessionRow, session_id)
            return _session(row) if row else None

    def list(self, location_id: str | None = None) -> list[WhatsAppSession]:
        query = select(SessionRow).order_by(SessionRow.created_at, SessionRow.id)
        if location_id is not None:
            query = query.where(SessionRow.location_id == location_id)
        with self._tx.read() as s:
            return [_session(r) for r in s.scalars(query)]

    def set_state(
        self,
        session_id: str,
        state: SessionState,
        detail: str | None = None,
        state_until: datetime | None = None,
    ) -> WhatsAppSession:
        """``detail`` and ``state_until`` describe the new state, so they replace the old ones."""
        return self._set(
            session_id, state=SessionState(state).value, detail=detail, state_until=state_until
        )

    def set_identity(self, session_id: str, phone: str | None, jid: str | None) -> WhatsAppSession:
        return self._set(session_id, phone=phone, jid=jid)

    def delete(self, session_id: str) -> None:
        with self._tx.write() as s:
            s.execute(delete(SessionRow).where(SessionRow.id == session_id))

    def _set(self, session_id: str, **values: Any) -> WhatsAppSession:
        with self._tx.write() as s:
            row = s.get(SessionRow, session_id)
            if row is None:
                raise RecordNotFound(f"No WhatsApp session {session_id!r}")
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            s.flush()
            return _session(row)


# --- contact links ---------------------------------------------------------------------------


_CONTACTS = cast(Table, ContactLinkRow.__table__)
#: contacts.find's lookups, one per key column, built once (a call only binds values)
_CONTACT_BY = {
    column: select(_CONTACTS)
    .where(_CONTACTS.c.location_id == bindparam("location"), _CONTACTS.c[column] == bindparam("value"))
    .order_by(_CONTACTS.c.id)
    .limit(1)
    for column in ("phone", "wa_jid", "wa_lid", "ghl_contact_id")
}


def _contact(row: Any) -> ContactLink:
    """A contact link from an ORM row or a Core row of its table (same attribute names)."""
    return ContactLink(
        id=row.id,
        location_id=row.location_id,
        phone=row.phone,
        wa_jid=row.wa_jid,
        wa_lid=row.wa_lid,
        ghl_contact_id=row.ghl_contact_id,
        ghl_conversation_id=row.ghl_conversation_id,
        name=row.name,
        is_group=row.is_group,
        on_whatsapp=row.on_whatsapp,
        updated_at=row.updated_at,
    )


_MERGED_FIELDS = ("phone", "wa_jid", "wa_lid", "ghl_contact_id", "ghl_conversation_id", "name", "on_whatsapp")


class SqlContactRepository:
    """Contact links. ``save`` merges: values given win, values left ``None`` keep what is stored (a
    link learnt from a LID-only message must not erase the phone learnt earlier). Use
    ``forget_ghl_contact`` to clear a HighLevel contact id."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def find(
        self,
        location_id: str,
        *,
        phone: str | None = None,
        wa_jid: str | None = None,
        wa_lid: str | None = None,
        ghl_contact_id: str | None = None,
    ) -> ContactLink | None:
        keys = (("phone", phone), ("wa_jid", wa_jid), ("wa_lid", wa_lid), ("ghl_contact_id", ghl_contact_id))
        with read_connection(self._tx) as conn:
            for column, value in keys:
                if value is None:
                    continue
                row = direct.execute(conn, _CONTACT_BY[column], {"location": location_id, "value": value}).first()
                if row is not None:
                    return _contact(row)
        return None

    def save(self, link: ContactLink) -> ContactLink:
        """Insert, or merge into the row with the same id / location+phone / +JID / +LID. When the
        keys point at several rows (one knew the phone, another the LID), they become one row."""
        for attempt in range(3):
            try:
                with self._tx.write() as s:
                    return self._save(s, link)
            except StorageConflict:  # PostgreSQL: a concurrent save inserted the same key first
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _save(self, s: Session, link: ContactLink) -> ContactLink:
        matches: list[ContactLinkRow] = []
        if link.id is not None:
            by_id = s.get(ContactLinkRow, link.id)
            if by_id is None:
                raise RecordNotFound(f"No contact link with id {link.id}")
            if by_id.location_id != link.location_id:
                raise StorageConflict(
                    f"Contact link {link.id} belongs to location {by_id.location_id!r}, not {link.location_id!r}"
                )
            matches.append(by_id)
        for column in ("phone", "wa_jid", "wa_lid"):
            value = getattr(link, column)
            if value is None:
                continue
            row = s.scalars(
                select(ContactLinkRow).where(
                    ContactLinkRow.location_id == link.location_id, getattr(ContactLinkRow, column) == value
                )
            ).first()
            if row is not None and all(row.id != m.id for m in matches):
                matches.append(row)
        if not matches:
            row = ContactLinkRow(
                location_id=link.location_id,
                is_group=link.is_group,
                updated_at=utcnow(),
                **{f: getattr(link, f) for f in _MERGED_FIELDS},
            )
            s.add(row)
            s.flush()
            return _contact(row)
        target, others = matches[0], matches[1:]
        merged = {f: getattr(target, f) for f in _MERGED_FIELDS}
        is_group = target.is_group or link.is_group
        for other in others:  # fill gaps from the rows being merged away, then remove them
            for f in _MERGED_FIELDS:
                if merged[f] is None:
                    merged[f] = getattr(other, f)
            is_group = is_group or other.is_group
            s.delete(other)
        if others:
            s.flush()  # free their unique keys before the target takes them over
            log.info("merged %d contact link(s) into link %s", len(others), target.id)
        for f in _MERGED_FIELDS:
            value = getattr(link, f)
            setattr(target, f, value if value is not None else merged[f])
        target.is_group = is_group
        target.updated_at = utcnow()
        s.flush()
        return _contact(target)

    def forget_ghl_contact(self, location_id: str, ghl_contact_id: str) -> int:
        """Clears the contact id and its conversation id (the conversation went with the contact)."""
        with self._tx.write() as s:
            result = s.execute(
                update(ContactLinkRow)
                .where(ContactLinkRow.location_id == location_id, ContactLinkRow.ghl_contact_id == ghl_contact_id)
                .values(ghl_contact_id=None, ghl_conversation_id=None, updated_at=utcnow())
            )
            return _rowcount(result)


# --- messages --------------------------------------------------------------------------------


_MESSAGES = cast(Table, MessageRow.__table__)
_BY_WA = and_(_MESSAGES.c.session_id == bindparam("session"), _MESSAGES.c.wa_message_id == bindparam("wa"))
_BY_GHL = and_(_MESSAGES.c.location_id == bindparam("location"), _MESSAGES.c.ghl_message_id == bindparam("ghl"))
#: the message repository's hot statements, built once with bound parameters: SQLAlchemy's compiled
#: cache is keyed on the statement, and building an ORM query + loading ORM objects cost several times
#: what running the statement costs (bench/bridge_throughput.py, the intake and each wa.inbound job)
_MESSAGE_BY_WA = select(_MESSAGES).where(_BY_WA).limit(1)
_MESSAGE_BY_ID = select(_MESSAGES).where(_MESSAGES.c.id == bindparam("id"))
_MESSAGE_BY_ID_LOCKED = _MESSAGE_BY_ID.with_for_update()
_EXISTING = {
    (True, False): select(_MESSAGES).where(_BY_WA).order_by(_MESSAGES.c.id).limit(1),
    (False, True): select(_MESSAGES).where(_BY_GHL).order_by(_MESSAGES.c.id).limit(1),
    (True, True): select(_MESSAGES).where(or_(_BY_WA, _BY_GHL)).order_by(_MESSAGES.c.id).limit(1),
}
#: update(): every column it may change, set from the row read (under the write lock) and merged
_UPDATED = ("status", "error", "wa_message_id", "ghl_message_id", "media_ref", "session_id", "updated_at")
_MESSAGE_UPDATE = (
    update(_MESSAGES).where(_MESSAGES.c.id == bindparam("row_id")).values({c: bindparam(c) for c in _UPDATED})
)


def _message(row: Any) -> Message:
    """A message from an ORM row or a Core row of its table (same attribute names)."""
    return Message(
        id=row.id,
        location_id=row.location_id,
        session_id=row.session_id,
        direction=Direction(row.direction),
        kind=MessageKind(row.kind),
        chat_jid=row.chat_jid,
        sender_jid=row.sender_jid,
        wa_message_id=row.wa_message_id,
        ghl_message_id=row.ghl_message_id,
        body=row.body,
        media_ref=row.media_ref,
        media_mime=row.media_mime,
        media_name=row.media_name,
        media_size=row.media_size,
        quoted_wa_id=row.quoted_wa_id,
        from_me=row.from_me,
        status=MessageStatus(row.status),
        error=row.error,
        sent_at=row.sent_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _existing_message(s: Session, message: Message) -> Any:
    """The stored row with the same (session, WhatsApp id) or (location, HighLevel id), else None."""
    by_wa = message.session_id is not None and message.wa_message_id is not None
    by_ghl = message.ghl_message_id is not None
    if not (by_wa or by_ghl):
        return None
    params = {"session": message.session_id, "wa": message.wa_message_id, "location": message.location_id,
              "ghl": message.ghl_message_id}
    return s.connection().execute(_EXISTING[by_wa, by_ghl], params).first()


def _message_values(message: Message) -> dict[str, Any]:
    return {
        "location_id": message.location_id,
        "session_id": message.session_id,
        "direction": Direction(message.direction).value,
        "kind": MessageKind(message.kind).value,
        "chat_jid": message.chat_jid,
        "sender_jid": message.sender_jid,
        "wa_message_id": message.wa_message_id,
        "ghl_message_id": message.ghl_message_id,
        "body": message.body,
        "media_ref": message.media_ref,
        "media_mime": message.media_mime,
        "media_name": message.media_name,
        "media_size": message.media_size,
        "quoted_wa_id": message.quoted_wa_id,
        "from_me": message.from_me,
        "status": MessageStatus(message.status).value,
        "error": message.error,
        "sent_at": message.sent_at,
        "created_at": message.created_at,
        "updated_at": message.updated_at,
    }


class SqlMessageRepository:
    """Messages, written exactly once. ``record`` stores a message and the job that carries it on in
    one transaction, so a crash between the two cannot lose the job or duplicate the message."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def record(self, message: Message, job: NewJob | None = None) -> tuple[Message, bool]:
        """Store ``message`` (and ``job``) unless a message with the same (session_id, wa_message_id)
        or (location_id, ghl_message_id) exists; then nothing is written and (existing, False) returns.

        The stored message's id is added to the job payload as ``message_id`` (unless the payload
        already has that key), because the caller cannot know it before the insert."""
        values = _message_values(message)
        try:
            with self._tx.write() as s:
                return _record(s, message, values, job)
        except StorageConflict:
            # PostgreSQL: a concurrent record() of the same message committed between our check and
            # our insert; the unique key refused ours, and our transaction (job included) rolled back.
            with self._tx.read() as s:
                existing = _existing_message(s, message)
                if existing is None:
                    raise  # not a duplicate: e.g. unknown location or session
                return _message(existing), False

    def record_many(
        self, items: Sequence[tuple[Message, NewJob | None]]
    ) -> list[tuple[Message, bool] | Exception]:
        """:meth:`record` for several messages in ONE transaction (one commit: the intake's group
        commit). Each message is recorded in its own savepoint, so one that cannot be stored is its
        own failure: a payload :meth:`record` refuses (its exception is its result), one the database
        refuses (a PostgreSQL race on its unique key, an unknown session: recorded again on its own
        afterwards, so its existing row or its error is its alone). Returns one result (or error) per
        item, in order; a failure of the transaction itself (the database, its commit) is raised.

        First the whole batch without savepoints (two statements less per message); only when one of
        its messages fails is that transaction rolled back and the batch recorded again, savepoint by
        savepoint."""
        try:
            with self._tx.write() as s:
                return [_record(s, message, _message_values(message), job) for message, job in items]
        except StorageBusy:
            raise  # the database, not a message: the whole batch fails (and is retried)
        except Exception:  # one message's own failure: found below, savepoint by savepoint
            pass
        results: list[tuple[Message, bool] | Exception] = []
        alone: list[int] = []
        with self._tx.write() as s:
            for i, (message, job) in enumerate(items):
                try:
                    with s.begin_nested():
                        results.append(_record(s, message, _message_values(message), job))
                except (IntegrityError, StorageConflict) as exc:
                    results.append(StorageConflict(str(exc)))
                    alone.append(i)
                except SQLAlchemyError:
                    raise  # the database, not this message: the whole batch fails (and is retried)
                except Exception as exc:  # this message's own fault (e.g. a payload that is not JSON)
                    results.append(exc)
        for i in alone:
            try:
                results[i] = self.record(*items[i])
            except StorageError as exc:
                results[i] = exc
        return results

    def get(self, message_id: int) -> Message | None:
        with self._tx.read() as s:
            row = s.get(MessageRow, message_id)
            return _message(row) if row else None

    def by_wa_id(self, session_id: str, wa_message_id: str) -> Message | None:
        with read_connection(self._tx) as conn:
            row = direct.execute(conn, _MESSAGE_BY_WA, {"session": session_id, "wa": wa_message_id}).first()
            return _message(row) if row else None

    def by_ghl_id(self, location_id: str, ghl_message_id: str) -> Message | None:
        with self._tx.read() as s:
            row = s.scalars(
                select(MessageRow).where(MessageRow.location_id == location_id,
                                         MessageRow.ghl_message_id == ghl_message_id)
            ).first()
            return _message(row) if row else None

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
        """Only the given (non-None) fields change. A status lower in rank than the stored one is
        ignored (a late "delivered" after "read"), except FAILED, which always applies."""
        new_status = MessageStatus(status) if status is not None else None
        try:
            with self._tx.write() as s:
                conn = s.connection()
                # the write transaction holds SQLite's write lock; PostgreSQL: the row, FOR UPDATE
                query = _MESSAGE_BY_ID if conn.dialect.name == "sqlite" else _MESSAGE_BY_ID_LOCKED
                row = direct.execute(conn, query, {"id": message_id}).first()
                if row is None:
                    raise RecordNotFound(f"No message with id {message_id}")
                values = row._asdict()
                if new_status is not None:
                    current = MessageStatus(row.status)
                    if new_status is MessageStatus.FAILED or new_status.rank >= current.rank:
                        values["status"] = new_status.value
                    else:
                        log.debug("message %s: kept status %s over late %s", message_id, current, new_status)
                for column, value in (("error", error), ("wa_message_id", wa_message_id),
                                      ("ghl_message_id", ghl_message_id), ("media_ref", media_ref),
                                      ("session_id", session_id)):
                    if value is not None:
                        values[column] = value
                values["updated_at"] = utcnow()
                direct.execute(conn, _MESSAGE_UPDATE, {"row_id": message_id, **{c: values[c] for c in _UPDATED}})
                return _message(_Values(values))
        except StorageConflict as exc:
            raise StorageConflict(
                f"Cannot update message {message_id}: another message already has that WhatsApp or "
                "HighLevel id (or the session does not exist)",
                detail=exc.detail,
            ) from exc

    def reset_failed(self, message_id: int) -> Message:
        """The user pressed "retry" on a failed message: FAILED goes back to where it started (PENDING
        for outbound, RECEIVED for inbound) and the error is cleared, so the receipts of the new
        attempt can move it forward again. ``update`` cannot do this: it never leaves FAILED. Any
        other status is left alone. (Not yet in ``core.ports.MessageRepository``.)"""
        with self._tx.write() as s:
            row = s.get(MessageRow, message_id)
            if row is None:
                raise RecordNotFound(f"No message with id {message_id}")
            if row.status == MessageStatus.FAILED.value:
                outbound = row.direction == Direction.OUTBOUND.value
                row.status = (MessageStatus.PENDING if outbound else MessageStatus.RECEIVED).value
                row.error = None
                row.updated_at = utcnow()
                s.flush()
            return _message(row)

    def recent(self, limit: int = 200, location_id: str | None = None) -> list[Message]:
        """Newest first."""
        query = select(MessageRow).order_by(MessageRow.id.desc()).limit(max(0, limit))
        if location_id is not None:
            query = query.where(MessageRow.location_id == location_id)
        with self._tx.read() as s:
            return [_message(r) for r in s.scalars(query)]


def _record(s: Session, message: Message, values: dict[str, Any], job: NewJob | None) -> tuple[Message, bool]:
    """(inside a write transaction) record()'s work: the existing message, or the new one + its job.
    One statement for a new message: the insert skips a row that breaks one of the two unique keys
    (ON CONFLICT DO NOTHING), and only then is the existing one looked up."""
    conn = s.connection()
    new = direct.execute(conn, insert_new(_MESSAGES, conn.dialect.name), values).scalar()
    if new is None:
        existing = _existing_message(s, message)
        if existing is None:  # pragma: no cover - the two unique keys are the ones looked up
            raise StorageConflict("the message breaks a unique key, but no stored message matches it")
        return _message(existing), False
    message_id = int(new)
    if job is not None:
        payload = dict(job.payload)
        payload.setdefault("message_id", message_id)
        insert_job(s, job, payload=payload)
    return _message(_Values({**values, "id": message_id})), True


class _Values:
    """Attribute access over a dict of column values (a row just written, for :func:`_message`)."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


