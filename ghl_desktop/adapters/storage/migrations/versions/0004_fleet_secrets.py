"""Secrets of a cluster of workers (issue 14): ``fleet_secrets`` holds tokens AES-GCM sealed with a key
that never enters the database (``GHL_DESKTOP_SECRET_KEY`` or a key file).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Written by hand to match ``ghl_desktop.adapters.storage.orm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fleet_secrets",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_fleet_secrets"),
    )


def downgrade() -> None:
    op.drop_table("fleet_secrets")
