"""drift: a reference profile per version, and the reports of drift checks

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10

`drift_references` holds one reference profile (JSON, `ReferenceProfile.to_dict`) per version id, replaced
when a new reference is set. `drift_reports` holds one row per check: the window, the trigger, the model-level
verdict in columns (so listings and alert rules read no JSON) and the per-feature results with both histograms
as JSON. Reports are read newest first by model or by version.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_references",
        sa.Column("version_id", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("dataset_id", sa.String(length=64), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("source_rows", sa.Integer(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("version_id", name=op.f("pk_drift_references")),
    )
    op.create_table(
        "drift_reports",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("drift", sa.Boolean(), nullable=False),
        sa.Column("drifted_features", sa.JSON(), nullable=False),
        sa.Column("alpha", sa.Float(), nullable=False),
        sa.Column("tests", sa.Integer(), nullable=False),
        sa.Column("sampled_rows", sa.Integer(), nullable=False),
        sa.Column("reference_rows", sa.Integer(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_reports")),
    )
    op.create_index("ix_drift_reports_model_created_at", "drift_reports", ["model", "created_at"])
    op.create_index("ix_drift_reports_version_id_created_at", "drift_reports", ["version_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_drift_reports_version_id_created_at", table_name="drift_reports")
    op.drop_index("ix_drift_reports_model_created_at", table_name="drift_reports")
    op.drop_table("drift_reports")
    op.drop_table("drift_references")
