"""Realistic rows for the UI tests and the screenshot, written through the real repositories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ghl_desktop.adapters.storage import Database
from ghl_desktop.core.models import (
    Direction,
    Location,
    LocationState,
    Message,
    MessageKind,
    MessageStatus,
    SessionState,
    WhatsAppSession,
)


def seed(db: Database, *, now: datetime | None = None) -> dict[str, list[object]]:
    now = now or datetime.now(UTC)
    locations = [
        db.locations.upsert(
            Location(
                id="ve9EPM428h8vShlRW1KT",
                name="Bright Smiles Dental",
                company_id="cmp-1",
                token_expires_at=now + timedelta(hours=20),
            )
        ),
        db.locations.upsert(
            Location(
                id="Kx3mPq7ZtR2wYb9LcVdN",
                name="Northside Fitness",
                company_id="cmp-1",
                state=LocationState.NEEDS_RECONNECT,
                token_expires_at=now - timedelta(days=2),
            )
        ),
    ]
    sessions = [
        db.sessions.create(
            WhatsAppSession(
                id="s-dental",
                location_id=locations[0].id,
                state=SessionState.CONNECTED,
                store_path="sessions/s-dental.db",
                phone="+14155550123",
                jid="14155550123@s.whatsapp.net",
                updated_at=now - timedelta(minutes=42),
            )
        ),
        db.sessions.create(
            WhatsAppSession(
                id="s-fitness",
                location_id=locations[1].id,
                state=SessionState.WAITING_FOR_SCAN,
                store_path="sessions/s-fitness.db",
                detail="QR code shown; waiting for the phone",
            )
        ),
    ]
    texts = [
        (Direction.INBOUND, "Hi! Can I move my cleaning to Thursday afternoon?", MessageStatus.SENT, None),
        (Direction.OUTBOUND, "Of course — Thursday 3:30 pm works. See you then!", MessageStatus.READ, None),
        (Direction.INBOUND, "Perfect, thank you", MessageStatus.RECEIVED, None),
        (
            Direction.OUTBOUND,
            "Reminder: your session starts at 7 am",
            MessageStatus.FAILED,
            "recipient is not on WhatsApp",
        ),
    ]
    messages = []
    for i, (direction, body, status, error) in enumerate(texts):
        message, _ = db.messages.record(
            Message(
                location_id=locations[0].id,
                session_id=sessions[0].id,
                direction=direction,
                kind=MessageKind.TEXT,
                chat_jid="15551234567@s.whatsapp.net",
                wa_message_id=f"3EB0SEED{i:04d}",
                body=body,
                status=status,
                error=error,
                from_me=direction is Direction.OUTBOUND,
                sent_at=now - timedelta(minutes=30 - i * 5),
            )
        )
        messages.append(message)
    return {"locations": list(locations), "sessions": list(sessions), "messages": list(messages)}
