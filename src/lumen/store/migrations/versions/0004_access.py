"""access: per-user and per-project model access rules, acknowledgements of model notices.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "model_access_rules",
        sa.Column("principal", sa.String(), nullable=False),
        sa.Column("default_access", sa.String(), nullable=True),
        sa.Column("allow", sa.JSON(), nullable=False),
        sa.Column("block", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("principal", name=op.f("pk_model_access_rules")),
    )
    op.create_table(
        "model_acknowledgements",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("principal", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("notice_hash", sa.String(), nullable=False),
        sa.Column("notice", sa.String(), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by", sa.String(), nullable=False),
        sa.Column("via", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_acknowledgements")),
    )
    op.create_index(
        "uq_model_acknowledgements_principal_model_notice_hash",
        "model_acknowledgements",
        ["principal", "model", "notice_hash"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(
        "uq_model_acknowledgements_principal_model_notice_hash", table_name="model_acknowledgements"
    )
    op.drop_table("model_acknowledgements")
    op.drop_table("model_access_rules")
