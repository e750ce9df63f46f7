"""Signed requests' ids (webhook-id, the nonce of the Standard Webhooks scheme) seen within the replay
window, per client, so an exact replay is refused across gunicorn workers and hosts. Rows expire with the
window (`expires_at`, indexed for the clean-up); nothing else refers to them, so up- and downgrading only
create or drop the table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signed_request_ids",
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "request_id", name="pk_signed_request_ids"),
    )
    op.create_index("ix_signed_request_ids_expires_at", "signed_request_ids", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_signed_request_ids_expires_at", table_name="signed_request_ids")
    op.drop_table("signed_request_ids")
