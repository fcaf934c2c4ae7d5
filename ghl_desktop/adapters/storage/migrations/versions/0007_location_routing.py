"""Several numbers per location (issue 15): ``location_routing`` holds a location's default number for
replies and its "fall back to another number" setting.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Written by hand to match ``ghl_desktop.adapters.storage.orm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "location_routing",
        sa.Column("location_id", sa.String(64), nullable=False),
        sa.Column("default_session_id", sa.String(64), nullable=True),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["location_id"], ["locations.id"], ondelete="CASCADE",
                                name="fk_location_routing_location_id_locations"),
        sa.ForeignKeyConstraint(["default_session_id"], ["whatsapp_sessions.id"], ondelete="SET NULL",
                                name="fk_location_routing_default_session_id_whatsapp_sessions"),
        sa.PrimaryKeyConstraint("location_id", name="pk_location_routing"),
    )


def downgrade() -> None:
    op.drop_table("location_routing")
