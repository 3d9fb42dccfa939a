"""The coordinator's SQL schema as SQLAlchemy Core tables; migrations must reproduce it exactly."""

from __future__ import annotations

import sqlalchemy as sa

# Explicit names keep constraints identical on SQLite and PostgreSQL, so that later migrations
# can drop or alter them by name on either backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# Unix seconds as double precision: sub-microsecond resolution for the next few centuries.
Time = sa.Double

run = sa.Table(
    "run",
    metadata,
    # A single-row table: the check pins the key, so a second run cannot sneak in.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("rounds", sa.Integer, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=True),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("used_at", Time, nullable=True),
    # No foreign key: the token is consumed before the client row exists in the same transaction.
    sa.Column("used_by", sa.Text, nullable=True),
)

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.Text, primary_key=True),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("enrolled_at", Time, nullable=False),
    sa.Column("last_seen", Time, nullable=False),
    sa.Column("num_examples", sa.BigInteger, nullable=False),
    sa.Column("properties", sa.JSON, nullable=False),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
)

rounds = sa.Table(
    "rounds",
    metadata,
    sa.Column("round", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("deadline", Time, nullable=False),
    sa.Column("closed_at", Time, nullable=True),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.CheckConstraint("status IN ('open', 'done')", name="status"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", sa.Text, primary_key=True),
    sa.Column("round", sa.Integer, sa.ForeignKey("rounds.round"), nullable=False),
    sa.Column("client_id", sa.Text, sa.ForeignKey("clients.client_id"), nullable=False),
    # A JSON list of blob digests, in order; open_round checks that every blob exists.
    sa.Column("payload_shas", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    # Added by revision 2026_12_05_task_ticket; NULL for a synchronous run's tasks.
    sa.Column("ticket", sa.BigInteger, nullable=True),
    sa.Index(None, "round", "client_id"),  # tasks_for_round, ordered by client
)

updates = sa.Table(
    "updates",
    metadata,
    # The key is the task: a second update for a task is refused by the database itself.
    sa.Column("task_id", sa.Text, sa.ForeignKey("tasks.task_id"), primary_key=True),
    sa.Column("round", sa.Integer, sa.ForeignKey("rounds.round"), nullable=False),
    sa.Column("client_id", sa.Text, sa.ForeignKey("clients.client_id"), nullable=False),
    sa.Column("payload_sha", sa.String(64), sa.ForeignKey("blobs.sha"), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("received_at", Time, nullable=False),
    # Acceptance order within the round; clocks can tie or step back, a counter cannot.
    sa.Column("seq", sa.Integer, nullable=False),
    sa.UniqueConstraint("round", "seq"),  # also the index behind updates_for_round
)

checkpoints = sa.Table(
    "checkpoints",
    metadata,
    # No foreign key to rounds: round 0 is the initial checkpoint and has no round row.
    sa.Column("round", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("sha", sa.String(64), sa.ForeignKey("blobs.sha"), nullable=False),
)

traffic = sa.Table(
    "traffic",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # Free of foreign keys: traffic is accounting, and may name a client that failed to enroll.
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("client_id", sa.Text, nullable=False),
    sa.Column("rpc", sa.Text, nullable=False),
    sa.Column("bytes_up", sa.BigInteger, nullable=False),
    sa.Column("bytes_down", sa.BigInteger, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("payload_up", sa.BigInteger, nullable=False),
    sa.Column("payload_down", sa.BigInteger, nullable=False),
    sa.Index(None, "round"),
)

privacy_ledger = sa.Table(
    "privacy_ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("mechanism", sa.Text, nullable=False),
    sa.Column("noise_multiplier", sa.Double, nullable=False),
    sa.Column("clip_norm", sa.Double, nullable=False),
    sa.Column("sampling_rate", sa.Double, nullable=False),
    sa.Column("participants", sa.Integer, nullable=False),
    sa.Column("adjacency", sa.Text, nullable=False),
    sa.Column("recorded_at", Time, nullable=False),
    # "plain" or "secagg" (revision 2026_12_06_ledger_aggregation); older rows read "plain".
    sa.Column("aggregation", sa.Text, nullable=False, server_default="plain"),
    # Distributed DP's Skellam entries (revision 2026_12_06_ledger_sensitivity); 0 otherwise.
    sa.Column("l2_sensitivity", sa.Double, nullable=False, server_default="0"),
    sa.Column("l1_sensitivity", sa.Double, nullable=False, server_default="0"),
    sa.Index(None, "round"),
)
