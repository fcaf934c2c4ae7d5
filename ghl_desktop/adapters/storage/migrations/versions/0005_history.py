"""History on link (issue 15): ``history_imports`` (a number's own history_days, cancelled or not) and
``history_items`` (one row per message a history import carries: pending / imported / cancelled).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Written by hand to match ``ghl_desktop.adapters.storage.orm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "history_imports",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["whatsapp_sessions.id"], ondelete="CASCADE",
                                name="fk_history_imports_session_id_whatsapp_sessions"),
        sa.PrimaryKeyConstraint("session_id", name="pk_history_imports"),
    )
    op.create_table(
        "history_items",
        sa.Column("message_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name="fk_history_items_message_id_messages"),
        sa.ForeignKeyConstraint(["session_id"], ["whatsapp_sessions.id"], ondelete="CASCADE",
                                name="fk_history_items_session_id_whatsapp_sessions"),
        sa.PrimaryKeyConstraint("message_id", name="pk_history_items"),
    )
    op.create_index("ix_history_items_session_id_state", "history_items", ["session_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_history_items_session_id_state", table_name="history_items")
    op.drop_table("history_items")
    op.drop_table("history_imports")
