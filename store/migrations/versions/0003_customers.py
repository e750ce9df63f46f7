"""Customers: the contract's customer columns and attributes of every customer of the data set the feature
snapshot was loaded from, subscribed at the snapshot time or not, so that an export can write any customer
the store refers to (one who had cancelled before the snapshot, say) with its own currency and sign-up time.
`feature_snapshots.customers` counts the rows a load wrote; null for the loads before this revision, so
`load-features --if-stale` loads those again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
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
        "customers",
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("signup_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("plan_id", sa.String(), nullable=False),
        sa.Column("billing_period", sa.String(), nullable=False),
        sa.Column("price", sa.Double(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("billing_channel", sa.String(), nullable=False),
        sa.Column("country", sa.String(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customers"),
    )
    with op.batch_alter_table("feature_snapshots") as batch:
        batch.add_column(sa.Column("customers", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feature_snapshots") as batch:
        batch.drop_column("customers")
    op.drop_table("customers")
