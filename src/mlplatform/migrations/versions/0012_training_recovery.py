"""training recovery: the lease of the instance following each job, and the round its latest run resumed from

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

`lease_owner` / `lease_expires_at`: one instance at a time follows a job; a conditional UPDATE claims a queued
job or a running one whose lease has expired. `resumed_from`: the checkpoint round the latest run began at.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resumed_from", sa.Integer(), nullable=True))
    op.create_index("ix_training_jobs_state_lease_expires_at", "training_jobs", ["state", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_state_lease_expires_at", table_name="training_jobs")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("resumed_from")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
