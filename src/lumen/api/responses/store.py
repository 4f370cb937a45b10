"""Stored responses: kept for their owner only, for `RETENTION`, then gone.

Every read is by (id, owner): a response of someone else is exactly as absent as one that never
existed (a 404 with the same message), so ids cannot be probed. Expired rows are invisible at
once and deleted by the next save.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import NotFound
from lumen.store.tables import stored_responses

RETENTION = timedelta(days=30)
"""How long a stored response can be retrieved and continued (OpenAI keeps them 30 days too)."""

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: JSON
    input_items: list[JSON]
    history: list[JSON]

    @property
    def conversation(self) -> list[JSON]:
        """The items a continuation (`previous_response_id`) puts before its own input."""
        return [*self.history, *self.input_items, *self.response.get("output", [])]


def not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"No response found with id '{response_id}'.", param=param)


async def save(
    engine: AsyncEngine, *, owner: str, response: JSON, input_items: list[JSON], history: list[JSON]
) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(delete(stored_responses).where(stored_responses.c.expires_at < now))
        await conn.execute(
            insert(stored_responses).values(
                id=response["id"],
                owner=owner,
                created_at=now,
                expires_at=now + RETENTION,
                response=response,
                input_items=input_items,
                history=history,
            )
        )


async def load(
    engine: AsyncEngine, *, owner: str, response_id: str, param: str | None = None
) -> StoredResponse:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    stored_responses.c.response, stored_responses.c.input_items, stored_responses.c.history
                ).where(
                    stored_responses.c.id == response_id,
                    stored_responses.c.owner == owner,
                    stored_responses.c.expires_at >= datetime.now(UTC),
                )
            )
        ).first()
    if row is None:
        raise not_found(response_id, param)
    return StoredResponse(row.response, row.input_items, row.history)


async def remove(engine: AsyncEngine, *, owner: str, response_id: str) -> None:
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(stored_responses).where(
                stored_responses.c.id == response_id,
                stored_responses.c.owner == owner,
                stored_responses.c.expires_at >= datetime.now(UTC),
            )
        )
    if result.rowcount == 0:
        raise not_found(response_id)
