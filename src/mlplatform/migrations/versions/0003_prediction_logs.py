"""prediction logs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_logs",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("prediction", sa.JSON(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_logs")),
    )
    op.create_index(
        "ix_prediction_logs_model_created_at", "prediction_logs", ["model", "created_at"], unique=False
    )
    op.create_index("ix_prediction_logs_request_id", "prediction_logs", ["request_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_prediction_logs_request_id", table_name="prediction_logs")
    op.drop_index("ix_prediction_logs_model_created_at", table_name="prediction_logs")
    op.drop_table("prediction_logs")
