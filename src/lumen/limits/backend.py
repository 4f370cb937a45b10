"""What the limiter asks of a storage backend: one atomic check-and-take over all of a request's
limits, and one settlement afterwards. Both backends (memory, Redis) implement the same `gcra` rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Scope = Literal["key", "principal", "model", "model_total"]
Kind = Literal["requests", "tokens"]


@dataclass(slots=True)
class Bucket:
    """One requests- or tokens-per-minute limit of one scope."""

    key: str
    """Storage key, unique per scope and kind."""
    scope: Scope
    kind: Kind
    limit: int
    cost: int
    """Units to take: 1 request, or the tokens reserved (at most `limit`, so a large request can pass
    when the bucket is full instead of never)."""
    requested: int
    """Units the request asked for, for messages."""


@dataclass(slots=True)
class Pool:
    """One concurrency limit of one scope."""

    key: str
    scope: Scope
    limit: int


@dataclass(slots=True)
class Verdict:
    ok: bool
    """True if every limit had room and (when committing) everything was taken."""
    backlogs: list[float]
    """Per bucket: seconds until full, after taking when `ok`, before otherwise."""
    bucket_full: list[bool]
    """Per bucket: the cost did not fit."""
    held: list[int]
    """Per pool: slots in use (including ours when `ok`)."""
    pool_full: list[bool]


@dataclass(slots=True)
class Refund:
    """Settlement of one tokens bucket: `units` (negative gives back) are added to what was taken."""

    key: str
    limit: int
    units: int


class BackendUnavailable(Exception):
    """The backend could not be reached or answered with an error."""


class Backend(Protocol):
    async def acquire(
        self, buckets: list[Bucket], pools: list[Pool], slot: str, now: float | None, *, commit: bool
    ) -> Verdict:
        """Checks every limit; when all have room and `commit`, takes from all of them atomically.
        `now=None` uses the backend's own clock."""
        ...

    async def settle(self, refunds: list[Refund], pools: list[str], slot: str, now: float | None) -> None:
        """Adjusts tokens buckets and releases `slot` from the pools (by key). Runs to completion even
        if the caller is cancelled."""
        ...

    async def aclose(self) -> None: ...
