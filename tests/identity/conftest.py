"""The database fixtures of `tests/store/conftest.py`, for the password and session tests."""

from __future__ import annotations

from tests.store.conftest import database_url, engine, pg_server, pg_url, sqlite_url

__all__ = ["database_url", "engine", "pg_server", "pg_url", "sqlite_url"]
