"""usage_record_id: usage_records.record_id, unique, so a usage record written twice is stored once.

With Redis a request's usage record travels in the coin ledger outbox with its charge, and the
outbox is drained at least once; the write-behind recorder retries batches. Both insert a record
only if its id is not in the table yet.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Existing rows get NULL, which a unique index allows any number of times on both databases.
    # A unique index rather than a constraint: SQLite adds it without rebuilding the table.
    op.add_column("usage_records", sa.Column("record_id", sa.String(), nullable=True))
    op.create_index("uq_usage_records_record_id", "usage_records", ["record_id"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_usage_records_record_id", table_name="usage_records")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("record_id")
