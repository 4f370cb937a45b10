"""ledger_movement_id: coin_ledger.movement_id, unique, so a drained outbox entry is written once.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Existing rows get NULL, which a unique index allows any number of times on both databases.
    # A unique index rather than a constraint: SQLite adds it without rebuilding the table.
    op.add_column("coin_ledger", sa.Column("movement_id", sa.String(), nullable=True))
    op.create_index("uq_coin_ledger_movement_id", "coin_ledger", ["movement_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_coin_ledger_movement_id", table_name="coin_ledger")
    with op.batch_alter_table("coin_ledger") as batch:
        batch.drop_column("movement_id")
