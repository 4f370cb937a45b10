"""Alembic environment for Lumen's schema, shipped inside the package (see `lumen.store.migrate`)."""
