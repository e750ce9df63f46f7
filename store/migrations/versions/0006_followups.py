"""Follow-up tasks ("close the loop"): one row per task, at most one active (open, claimed, holdout) per
customer through the unique `active_customer` column. Nothing refers to the table, so up- and downgrading
only create or drop it (a downgrade loses the tasks).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


# 0001's helper, written again: a revision is a frozen snapshot that imports neither the models nor another
# revision, so that later changes cannot alter what it did.
def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "followup_tasks",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("active_customer", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("segment", sa.String(), nullable=False),
        sa.Column("sample_rate", sa.Double(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        _time("triggered_at"),
        _time("due_at"),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("previous_score", sa.Integer(), nullable=True),
        _time("answered_at", nullable=True),
        sa.Column("event_id", sa.String(), nullable=True),
        sa.Column("decision_id", sa.String(), nullable=True),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("churn_risk", sa.Double(), nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.Column("claimed_by", sa.String(), nullable=True),
        _time("claimed_at", nullable=True),
        _time("closed_at", nullable=True),
        sa.Column("outcome", sa.String(), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("task_id", name="pk_followup_tasks"),
        sa.UniqueConstraint("active_customer", name="uq_followup_tasks_active_customer"),
    )
    op.create_index("ix_followup_tasks_customer_id", "followup_tasks", ["customer_id"])
    op.create_index("ix_followup_tasks_status_due_at", "followup_tasks", ["status", "due_at"])
    op.create_index("ix_followup_tasks_triggered_at", "followup_tasks", ["triggered_at"])


def downgrade() -> None:
    op.drop_index("ix_followup_tasks_triggered_at", table_name="followup_tasks")
    op.drop_index("ix_followup_tasks_status_due_at", table_name="followup_tasks")
    op.drop_index("ix_followup_tasks_customer_id", table_name="followup_tasks")
    op.drop_table("followup_tasks")
