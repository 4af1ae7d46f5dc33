"""prediction logs: index request_id only where a client gave one

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Most predictions carry no request_id, and every one of them paid for an index entry (one of four B-tree
inserts per logged prediction). A lookup by request_id (`request_id = :id`) implies NOT NULL, so PostgreSQL
and SQLite both use the partial index for it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = ("prediction_logs", "prediction_batches")
GIVEN = sa.text("request_id IS NOT NULL")


def upgrade() -> None:
    for table in TABLES:
        name = f"ix_{table}_request_id"
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["request_id"], postgresql_where=GIVEN, sqlite_where=GIVEN)


def downgrade() -> None:
    for table in TABLES:
        name = f"ix_{table}_request_id"
        op.drop_index(name, table_name=table)
        op.create_index(name, table, ["request_id"])
