"""The PostgreSQL server fixture of `tests/store/conftest.py`, for the schema tests."""

from __future__ import annotations

from tests.store.conftest import pg_server

__all__ = ["pg_server"]
