"""admin_keys: api_keys.admin, set on keys created for administration.

An administrator's ordinary keys no longer carry admin rights on the admin API; only a key made
as an admin key does. The key printed at the first start ("first key") and the registered
`server.bootstrap_key` of an administrator are admin keys, so existing set-ups keep working;
an administrator's other keys become ordinary ones.

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

BOOTSTRAP_NAMES = ("first key", "bootstrap key (server.bootstrap_key)")
"""The names `lumen.identity.setup` gives the keys it makes for the first administrator."""


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False))
    api_keys = sa.table(
        "api_keys",
        sa.column("admin", sa.Boolean()),
        sa.column("name", sa.String()),
        sa.column("owner_kind", sa.String()),
        sa.column("owner_id", sa.BigInteger()),
        sa.column("models", sa.JSON()),
    )
    users = sa.table("users", sa.column("id", sa.BigInteger()), sa.column("is_admin", sa.Boolean()))
    admins = sa.select(users.c.id).where(users.c.is_admin.is_(sa.true()))
    op.execute(
        api_keys.update()
        .where(
            api_keys.c.name.in_(BOOTSTRAP_NAMES),
            api_keys.c.owner_kind == "user",
            api_keys.c.owner_id.in_(admins),
            # JSON null and SQL NULL both mean "every model"; a model list is never an admin key.
            sa.or_(api_keys.c.models.is_(None), sa.cast(api_keys.c.models, sa.String) == "null"),
        )
        .values(admin=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("admin")
