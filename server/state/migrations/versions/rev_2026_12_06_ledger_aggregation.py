"""Ledger entries say how a round's updates were summed: in the clear or in a secure sum.

Revision ID: 2026_12_06_ledger_aggregation
Revises: 2026_12_05_task_ticket
Create Date: 2026-12-06 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_06_ledger_aggregation"
down_revision: str | None = "2026_12_05_task_ticket"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``privacy_ledger.aggregation``; every earlier entry was summed in the clear."""
    op.add_column(
        "privacy_ledger",
        sa.Column("aggregation", sa.Text(), nullable=False, server_default="plain"),
    )


def downgrade() -> None:
    """Drop ``privacy_ledger.aggregation``."""
    with op.batch_alter_table("privacy_ledger") as batch:
        batch.drop_column("aggregation")
