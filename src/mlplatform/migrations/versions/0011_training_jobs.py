"""training jobs: one row per job, its state, progress, metrics and resulting version

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

`spec` holds what the job asked for (target, features, hyperparameters, validation, parent, tags); the
columns hold what is queried (model, state, times) and what changes while it runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("task", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=256), nullable=True),
        sa.Column("version_id", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_jobs")),
    )
    op.create_index("ix_training_jobs_model_created_at", "training_jobs", ["model", "created_at"])
    op.create_index("ix_training_jobs_state_created_at", "training_jobs", ["state", "created_at"])
    op.create_index("ix_training_jobs_created_at", "training_jobs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_created_at", table_name="training_jobs")
    op.drop_index("ix_training_jobs_state_created_at", table_name="training_jobs")
    op.drop_index("ix_training_jobs_model_created_at", table_name="training_jobs")
    op.drop_table("training_jobs")
