"""Indexes for the message log: its default order (time, newest first), the status filter (e.g. all
failed messages, by time) and the number filter (messages of one WhatsApp session, by id; also
serves the ``ON DELETE SET NULL`` of a removed session).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Written by hand to match ``ghl_desktop.adapters.storage.orm``.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_messages_created_at_id", "messages", ["created_at", "id"])
    op.create_index("ix_messages_status_created_at", "messages", ["status", "created_at"])
    op.create_index("ix_messages_session_id_id", "messages", ["session_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_session_id_id", table_name="messages")
    op.drop_index("ix_messages_status_created_at", table_name="messages")
    op.drop_index("ix_messages_created_at_id", table_name="messages")
