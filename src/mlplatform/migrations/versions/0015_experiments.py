"""experiments: one row per experiment; the prediction log says which experiment chose each answer

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-04

A partial unique index keeps one running experiment per model on every instance.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("winner", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
    )
    op.create_index(
        "ux_experiments_running_model",
        "experiments",
        ["model"],
        unique=True,
        postgresql_where=sa.text("state = 'running'"),
        sqlite_where=sa.text("state = 'running'"),
    )
    op.create_index("ix_experiments_model_created_at", "experiments", ["model", "created_at"])
    op.create_index("ix_experiments_created_at", "experiments", ["created_at"])
    for table in ("prediction_logs", "prediction_batches"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("experiment", sa.String(length=26), nullable=True))


def downgrade() -> None:
    for table in ("prediction_logs", "prediction_batches"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("experiment")
    op.drop_index("ix_experiments_created_at", table_name="experiments")
    op.drop_index("ix_experiments_model_created_at", table_name="experiments")
    op.drop_index("ux_experiments_running_model", table_name="experiments")
    op.drop_table("experiments")
