"""Idempotency keys per client: the unique constraint on decisions.request_id becomes one on
(client, request_id), so another API client reusing a request id gets a decision of its own instead of the
first client's (as Stripe scopes idempotency keys per account). The constraint's index leads with client,
so it also serves the decision path's lookup by (client, request_id).

Upgrading only relaxes a constraint: every existing row stays as it is. Downgrading would have to make
request_id globally unique again; if two clients have used one request id by then, it refuses with the
request ids it would have to merge, rather than delete or rename a decision.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch: SQLite cannot drop a constraint in place, so the table is rebuilt (rows and outcomes kept).
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("uq_decisions_request_id", type_="unique")
        batch.create_unique_constraint("uq_decisions_client_request_id", ["client", "request_id"])


def downgrade() -> None:
    shared = op.get_bind().execute(sa.text(
        "SELECT request_id FROM decisions GROUP BY request_id HAVING count(*) > 1 ORDER BY request_id LIMIT 6"
    )).scalars().all()
    if shared:
        listed = ", ".join(repr(r) for r in shared[:5]) + (", ..." if len(shared) > 5 else "")
        raise RuntimeError(
            "cannot downgrade below 0004: more than one client has used the request_id(s) "
            f"{listed}, and revision 0003 allows each request_id once. Nothing was changed; delete or rename "
            "the decisions you do not need to keep, then downgrade again.")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_constraint("uq_decisions_client_request_id", type_="unique")
        batch.create_unique_constraint("uq_decisions_request_id", ["request_id"])
