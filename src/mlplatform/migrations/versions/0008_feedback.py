"""feedback: actual values for logged predictions, the current one per prediction and the replaced ones

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

One row per actual value received. The current value of a prediction has `superseded_at` NULL (a partial
unique index keeps it one per prediction); replaced values keep the time they were replaced, as the audit
history. The prediction's model, version, time and place in the log are copied in, so performance over a
window reads `feedback` by (model, predicted_at) and then the log by primary key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CURRENT = sa.text("superseded_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("prediction_id", sa.String(length=26), nullable=False),
        sa.Column("block_id", sa.String(length=26), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("batched", sa.Boolean(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actual", sa.JSON(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    op.create_index("ix_feedback_prediction_id", "feedback", ["prediction_id"])
    op.create_index(
        "uq_feedback_current",
        "feedback",
        ["prediction_id"],
        unique=True,
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )
    op.create_index(
        "ix_feedback_model_predicted_at",
        "feedback",
        ["model", "predicted_at"],
        postgresql_where=CURRENT,
        sqlite_where=CURRENT,
    )


def downgrade() -> None:
    op.drop_index("ix_feedback_model_predicted_at", table_name="feedback")
    op.drop_index("uq_feedback_current", table_name="feedback")
    op.drop_index("ix_feedback_prediction_id", table_name="feedback")
    op.drop_table("feedback")
