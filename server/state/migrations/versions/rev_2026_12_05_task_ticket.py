"""Tasks carry the strategy's ticket, so an asynchronous run survives a restart.

Revision ID: 2026_12_05_task_ticket
Revises: 2026_11_23_initial
Create Date: 2026-12-05 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_12_05_task_ticket"
down_revision: str | None = "2026_11_23_initial"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the nullable ``tasks.ticket`` column (synchronous runs leave it NULL)."""
    op.add_column("tasks", sa.Column("ticket", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop ``tasks.ticket``."""
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("ticket")
