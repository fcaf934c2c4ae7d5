"""Several numbers per location (issue 15): the per-location reply settings (``location_routing``) and
the per-contact stickiness, read from the durable messages (the number a chat last wrote to is the
session of its newest inbound message). ``core.routing.RoutingRepository``; each method one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from ghl_desktop.adapters.storage.orm import LocationRoutingRow, MessageRow, SessionRow
from ghl_desktop.adapters.storage.repositories import _message
from ghl_desktop.adapters.storage.tx import RecordNotFound, StorageConflict, Transactions
from ghl_desktop.core.models import Direction, Message, utcnow
from ghl_desktop.core.routing import NumberRouting


def _routing(location_id: str, row: LocationRoutingRow | None) -> NumberRouting:
    if row is None:
        return NumberRouting(location_id)
    return NumberRouting(location_id, row.default_session_id, bool(row.fallback))


class SqlRoutingRepository:
    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def get(self, location_id: str) -> NumberRouting:
        with self._tx.read() as s:
            return _routing(location_id, s.get(LocationRoutingRow, location_id))

    def set_default(self, location_id: str, session_id: str | None) -> NumberRouting:
        """The location's default number (None: none). A number of another location is refused."""
        return self._set(location_id, default_session_id=session_id)

    def set_fallback(self, location_id: str, fallback: bool) -> NumberRouting:
        return self._set(location_id, fallback=bool(fallback))

    def _set(self, location_id: str, **values: object) -> NumberRouting:
        for attempt in range(2):
            try:
                with self._tx.write() as s:
                    if "default_session_id" in values and values["default_session_id"] is not None:
                        owner = s.scalar(select(SessionRow.location_id).where(
                            SessionRow.id == values["default_session_id"]))
                        if owner != location_id:
                            raise RecordNotFound(
                                f"number {values['default_session_id']} is not linked to location {location_id}")
                    row = s.get(LocationRoutingRow, location_id)
                    if row is None:
                        row = LocationRoutingRow(location_id=location_id, default_session_id=None, fallback=False)
                        s.add(row)
                    for name, value in values.items():
                        setattr(row, name, value)
                    row.updated_at = utcnow()
                    s.flush()
                    return _routing(location_id, row)
            except StorageConflict:  # PostgreSQL: a concurrent first write of the same location's row
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def last_inbound_session(self, location_id: str, chats: Sequence[str],
                             session_ids: Sequence[str]) -> str | None:
        """The number (of ``session_ids``) that the chat — any of its JIDs ``chats`` (phone JID, LID,
        group) — last wrote to: the session of its newest inbound message. None: it never wrote in."""
        chats = [c for c in chats if c]
        if not chats or not session_ids:
            return None
        M = MessageRow
        query = (select(M.session_id)
                 .where(M.chat_jid.in_(chats), M.location_id == location_id,
                        M.direction == Direction.INBOUND.value, M.from_me.is_(False),
                        M.session_id.in_(list(session_ids)))
                 .order_by(M.id.desc()).limit(1))
        with self._tx.read() as s:
            return s.scalar(query)

    def assign(self, message_id: int, session_id: str, *, note: str | None,
               wa_message_id: str | None = None) -> Message:
        """The number chosen for an outbound message (the log's number column) and its routing note —
        ``waiting: +1… is disconnected``, ``sent from +2… instead: …`` — or no note (cleared)."""
        with self._tx.write() as s:
            row = s.get(MessageRow, message_id)
            if row is None:
                raise RecordNotFound(f"No message with id {message_id}")
            row.session_id = session_id
            row.error = note
            if wa_message_id is not None:
                row.wa_message_id = wa_message_id
            row.updated_at = utcnow()
            s.flush()
            return _message(row)
