"""serving stats: each server process's per-model, per-minute counts of predictions, errors and latency cells

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04

A process's Prometheus counters are its own and hold no history; what they counted each minute is saved here
every few seconds, so the console and `GET /api/ml/models/{name}/serving-stats` show the whole cluster's
requests, errors and latency percentiles over time. Kept for `ml.serving.stats.retention`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_stats",
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("predictions", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("latency_sum_ms", sa.Float(), nullable=False),
        *(sa.Column(f"b{i:02d}", sa.BigInteger(), nullable=False) for i in range(17)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "minute", "instance", name=op.f("pk_serving_stats")),
    )
    op.create_index("ix_serving_stats_minute", "serving_stats", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_serving_stats_minute", table_name="serving_stats")
    op.drop_table("serving_stats")
