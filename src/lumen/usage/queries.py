"""Read usage records back: recent requests, totals and time series, for the usage pages, the admin
API and CSV exports.

Everything is aggregated in SQL, by the same statements on SQLite and PostgreSQL, and every query
is bounded by the indexes of `usage_records` (tests/usage/test_query_plans.py checks the plans on
a million rows): a principal's rows by `(principal, created_at)`, a model's by
`(model, created_at)`, a key's by `(key_id, created_at)`, everyone's by `created_at`.

Time buckets are UTC: hours for a day, days for a week or a month, months for a year. A bucket is
named by its start as text (`2026-11-28T14:00`, `2026-11-28`, `2026-11`), the same on both
databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lumen.store.tables import usage_records
from lumen.usage.recorder import UsageRecord

Period = Literal["day", "week", "month", "year"]
Dimension = Literal["model", "key", "source"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "year")
DIMENSIONS: tuple[Dimension, ...] = ("model", "key", "source")
NO_KEY = "(portal chat)"
"""The group name of requests made without an API key (the portal's chat) when grouping by key."""

_c = usage_records.c


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredUsageRecord(UsageRecord):
    """A `UsageRecord` as stored, with its row id."""

    id: int


@dataclass(frozen=True, slots=True)
class UsageScope:
    """Whose usage: `principals` None is everyone (administrators only); an empty tuple is nobody.
    `model` and `key_id` narrow it further."""

    principals: tuple[str, ...] | None = None
    model: str | None = None
    key_id: str | None = None

    @classmethod
    def of(cls, principal: str, **narrow: Any) -> UsageScope:
        return cls(principals=(principal,), **narrow)

    @property
    def empty(self) -> bool:
        return self.principals is not None and not self.principals


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micro: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_micro + other.cost_micro,
        )


@dataclass(frozen=True, slots=True)
class Series:
    """Usage per time bucket and group: every bucket of the window (empty ones included, oldest
    first) and the groups ordered by their total requests, most first."""

    period: Period
    by: Dimension
    since: datetime
    buckets: list[str]
    groups: list[str]
    cells: dict[tuple[str, str], Totals] = field(default_factory=dict)

    def cell(self, bucket: str, group: str) -> Totals:
        return self.cells.get((bucket, group), Totals())

    def group_total(self, group: str) -> Totals:
        return sum((self.cell(b, group) for b in self.buckets), Totals())

    @property
    def total(self) -> Totals:
        return sum(self.cells.values(), Totals())


# --- windows and buckets --------------------------------------------------------------------------

_BUCKET_FORMATS: dict[Period, tuple[str, str]] = {
    # period: (SQLite strftime, PostgreSQL to_char) naming the same bucket the same way
    "day": ("%Y-%m-%dT%H:00", 'YYYY-MM-DD"T"HH24:00'),
    "week": ("%Y-%m-%d", "YYYY-MM-DD"),
    "month": ("%Y-%m-%d", "YYYY-MM-DD"),
    "year": ("%Y-%m", "YYYY-MM"),
}


def window(period: Period, now: datetime) -> tuple[datetime, list[str]]:
    """The start of the period's window (a bucket boundary, so every bucket is whole) and the names
    of its buckets, oldest first. Day: the last 24 hours; week and month: the last 7 and 30 days;
    year: the last 12 months; the current hour, day or month included."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
        return start, [(start + timedelta(hours=i)).strftime("%Y-%m-%dT%H:00") for i in range(24)]
    if period in ("week", "month"):
        days = 7 if period == "week" else 30
        start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
        return start, [(start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(days)]
    months = [(now.year * 12 + now.month - 1 - back) for back in range(11, -1, -1)]
    start = datetime(months[0] // 12, months[0] % 12 + 1, 1, tzinfo=UTC)
    return start, [f"{m // 12:04d}-{m % 12 + 1:02d}" for m in months]


def _bucket(dialect: str, period: Period) -> ColumnElement[str]:
    sqlite_format, pg_format = _BUCKET_FORMATS[period]
    # Literal formats, not bound parameters: PostgreSQL only recognises the GROUP BY expression
    # as the selected one when both are the same text, and bound parameters get distinct numbers.
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), _c.created_at)
        return func.to_char(utc, literal_column(f"'{pg_format}'"))
    return func.strftime(literal_column(f"'{sqlite_format}'"), _c.created_at)


def _group(by: Dimension) -> ColumnElement[Any]:
    return {"model": _c.model, "key": _c.key_id, "source": _c.source}[by]


def _conditions(
    scope: UsageScope, since: datetime | None = None, until: datetime | None = None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if scope.principals is not None:
        if len(scope.principals) == 1:
            conditions.append(_c.principal == scope.principals[0])
        else:
            conditions.append(_c.principal.in_(scope.principals))
    if scope.model is not None:
        conditions.append(_c.model == scope.model)
    if scope.key_id is not None:
        conditions.append(_c.key_id == scope.key_id)
    if since is not None:
        conditions.append(_c.created_at >= since)
    if until is not None:
        conditions.append(_c.created_at < until)
    return conditions


_SUMS = (
    func.count(),
    func.coalesce(func.sum(_c.prompt_tokens), 0),
    func.coalesce(func.sum(_c.completion_tokens), 0),
    func.coalesce(func.sum(_c.cost_micro), 0),
)


def _totals(row: Sequence[Any]) -> Totals:
    return Totals(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


EXPORT_COLUMNS = (
    "created_at",
    "request_id",
    "principal",
    "key_id",
    "model",
    "source",
    "operation",
    "prompt_tokens",
    "completion_tokens",
    "estimated",
    "cost_micro",
    "status",
    "finish_reason",
    "error_code",
    "latency_ms",
    "ttft_ms",
)
"""The columns of a CSV export, in order."""

ADMIN_EXPORT_COLUMNS = (*EXPORT_COLUMNS, "endpoint")
"""An administrator's export also says which endpoint served each request. Its label is the
endpoint's URL, which may name internal hosts: nobody else sees it."""


# --- statements (separate, so the plan test EXPLAINs exactly what the pages run) -----------------


def series_statement(
    dialect: str, scope: UsageScope, period: Period, by: Dimension, since: datetime
) -> Select[Any]:
    bucket = _bucket(dialect, period).label("bucket")
    group = _group(by).label("grp")
    return (
        select(bucket, group, *_SUMS)
        .where(*_conditions(scope, since))
        .group_by(bucket, group)  # by label: the same expression on both databases
    )


def totals_statement(scope: UsageScope, since: datetime | None, until: datetime | None = None) -> Select[Any]:
    return select(*_SUMS).where(*_conditions(scope, since, until))


def by_principal_statement(principals: Sequence[str], since: datetime) -> Select[Any]:
    return (
        select(_c.principal, *_SUMS)
        .where(_c.principal.in_(list(principals)), _c.created_at >= since)
        .group_by(_c.principal)
    )


def _before(at: datetime, row_id: int) -> ColumnElement[bool]:
    """Rows after (created_at, id) in newest-first order. The bare `created_at <= at` lets the index
    start at the cursor; without it a deep page would walk every newer row again."""
    return and_(_c.created_at <= at, or_(_c.created_at < at, _c.id < row_id))


def recent_statement(
    scope: UsageScope, limit: int, before: tuple[datetime, int] | None = None
) -> Select[Any]:
    query = select(usage_records).where(*_conditions(scope))
    if before is not None:
        query = query.where(_before(*before))
    return query.order_by(_c.created_at.desc(), _c.id.desc()).limit(limit)


def export_statement(
    scope: UsageScope,
    since: datetime | None,
    until: datetime | None = None,
    before: tuple[datetime, int] | None = None,
    batch: int = 1000,
    columns: Sequence[str] = EXPORT_COLUMNS,
) -> Select[Any]:
    query = select(*(_c[name] for name in columns), _c.id).where(*_conditions(scope, since, until))
    if before is not None:
        query = query.where(_before(*before))
    return query.order_by(_c.created_at.desc(), _c.id.desc()).limit(batch)


def volume_statement(principal: str, since: datetime) -> Select[Any]:
    return (
        select(_c.model, _c.key_id, *_SUMS)
        .where(_c.principal == principal, _c.created_at >= since)
        .group_by(_c.model, _c.key_id)
    )


# --- queries ---------------------------------------------------------------------------------------


async def recent_usage(
    *, engine: AsyncEngine, limit: int = 100, principal: str | None = None
) -> list[StoredUsageRecord]:
    """The newest usage records (by request time, then insertion order), optionally of one principal."""
    scope = UsageScope() if principal is None else UsageScope.of(principal)
    return await recent_requests(engine=engine, scope=scope, limit=limit)


async def recent_requests(
    *, engine: AsyncEngine, scope: UsageScope, limit: int = 50, before: tuple[datetime, int] | None = None
) -> list[StoredUsageRecord]:
    """A page of requests, newest first; `before` is the (created_at, id) of the last row of the
    previous page (a keyset cursor: every page costs the same, however deep)."""
    if scope.empty:
        return []
    async with engine.connect() as conn:
        result = await conn.execute(recent_statement(scope, limit, before))
        return [StoredUsageRecord(**row._asdict()) for row in result]


async def usage_series(
    *, engine: AsyncEngine, scope: UsageScope, period: Period, by: Dimension, now: datetime | None = None
) -> Series:
    """Requests, tokens and coins per time bucket of the period, per model, key or source."""
    since, buckets = window(period, now or datetime.now(UTC))
    cells: dict[tuple[str, str], Totals] = {}
    if not scope.empty:
        async with engine.connect() as conn:
            statement = series_statement(conn.dialect.name, scope, period, by, since)
            for row in await conn.execute(statement):
                group = row.grp if row.grp is not None else NO_KEY
                cells[(row.bucket, group)] = _totals(row[2:])
    per_group: dict[str, int] = {}
    for (_, group), totals in cells.items():
        per_group[group] = per_group.get(group, 0) + totals.requests
    groups = sorted(per_group, key=lambda g: (-per_group[g], g))
    return Series(period, by, since, buckets, groups, cells)


async def usage_totals(
    *, engine: AsyncEngine, scope: UsageScope, since: datetime | None = None, until: datetime | None = None
) -> Totals:
    if scope.empty:
        return Totals()
    async with engine.connect() as conn:
        return _totals((await conn.execute(totals_statement(scope, since, until))).one())


async def totals_by_principal(
    *, engine: AsyncEngine, principals: Sequence[str], since: datetime
) -> dict[str, Totals]:
    """Each principal's totals since `since` (a page of the admin's user list: one query)."""
    if not principals:
        return {}
    async with engine.connect() as conn:
        rows = await conn.execute(by_principal_statement(principals, since))
        return {row[0]: _totals(row[1:]) for row in rows}


@dataclass(frozen=True, slots=True)
class Volume:
    """What one principal sent in a recent window: in all, per model and per key (None: no key)."""

    total: Totals
    by_model: dict[str, Totals]
    by_key: dict[str | None, Totals]


async def recent_volume(*, engine: AsyncEngine, principal: str, since: datetime) -> Volume:
    """The principal's requests and tokens since `since` (the usage page: the last minute, beside
    the rate limits)."""
    total = Totals()
    by_model: dict[str, Totals] = {}
    by_key: dict[str | None, Totals] = {}
    async with engine.connect() as conn:
        for row in await conn.execute(volume_statement(principal, since)):
            totals = _totals(row[2:])
            total += totals
            by_model[row.model] = by_model.get(row.model, Totals()) + totals
            by_key[row.key_id] = by_key.get(row.key_id, Totals()) + totals
    return Volume(total, by_model, by_key)


async def export_rows(
    *,
    engine: AsyncEngine,
    scope: UsageScope,
    since: datetime | None,
    until: datetime | None = None,
    batch: int = 1000,
    columns: Sequence[str] = EXPORT_COLUMNS,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching record, newest first, in lists of up to `batch` rows, read by keyset pages
    (one short query each, no transaction held open for the whole download: a slow client keeps no
    database connection busy between pages). `columns`: `EXPORT_COLUMNS` or, for administrators,
    `ADMIN_EXPORT_COLUMNS`."""
    if scope.empty:
        return
    before: tuple[datetime, int] | None = None
    while True:
        query = export_statement(scope, since, until, before, batch, columns)
        async with engine.connect() as conn:
            rows = [row._asdict() for row in await conn.execute(query)]
        if not rows:
            return
        before = (rows[-1]["created_at"], rows[-1]["id"])
        yield rows
        if len(rows) < batch:
            return


async def explain(conn: AsyncConnection, statement: Select[Any]) -> str:
    """The database's query plan of `statement` as one text (for the plan tests and for
    administrators checking a slow instance)."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
    rows: list[Any] = list(await conn.exec_driver_sql(prefix + str(compiled)))
    # SQLite's rows are (id, parent, notused, detail); PostgreSQL's are one line of text each.
    column = 3 if conn.dialect.name == "sqlite" else 0
    return "\n".join(str(row[column]) for row in rows)
