"""Initial schema: API clients, decisions and their outcomes, events, customer feature snapshots.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Written out in full rather than imported from store.models: a revision must keep creating the schema of its
time when the models change later. Constraint names follow store.models.NAMING_CONVENTION.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=False),
        sa.Column("key_hash", sa.String(), nullable=False),
        sa.Column("signing_secret", sa.String(), nullable=True),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_clients"),
        sa.UniqueConstraint("name", name="uq_api_clients_name"),
        sa.UniqueConstraint("key_id", name="uq_api_clients_key_id"),
    )
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.String(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("body_hash", sa.String(), nullable=False),
        sa.Column("client", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        _time("created_at"),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("reason_text", sa.Text(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("offer_id", sa.String(), nullable=False),
        sa.Column("offer", sa.JSON(), nullable=False),
        sa.Column("propensity", sa.Double(), nullable=False),
        sa.Column("p_stay", sa.Double(), nullable=True),
        sa.Column("expected_incremental_value", sa.Double(), nullable=True),
        sa.Column("reason_codes", sa.JSON(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=True),
        sa.Column("policy_version", sa.String(), nullable=False),
        sa.Column("catalog_version", sa.String(), nullable=False),
        sa.Column("fallback", sa.Boolean(), nullable=False),
        sa.Column("nps_segment", sa.String(), nullable=False),
        _time("close_the_loop_by", nullable=True),
        sa.Column("experiment", sa.JSON(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name="pk_decisions"),
        sa.UniqueConstraint("request_id", name="uq_decisions_request_id"),
    )
    op.create_index("ix_decisions_created_at", "decisions", ["created_at"])
    op.create_index("ix_decisions_customer_id_created_at", "decisions", ["customer_id", "created_at"])
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("decision_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        _time("occurred_at"),
        _time("recorded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_outcomes"),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.decision_id"], name="fk_outcomes_decision_id_decisions"),
        sa.UniqueConstraint("decision_id", "kind", name="uq_outcomes_decision_id_kind"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("customer_id", sa.String(), nullable=False),
        sa.Column("decision_id", sa.String(), nullable=True),
        _time("occurred_at"),
        sa.Column("payload", sa.JSON(), nullable=False),
        _time("recorded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
    )
    op.create_index("ix_events_customer_id_occurred_at", "events", ["customer_id", "occurred_at"])
    op.create_index("ix_events_decision_id", "events", ["decision_id"])
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"])
    op.create_table(
        "customer_features",
        sa.Column("customer_id", sa.String(), nullable=False),
        _time("as_of"),
        sa.Column("feature_version", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        _time("loaded_at"),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_features"),
    )
    op.create_table(
        "feature_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        _time("as_of"),
        sa.Column("feature_version", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        _time("loaded_at"),
        sa.PrimaryKeyConstraint("id", name="pk_feature_snapshots"),
    )


def downgrade() -> None:
    op.drop_table("feature_snapshots")
    op.drop_table("customer_features")
    op.drop_table("events")  # its indexes go with it
    op.drop_table("outcomes")
    op.drop_table("decisions")
    op.drop_table("api_clients")
