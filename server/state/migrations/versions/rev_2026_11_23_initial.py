"""Initial coordinator schema: run, enrollment, blobs, rounds, tasks, updates, accounting.

Revision ID: 2026_11_23_initial
Revises:
Create Date: 2026-11-23 10:50:07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2026_11_23_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# Written out rather than taken from schema.metadata: a migration must keep meaning what it
# meant when it was written, whatever the current schema module says.


def upgrade() -> None:
    """Create every table of the first schema."""
    op.create_table(
        "blobs",
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("sha", name=op.f("pk_blobs")),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("enrolled_at", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.Column("num_examples", sa.BigInteger(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_clients")),
    )
    op.create_table(
        "privacy_ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("mechanism", sa.Text(), nullable=False),
        sa.Column("noise_multiplier", sa.Double(), nullable=False),
        sa.Column("clip_norm", sa.Double(), nullable=False),
        sa.Column("sampling_rate", sa.Double(), nullable=False),
        sa.Column("participants", sa.Integer(), nullable=False),
        sa.Column("adjacency", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_ledger")),
    )
    op.create_index(op.f("ix_privacy_ledger_round"), "privacy_ledger", ["round"])
    op.create_table(
        "rounds",
        sa.Column("round", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("deadline", sa.Double(), nullable=False),
        sa.Column("closed_at", sa.Double(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.CheckConstraint("status IN ('open', 'done')", name=op.f("ck_rounds_status")),
        sa.PrimaryKeyConstraint("round", name=op.f("pk_rounds")),
    )
    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("strategy", sa.Text(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("rounds", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_run_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run")),
    )
    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("used_at", sa.Double(), nullable=True),
        sa.Column("used_by", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_tokens")),
    )
    op.create_table(
        "traffic",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("rpc", sa.Text(), nullable=False),
        sa.Column("bytes_up", sa.BigInteger(), nullable=False),
        sa.Column("bytes_down", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("payload_up", sa.BigInteger(), nullable=False),
        sa.Column("payload_down", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic")),
    )
    op.create_index(op.f("ix_traffic_round"), "traffic", ["round"])
    op.create_table(
        "checkpoints",
        sa.Column("round", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sha", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["sha"], ["blobs.sha"], name=op.f("fk_checkpoints_sha_blobs")),
        sa.PrimaryKeyConstraint("round", name=op.f("pk_checkpoints")),
    )
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("payload_shas", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name=op.f("fk_tasks_client_id_clients")
        ),
        sa.ForeignKeyConstraint(["round"], ["rounds.round"], name=op.f("fk_tasks_round_rounds")),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_tasks")),
    )
    op.create_index(op.f("ix_tasks_round_client_id"), "tasks", ["round", "client_id"])
    op.create_table(
        "updates",
        sa.Column("task_id", sa.Text(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("payload_sha", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name=op.f("fk_updates_client_id_clients")
        ),
        sa.ForeignKeyConstraint(
            ["payload_sha"], ["blobs.sha"], name=op.f("fk_updates_payload_sha_blobs")
        ),
        sa.ForeignKeyConstraint(["round"], ["rounds.round"], name=op.f("fk_updates_round_rounds")),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.task_id"], name=op.f("fk_updates_task_id_tasks")
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_updates")),
        sa.UniqueConstraint("round", "seq", name=op.f("uq_updates_round_seq")),
    )


def downgrade() -> None:
    """Drop every table, dependents first."""
    op.drop_table("updates")
    op.drop_index(op.f("ix_tasks_round_client_id"), table_name="tasks")
    op.drop_table("tasks")
    op.drop_table("checkpoints")
    op.drop_index(op.f("ix_traffic_round"), table_name="traffic")
    op.drop_table("traffic")
    op.drop_table("tokens")
    op.drop_table("run")
    op.drop_table("rounds")
    op.drop_index(op.f("ix_privacy_ledger_round"), table_name="privacy_ledger")
    op.drop_table("privacy_ledger")
    op.drop_table("clients")
    op.drop_table("blobs")
