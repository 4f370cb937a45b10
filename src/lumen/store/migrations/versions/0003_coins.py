"""coins: coin pools (durable balances, own pool settings) and the coin ledger.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "coin_pools",
        sa.Column("principal", sa.String(), nullable=False),
        sa.Column("balance_micro", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refill_carry", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(), nullable=True),
        sa.Column("max_micro", sa.BigInteger(), nullable=True),
        sa.Column("refresh_micro", sa.BigInteger(), nullable=True),
        sa.Column("starting_micro", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("principal", name=op.f("pk_coin_pools")),
    )
    op.create_table(
        "coin_ledger",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("principal", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("amount_micro", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_micro", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coin_ledger")),
    )
    op.create_index(op.f("ix_coin_ledger_request_id"), "coin_ledger", ["request_id"])
    op.create_index("ix_coin_ledger_principal_id", "coin_ledger", ["principal", "id"])
    op.create_index("ix_coin_ledger_created_at", "coin_ledger", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_coin_ledger_created_at", table_name="coin_ledger")
    op.drop_index("ix_coin_ledger_principal_id", table_name="coin_ledger")
    op.drop_index(op.f("ix_coin_ledger_request_id"), table_name="coin_ledger")
    op.drop_table("coin_ledger")
    op.drop_table("coin_pools")
