"""Ledger entries of distributed DP carry the sensitivities their Skellam accounting needs.

Revision ID: 2026_12_06_ledger_sensitivity
Revises: 2026_12_06_ledger_aggregation
Create Date: 2026-12-06 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_06_ledger_sensitivity"
down_revision: str | None = "2026_12_06_ledger_aggregation"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = ("l2_sensitivity", "l1_sensitivity")


def upgrade() -> None:
    """Add the L2 and L1 sensitivities; every earlier entry is Gaussian and needs neither."""
    for name in COLUMNS:
        op.add_column(
            "privacy_ledger", sa.Column(name, sa.Double(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    """Drop the sensitivities."""
    with op.batch_alter_table("privacy_ledger") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
