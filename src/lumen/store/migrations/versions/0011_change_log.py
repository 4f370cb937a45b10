"""change_log, coin_commands, process_heartbeats: one way to change state; the audit log's face.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "change_log",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change", sa.String(), nullable=False),
        sa.Column("principal", sa.String(), nullable=True),
        sa.Column("origin", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_log")),
    )
    op.create_table(
        "coin_commands",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("principal", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=True),
        sa.Column("overrides", sa.JSON(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coin_commands")),
    )
    op.create_table(
        "process_heartbeats",
        sa.Column("origin", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("local_state", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("seen_change", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_process_heartbeats")),
    )
    with op.batch_alter_table("admin_audit") as batch:
        batch.add_column(sa.Column("face", sa.String(), server_default="", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("admin_audit") as batch:
        batch.drop_column("face")
    op.drop_table("process_heartbeats")
    op.drop_table("coin_commands")
    op.drop_table("change_log")
