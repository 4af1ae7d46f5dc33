"""experiment tallies: each server process's counts per variant (failed requests, shadow agreement)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04

What the predict path counts in memory is saved here every few seconds, so an experiment's results add up
every instance's counts instead of showing only those of the instance that answers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_tallies",
        sa.Column("experiment_id", sa.String(length=26), nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("compared", sa.BigInteger(), nullable=False),
        sa.Column("agreed", sa.BigInteger(), nullable=False),
        sa.Column("difference_sum", sa.Float(), nullable=False),
        sa.Column("numeric", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("experiment_id", "variant", "instance", name=op.f("pk_experiment_tallies")),
    )


def downgrade() -> None:
    op.drop_table("experiment_tallies")
