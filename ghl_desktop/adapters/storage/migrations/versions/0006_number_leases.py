"""Number ownership in a cluster of workers (issue 14): ``number_leases`` (which worker holds each linked
number, with a fencing epoch and an expiry its heartbeat renews), ``cluster_workers`` (the live workers,
for the fair share) and ``jobs.route`` (the number a WhatsApp-side job needs: only its holder leases it).

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-04

Written by hand to match ``ghl_desktop.adapters.storage.orm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "number_leases",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["whatsapp_sessions.id"], ondelete="CASCADE",
                                name="fk_number_leases_session_id_whatsapp_sessions"),
        sa.PrimaryKeyConstraint("session_id", name="pk_number_leases"),
    )
    op.create_index("ix_number_leases_worker", "number_leases", ["worker"])
    op.create_table(
        "cluster_workers",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_workers"),
    )
    op.add_column("jobs", sa.Column("route", sa.String(64), nullable=True))  # plain ALTER: jobs keeps its triggers


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("route")
    op.drop_table("cluster_workers")
    op.drop_index("ix_number_leases_worker", table_name="number_leases")
    op.drop_table("number_leases")
