"""Experiments: each decision's experiment and arm as plain indexed columns, so an experiment's decisions are
found without reading JSON (which SQLite and PostgreSQL query differently). The full assignment stays in the
`experiment` JSON column. A "shown" outcome (the frontend displayed the answer) needs no schema change.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("experiment_name", sa.String(), nullable=True))
        batch.add_column(sa.Column("experiment_variant", sa.String(), nullable=True))
        batch.create_index("ix_decisions_experiment_name_created_at", ["experiment_name", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_index("ix_decisions_experiment_name_created_at")
        batch.drop_column("experiment_variant")
        batch.drop_column("experiment_name")
