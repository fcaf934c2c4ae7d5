"""Initial schema: locations, WhatsApp sessions, contact links, messages, job queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Written by hand to match ``ghl_desktop.adapters.storage.orm``; ``tests/adapters/storage`` compares the
migrated schema with the ORM metadata on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "locations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("company_id", sa.String(64), nullable=True),
        sa.Column("provider_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        _ts("token_expires_at", nullable=True),
        _ts("installed_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_locations"),
    )

    op.create_table(
        "whatsapp_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("location_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        _ts("state_until", nullable=True),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("jid", sa.String(128), nullable=True),
        sa.Column("store_path", sa.Text(), nullable=False),
        sa.Column("proxy", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_whatsapp_sessions"),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"],
            name="fk_whatsapp_sessions_location_id_locations", ondelete="CASCADE",
        ),
    )
    op.create_index("ix_whatsapp_sessions_location_id", "whatsapp_sessions", ["location_id"])

    op.create_table(
        "contact_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("location_id", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(32), nullable=True),
        sa.Column("wa_jid", sa.String(128), nullable=True),
        sa.Column("wa_lid", sa.String(128), nullable=True),
        sa.Column("ghl_contact_id", sa.String(64), nullable=True),
        sa.Column("ghl_conversation_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("is_group", sa.Boolean(), nullable=False),
        sa.Column("on_whatsapp", sa.Boolean(), nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_contact_links"),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"],
            name="fk_contact_links_location_id_locations", ondelete="CASCADE",
        ),
        sa.UniqueConstraint("location_id", "phone", name="uq_contact_links_location_id_phone"),
        sa.UniqueConstraint("location_id", "wa_jid", name="uq_contact_links_location_id_wa_jid"),
        sa.UniqueConstraint("location_id", "wa_lid", name="uq_contact_links_location_id_wa_lid"),
    )
    op.create_index(
        "ix_contact_links_location_id_ghl_contact_id", "contact_links", ["location_id", "ghl_contact_id"]
    )

    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("location_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("chat_jid", sa.String(128), nullable=False),
        sa.Column("sender_jid", sa.String(128), nullable=True),
        sa.Column("wa_message_id", sa.String(128), nullable=True),
        sa.Column("ghl_message_id", sa.String(64), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("media_ref", sa.Text(), nullable=True),
        sa.Column("media_mime", sa.String(255), nullable=True),
        sa.Column("media_name", sa.Text(), nullable=True),
        sa.Column("media_size", sa.BigInteger(), nullable=True),
        sa.Column("quoted_wa_id", sa.String(128), nullable=True),
        sa.Column("from_me", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("sent_at", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"],
            name="fk_messages_location_id_locations", ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["whatsapp_sessions.id"],
            name="fk_messages_session_id_whatsapp_sessions", ondelete="SET NULL",
        ),
        sa.UniqueConstraint("session_id", "wa_message_id", name="uq_messages_session_id_wa_message_id"),
        sa.UniqueConstraint("location_id", "ghl_message_id", name="uq_messages_location_id_ghl_message_id"),
    )
    op.create_index("ix_messages_location_id_id", "messages", ["location_id", "id"])
    op.create_index("ix_messages_chat_jid", "messages", ["chat_jid"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        _ts("lease_until", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("dedupe_key", sa.String(255), nullable=True),
        sa.Column("ordering_key", sa.String(255), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("dedupe_key", name="uq_jobs_dedupe_key"),
    )
    op.create_index("ix_jobs_state_next_attempt_at", "jobs", ["state", "next_attempt_at"])
    op.create_index("ix_jobs_state_lease_until", "jobs", ["state", "lease_until"])
    op.create_index("ix_jobs_ordering_key_state_id", "jobs", ["ordering_key", "state", "id"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("messages")
    op.drop_table("contact_links")
    op.drop_table("whatsapp_sessions")
    op.drop_table("locations")
