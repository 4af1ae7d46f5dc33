"""serving stats: each server process's per-model counts of predictions, errors and latency cells, per minute
and per hour

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04

A process's Prometheus counters are its own and hold no history; what they counted each minute (and hour) is
saved here every few seconds, so the console and `GET /api/ml/models/{name}/serving-stats` show the whole
cluster's requests, errors and latency percentiles over time. Kept for `ml.serving.stats.retention`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None
TABLES = ("serving_stats", "serving_stats_hourly")


def upgrade() -> None:
    for table in TABLES:
        op.create_table(
            table,
            sa.Column("model", sa.String(length=128), nullable=False),
            sa.Column("period", sa.DateTime(timezone=True), nullable=False),
            sa.Column("instance", sa.String(length=64), nullable=False),
            sa.Column("predictions", sa.BigInteger(), nullable=False),
            sa.Column("errors", sa.BigInteger(), nullable=False),
            sa.Column("latency_sum_ms", sa.Float(), nullable=False),
            *(sa.Column(f"b{i:02d}", sa.BigInteger(), nullable=False) for i in range(17)),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("model", "period", "instance", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_period", table, ["period"])


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_index(f"ix_{table}_period", table_name=table)
        op.drop_table(table)
