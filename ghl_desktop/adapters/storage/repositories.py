"""Repositories for locations, WhatsApp sessions, contact links and messages (the ``core.ports``
Protocols), mapping rows to the frozen ``core.models`` dataclasses. Each method is one transaction."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session

from ghl_desktop.adapters.storage.jobs import insert_job
from ghl_desktop.adapters.storage.orm import ContactLinkRow, LocationRow, MessageRow, SessionRow
from ghl_desktop.adapters.storage.tx import RecordNotFound, StorageConflict, Transactions
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

# --- locations -------------------------------------------------------------------------------


def _location(row: LocationRow) -> Location:
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
        with self._tx.read() as s:
            row = s.get(LocationRow, location_id)
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


def _contact(row: ContactLinkRow) -> ContactLink:
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
        with self._tx.read() as s:
            for column, value in keys:
                if value is None:
                    continue
                row = s.scalars(
                    select(ContactLinkRow)
                    .where(ContactLinkRow.location_id == location_id, getattr(ContactLinkRow, column) == value)
                    .order_by(ContactLinkRow.id)
                    .limit(1)
                ).first()
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


def _message(row: MessageRow) -> Message:
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


def _existing_message(s: Session, message: Message) -> MessageRow | None:
    keys = []
    if message.session_id is not None and message.wa_message_id is not None:
        keys.append(and_(MessageRow.session_id == message.session_id,
                         MessageRow.wa_message_id == message.wa_message_id))
    if message.ghl_message_id is not None:
        keys.append(and_(MessageRow.location_id == message.location_id,
                         MessageRow.ghl_message_id == message.ghl_message_id))
    if not keys:
        return None
    return s.scalars(select(MessageRow).where(or_(*keys)).order_by(MessageRow.id).limit(1)).first()


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
        row = MessageRow(
            location_id=message.location_id,
            session_id=message.session_id,
            direction=Direction(message.direction).value,
            kind=MessageKind(message.kind).value,
            chat_jid=message.chat_jid,
            sender_jid=message.sender_jid,
            wa_message_id=message.wa_message_id,
            ghl_message_id=message.ghl_message_id,
            body=message.body,
            media_ref=message.media_ref,
            media_mime=message.media_mime,
            media_name=message.media_name,
            media_size=message.media_size,
            quoted_wa_id=message.quoted_wa_id,
            from_me=message.from_me,
            status=MessageStatus(message.status).value,
            error=message.error,
            sent_at=message.sent_at,
            created_at=message.created_at,
            updated_at=message.updated_at,
        )
        try:
            with self._tx.write() as s:
                existing = _existing_message(s, message)
                if existing is not None:
                    return _message(existing), False
                s.add(row)
                s.flush()
                if job is not None:
                    payload = dict(job.payload)
                    payload.setdefault("message_id", row.id)
                    insert_job(s, job, payload=payload)
                return _message(row), True
        except StorageConflict:
            # PostgreSQL: a concurrent record() of the same message committed between our check and
            # our insert; the unique key refused ours, and our transaction (job included) rolled back.
            with self._tx.read() as s:
                existing = _existing_message(s, message)
                if existing is None:
                    raise  # not a duplicate: e.g. unknown location or session
                return _message(existing), False

    def get(self, message_id: int) -> Message | None:
        with self._tx.read() as s:
            row = s.get(MessageRow, message_id)
            return _message(row) if row else None

    def by_wa_id(self, session_id: str, wa_message_id: str) -> Message | None:
        with self._tx.read() as s:
            row = s.scalars(
                select(MessageRow).where(MessageRow.session_id == session_id,
                                         MessageRow.wa_message_id == wa_message_id)
            ).first()
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
                row = s.get(MessageRow, message_id)
                if row is None:
                    raise RecordNotFound(f"No message with id {message_id}")
                if new_status is not None:
                    current = MessageStatus(row.status)
                    if new_status is MessageStatus.FAILED or new_status.rank >= current.rank:
                        row.status = new_status.value
                    else:
                        log.debug("message %s: kept status %s over late %s", message_id, current, new_status)
                for column, value in (("error", error), ("wa_message_id", wa_message_id),
                                      ("ghl_message_id", ghl_message_id), ("media_ref", media_ref),
                                      ("session_id", session_id)):
                    if value is not None:
                        setattr(row, column, value)
                row.updated_at = utcnow()
                s.flush()
                return _message(row)
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


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


