"""prediction batches: numeric inputs and probabilities as raw float64 instead of JSON text

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

A 1000-row block of 30 numeric features was ~600 kB of JSON: encoding it and writing it cost the log writer
about 2 ms per block on SQLite, and under heavy batch traffic the writer fell behind and dropped blocks.
As little-endian float64 the same inputs are 240 kB and take microseconds to encode. Matrices that hold
strings keep JSON in `inputs`, so it becomes nullable; rows written before this revision keep their JSON.
"""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_batches") as batch:  # SQLite rebuilds the table for the NULL
        batch.add_column(sa.Column("inputs_f64", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("probabilities_f64", sa.LargeBinary(), nullable=True))
        batch.alter_column("inputs", existing_type=sa.JSON(), nullable=True)
    if op.get_bind().dialect.name == "postgresql":  # as for the JSON columns (0005): no pglz on insert
        op.execute(
            "ALTER TABLE prediction_batches ALTER COLUMN inputs_f64 SET STORAGE EXTERNAL, "
            "ALTER COLUMN probabilities_f64 SET STORAGE EXTERNAL"
        )


def downgrade() -> None:
    """Blocks stored as float64 get their JSON back before the columns go."""
    connection = op.get_bind()
    binary = connection.execute(
        sa.text(
            "SELECT id, count, inputs_f64, probabilities_f64 FROM prediction_batches "
            "WHERE inputs_f64 IS NOT NULL OR probabilities_f64 IS NOT NULL"
        )
    ).all()
    update = sa.text(
        "UPDATE prediction_batches SET inputs = COALESCE(:inputs, inputs), "
        "probabilities = COALESCE(:probabilities, probabilities) WHERE id = :id"
    )
    for id_, count, inputs, probabilities in binary:
        connection.execute(
            update,
            {"id": id_, "inputs": _json(inputs, count), "probabilities": _json(probabilities, count)},
        )
    with op.batch_alter_table("prediction_batches") as batch:
        batch.alter_column("inputs", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("probabilities_f64")
        batch.drop_column("inputs_f64")


def _json(data: bytes | None, count: int) -> str | None:
    if data is None:
        return None
    return json.dumps(np.frombuffer(data, dtype="<f8").reshape(count, -1).tolist())
