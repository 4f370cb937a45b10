"""Types of the ids and offsets that the admin API and the portal take in paths, queries and
bodies: bounded by what the database holds, so a larger number is a 400 naming it, never a
database overflow (a 500)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

MAX_ID = 2**63 - 1
"""The largest id a row can have (the tables' BIGINT keys), and the largest offset."""

RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]


def bounded_offset(text: str | None) -> int:
    """A page offset from a hand-parsed query: a bad or negative one is the first page, one past
    MAX_ID the last possible one."""
    try:
        return min(max(int(text or 0), 0), MAX_ID)
    except ValueError:
        return 0
