"""admin_audit: the log of administrative actions; an index for one API key's usage.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "admin_audit",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("actor_name", sa.String(), server_default="", nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_audit")),
    )
    op.create_index("ix_admin_audit_target_id", "admin_audit", ["target", "id"])
    op.create_index("ix_admin_audit_actor_id", "admin_audit", ["actor", "id"])
    # A project's page and the usage page's key filter read one key's rows in a time window.
    op.create_index("ix_usage_records_key_id_created_at", "usage_records", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_key_id_created_at", table_name="usage_records")
    op.drop_index("ix_admin_audit_actor_id", table_name="admin_audit")
    op.drop_index("ix_admin_audit_target_id", table_name="admin_audit")
    op.drop_table("admin_audit")
