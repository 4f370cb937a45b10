"""The Usage page: requests, tokens and coins over time, recent requests, rate limits, CSV export.

Whose usage a page shows is its *scope*: your own (everyone), a project you manage, and for
administrators everyone, one user or one group. The numbers come from `lumen.usage.queries` (the
same records the admin API reads); the limits from the gate (`Gate.limits_of`, `peek_headers`),
exactly as requests are limited. The chart is drawn by `static/js/usage.js` (Chart.js) from
`/usage/data`; the page itself (tables, filters, export link) needs no script.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from lumen.api.params import MAX_ID
from lumen.errors import InvalidRequest, NotFound, PermissionDenied
from lumen.identity import store
from lumen.identity.groups import project_groups, user_groups
from lumen.identity.principal import Principal
from lumen.limits import Rates
from lumen.limits import headers as limit_headers
from lumen.portal.deps import CurrentUser, PortalDep, PortalUser
from lumen.state import AppState
from lumen.usage import queries
from lumen.usage.outcome import CLIENT_CLOSED, outcome_label
from lumen.usage.queries import DIMENSIONS, NO_KEY, PERIODS, Dimension, Period, Series, Totals, UsageScope

router = APIRouter()

PAGE_SIZE = 50
TOP_GROUPS = 7
"""The chart shows this many groups (models, keys, sources) and puts the rest together as "other"."""
PERIOD_LABELS = {
    "day": "Last 24 hours",
    "week": "Last 7 days",
    "month": "Last 30 days",
    "year": "Last 12 months",
}
BY_LABELS = {"model": "Model", "key": "API key", "source": "Source"}
SOURCE_LABELS = {"api": "API", "chat": "Portal chat"}
MINUTE = timedelta(minutes=1)


# --- formatting (shared by the projects and admin pages) ------------------------------------------


def number(value: int) -> str:
    return f"{value:,}"


def coins_text(micro: int) -> str:
    """Coins for people: two decimals from one coin up, up to six significant ones below, so a
    request that cost 0.000123 coins does not show as 0.00."""
    value = Decimal(micro) / 1_000_000
    if value == 0:
        return "0"
    if abs(value) >= 1:
        return f"{value.quantize(Decimal('0.01')):,}"
    return format(value.quantize(Decimal("0.000001")).normalize(), "f")


def when_text(at: datetime | None) -> str:
    if at is None:
        return "never"
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).isoformat()


def bucket_label(period: str, bucket: str) -> str:
    if period == "day":
        return bucket[-5:]  # "14:00"
    if period == "year":
        return datetime.strptime(bucket, "%Y-%m").strftime("%b %Y")
    return datetime.strptime(bucket, "%Y-%m-%d").strftime("%b %d")


async def principal_names(state: AppState, principals: set[str]) -> dict[str, str]:
    """`user:<id>` → the email, `project:<id>` → "project <name>" (what the usage tables show)."""
    user_ids = {int(p.partition(":")[2]) for p in principals if p.startswith("user:")}
    project_ids = {int(p.partition(":")[2]) for p in principals if p.startswith("project:")}
    found_users = await store.users_by_ids(engine=state.engine, user_ids=user_ids)
    found_projects = await store.projects_by_ids(engine=state.engine, project_ids=project_ids)
    names = {u.principal: u.email for u in found_users.values()}
    names.update({p.principal: f"project {p.name}" for p in found_projects.values()})
    return {p: names.get(p, p) for p in principals}


def key_label(key: store.ApiKey | None, key_id: str | None) -> str:
    if key_id is None or key_id == NO_KEY:
        return NO_KEY
    if key is None:
        return key_id
    name = key.name or "unnamed key"
    return f"{name} ({key.hint})" + (" (revoked)" if key.revoked_at is not None else "")


# --- whose usage -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    value: str
    label: str
    selected: bool


@dataclass(frozen=True, slots=True)
class Choice:
    """What the request asked for (the filter form's values)."""

    who: str = "me"
    user: str = ""
    group: str = ""
    project: str = ""
    model: str = ""
    key: str = ""
    period: Period = "week"
    by: Dimension = "model"

    @classmethod
    def parse(cls, params: Any) -> Choice:
        def get(name: str, default: str = "") -> str:
            return str(params.get(name) or default).strip()[:320]

        period, by, who = get("period", "week"), get("by", "model"), get("who", "me")
        if period not in PERIODS:
            raise InvalidRequest("Choose a period of day, week, month or year.", param="period")
        if by not in DIMENSIONS:
            raise InvalidRequest("Break usage down by model, key or source.", param="by")
        if who not in ("me", "everyone", "user", "group", "project"):
            raise InvalidRequest("Choose whose usage to show.", param="who")
        return cls(
            who=who,
            user=get("user"),
            group=get("group"),
            project=get("project"),
            model=get("model"),
            key=get("key"),
            period=period,
            by=by,
        )

    def query(self, **change: str) -> str:
        values = {
            "who": self.who,
            "user": self.user,
            "group": self.group,
            "project": self.project,
            "model": self.model,
            "key": self.key,
            "period": self.period,
            "by": self.by,
        }
        values.update(change)
        return urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True, slots=True)
class Scope:
    """A resolved choice: the records to read and whose they are."""

    usage: UsageScope
    title: str
    principal: Principal | None
    """The one user or project whose rate limits apply (None for everyone or a group)."""
    keys: list[store.ApiKey]
    """The keys of that user or project (for the key filter and labels)."""


async def resolve_scope(state: AppState, user: PortalUser, choice: Choice) -> Scope:
    """Who may see what: everyone their own usage; a project's owner and managers the project's;
    administrators everything. Raises NotFound for what the user may not know exists."""
    settings = state.settings
    engine = state.engine
    if choice.who in ("everyone", "user", "group") and not user.is_admin:
        raise PermissionDenied("Only administrators can see the usage of others.", code="admin_required")
    principal: Principal | None = None
    keys: list[store.ApiKey] = []
    if choice.who == "me":
        principal = user.principal
        keys = await store.list_keys(engine=engine, owner_kind="user", owner_id=user.id)
        principals: tuple[str, ...] | None = (principal.id,)
        title = "Your usage"
    elif choice.who == "everyone":
        principals, title = None, "Usage of everyone"
    elif choice.who == "user":
        if not choice.user:
            raise InvalidRequest("Enter the email of the user whose usage to show.", param="user")
        found = await store.find_user(engine=engine, email=choice.user)
        claims = (await store.user_claims(engine=engine, user_ids=[found.id])).get(found.id, ("", None))[1]
        principal = Principal(
            id=found.principal,
            kind="user",
            name=found.email,
            groups=user_groups(settings.groups, found.email, claims),
        )
        keys = await store.list_keys(engine=engine, owner_kind="user", owner_id=found.id)
        principals, title = (found.principal,), f"Usage of {found.email}"
    elif choice.who == "group":
        group = next((g for g in settings.groups if g.name == choice.group), None)
        if group is None:
            raise NotFound(f"There is no group named '{choice.group}'.", code="group_not_found")
        principals, title = await group_principals(state, group.name), f"Usage of the group {group.name}"
    else:
        project = await visible_project(state, user, choice.project)
        principal = Principal(
            id=project.principal,
            kind="project",
            name=project.name,
            groups=project_groups(settings.groups, project.name),
        )
        keys = await store.list_keys(engine=engine, owner_kind="project", owner_id=project.id)
        principals, title = (project.principal,), f"Usage of the project {project.name}"
    key_id = None
    if choice.key:
        if choice.key not in {k.id for k in keys}:
            raise NotFound("That API key does not belong to this usage.", code="key_not_found")
        key_id = choice.key
    model = choice.model or None
    return Scope(UsageScope(principals=principals, model=model, key_id=key_id), title, principal, keys)


async def visible_project(state: AppState, user: PortalUser, project_id: str) -> store.Project:
    """The project, if the user is an administrator or one of its managers; NotFound otherwise
    (the same answer as for a project that does not exist)."""
    try:
        project = await store.get_project(engine=state.engine, project_id=int(project_id))
    except ValueError:
        raise NotFound("There is no such project.", code="project_not_found") from None
    except NotFound:
        raise NotFound("There is no such project.", code="project_not_found") from None
    if user.is_admin or project.owner_id == user.id:
        return project
    if user.id in await store.project_managers_of(engine=state.engine, project_id=project.id):
        return project
    raise NotFound("There is no such project.", code="project_not_found")


async def group_principals(state: AppState, name: str) -> tuple[str, ...]:
    """The users and projects in a group now (membership follows the claims of each user's last
    login, so usage is attributed to the group's current members)."""
    group = [g for g in state.settings.groups if g.name == name]
    members = [
        f"user:{user_id}"
        for user_id, (email, claims) in (await store.user_claims(engine=state.engine)).items()
        if user_groups(group, email, claims)
    ]
    for project_name in group[0].projects if group else ():
        try:
            members.append((await store.find_project(engine=state.engine, name=project_name)).principal)
        except NotFound:
            continue  # listed in the config but not created yet
    return tuple(sorted(members))


# --- the page --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    choice: Choice
    who: list[Option]
    groups: list[Option]
    projects: list[Option]
    models: list[Option]
    keys: list[Option]
    periods: list[Option]
    by: list[Option]
    is_admin: bool


@dataclass(frozen=True, slots=True)
class Stat:
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class GroupRow:
    name: str
    requests: str
    prompt_tokens: str
    completion_tokens: str
    coins: str


@dataclass(frozen=True, slots=True)
class RequestRow:
    at: str
    at_text: str
    who: str
    model: str
    source: str
    key: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    coins: str
    status: str
    ok: bool


@dataclass(frozen=True, slots=True)
class LimitRow:
    scope: str
    rpm: str
    tpm: str
    concurrent: str
    used_requests: int
    used_tokens: int
    rpm_max: int | None
    tpm_max: int | None


@dataclass(frozen=True, slots=True)
class LimitsView:
    rows: list[LimitRow]
    remaining: str
    """What the limiter says now, e.g. "58 requests and 39,800 tokens left" (empty: no limit)."""


@dataclass(frozen=True, slots=True)
class UsagePage:
    title: str
    filters: Filters
    error: str
    stats: list[Stat]
    by_label: str
    period_label: str
    groups: list[GroupRow]
    requests: list[RequestRow]
    show_who: bool
    older_url: str
    newer_url: str
    data_url: str
    export_url: str
    limits: LimitsView | None


def _options(values: list[tuple[str, str]], selected: str) -> list[Option]:
    return [Option(v, label, v == selected) for v, label in values]


async def _filters(state: AppState, user: PortalUser, choice: Choice, keys: list[store.ApiKey]) -> Filters:
    settings = state.settings
    who = [("me", "Only me")]
    managed = (
        await store.list_projects(engine=state.engine, limit=500)
        if user.is_admin
        else await store.projects_managed_by(engine=state.engine, user_id=user.id)
    )
    if managed:
        who.append(("project", "A project"))
    if user.is_admin:
        who += [("everyone", "Everyone"), ("user", "A user"), ("group", "A group")]
    return Filters(
        choice=choice,
        who=_options(who, choice.who),
        groups=_options([("", "Choose a group")] + [(g.name, g.name) for g in settings.groups], choice.group),
        projects=_options(
            [("", "Choose a project")] + [(str(p.id), p.name) for p in managed], choice.project
        ),
        models=_options([("", "All models")] + [(m.name, m.name) for m in settings.models], choice.model),
        keys=_options([("", "All keys")] + [(k.id, key_label(k, k.id)) for k in keys], choice.key),
        periods=_options([(p, PERIOD_LABELS[p]) for p in PERIODS], choice.period),
        by=_options([(b, BY_LABELS[b]) for b in DIMENSIONS], choice.by),
        is_admin=user.is_admin,
    )


def _parse_before(value: str | None) -> tuple[datetime, int] | None:
    if not value:
        return None
    at, _, row_id = value.rpartition("_")
    try:
        parsed = datetime.fromisoformat(at)
        number = int(row_id)
        if not 0 <= number <= MAX_ID:
            raise ValueError(number)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)), number
    except ValueError:
        raise InvalidRequest("That page of requests does not exist.", param="before") from None


async def group_labels(
    state: AppState, by: str, groups: list[str], keys: list[store.ApiKey]
) -> dict[str, str]:
    if by == "source":
        return {g: SOURCE_LABELS.get(g, g) for g in groups}
    if by == "model":
        return {g: g for g in groups}
    known = {k.id: k for k in keys}
    missing = [g for g in groups if g not in known and g != NO_KEY]
    known.update(await store.keys_by_ids(engine=state.engine, key_ids=missing))
    return {g: key_label(known.get(g), g) for g in groups}


async def _request_rows(
    state: AppState, records: list[queries.StoredUsageRecord], keys: list[store.ApiKey]
) -> list[RequestRow]:
    names = await principal_names(state, {r.principal for r in records})
    known = {k.id: k for k in keys}
    missing = {r.key_id for r in records if r.key_id is not None and r.key_id not in known}
    known.update(await store.keys_by_ids(engine=state.engine, key_ids=missing))
    return [
        RequestRow(
            at=iso(r.created_at),
            at_text=r.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            who=names[r.principal],
            model=r.model,
            source=SOURCE_LABELS.get(r.source, r.source),
            key=key_label(known.get(r.key_id or ""), r.key_id),
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            estimated=r.estimated,
            coins=coins_text(r.cost_micro),
            status=outcome_label(r.status, r.error_code),
            ok=r.status < 400 or r.status == CLIENT_CLOSED,
        )
        for r in records
    ]


def _rates_text(value: int | None) -> str:
    return "no limit" if value is None else number(value)


async def limits_view(state: AppState, principal: Principal) -> LimitsView:
    """The principal's limits as the gate applies them, beside what it sent in the last minute."""
    gate = state.gate
    limits = gate.limits_of(principal)
    volume = await queries.recent_volume(
        engine=state.engine, principal=principal.id, since=datetime.now(UTC) - MINUTE
    )
    busiest_key = max(volume.by_key.values(), key=lambda t: t.requests, default=Totals())
    busiest_model = max(volume.by_model.values(), key=lambda t: t.requests, default=Totals())

    def row(scope: str, rates: Rates, used: Totals) -> LimitRow:
        return LimitRow(
            scope,
            _rates_text(rates.rpm),
            _rates_text(rates.tpm),
            _rates_text(rates.concurrent),
            used.requests,
            used.tokens,
            rates.rpm,
            rates.tpm,
        )

    everything = "All your requests together" if principal.kind == "user" else "All the project's requests"
    rows = [
        row(everything, limits.principal, volume.total),
        row("Each API key (the busiest one)", limits.key, busiest_key),
        row("Each model (the busiest one)", limits.model, busiest_model),
    ]
    for model in state.settings.models:
        own = gate.limits_of(principal, model.name).model
        if own != limits.model:
            rows.append(row(f"The model {model.name}", own, volume.by_model.get(model.name, Totals())))
    headers = await gate.peek_headers(principal)
    remaining = ""
    if limit_headers.REMAINING_REQUESTS in headers or limit_headers.REMAINING_TOKENS in headers:
        parts = []
        if limit_headers.REMAINING_REQUESTS in headers:
            parts.append(f"{number(int(headers[limit_headers.REMAINING_REQUESTS]))} requests")
        if limit_headers.REMAINING_TOKENS in headers:
            parts.append(f"{number(int(headers[limit_headers.REMAINING_TOKENS]))} tokens")
        remaining = " and ".join(parts) + " left right now"
    return LimitsView(rows, remaining)


@router.get("/usage")
async def usage_page(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    state = portal.state
    await state.recorder.flush()  # a request just made shows at once (this process's records)
    error, status = "", 200
    try:
        choice = Choice.parse(request.query_params)
    except InvalidRequest as exc:
        choice, error, status = Choice(), exc.message, exc.status
    scope: Scope | None = None
    if not error:
        try:
            scope = await resolve_scope(state, user, choice)
        except (NotFound, InvalidRequest) as exc:
            error, status = exc.message, exc.status
    keys = scope.keys if scope is not None else []
    filters = await _filters(state, user, choice, keys)
    page = UsagePage(
        title=scope.title if scope is not None else "Usage",
        filters=filters,
        error=error,
        stats=[],
        by_label=BY_LABELS[choice.by],
        period_label=PERIOD_LABELS[choice.period],
        groups=[],
        requests=[],
        show_who=choice.who in ("everyone", "group"),
        older_url="",
        newer_url="",
        data_url="",
        export_url="",
        limits=None,
    )
    if scope is not None:
        page = await _fill(state, request, choice, scope, page)
    return await portal.render(request, "usage.html", title="Usage", user=user, page=page, status_code=status)


async def _fill(
    state: AppState, request: Request, choice: Choice, scope: Scope, page: UsagePage
) -> UsagePage:
    series = await queries.usage_series(
        engine=state.engine, scope=scope.usage, period=choice.period, by=choice.by
    )
    labels = await group_labels(state, choice.by, series.groups, scope.keys)
    total = series.total
    before = _parse_before(request.query_params.get("before"))
    records = await queries.recent_requests(
        engine=state.engine, scope=scope.usage, limit=PAGE_SIZE + 1, before=before
    )
    older = ""
    if len(records) > PAGE_SIZE:
        records = records[:PAGE_SIZE]
        last = records[-1]
        older = "/usage?" + choice.query(before=f"{iso(last.created_at)}_{last.id}")
    return UsagePage(
        title=page.title,
        filters=page.filters,
        error="",
        stats=[
            Stat("Requests", number(total.requests)),
            Stat("Input tokens", number(total.prompt_tokens)),
            Stat("Output tokens", number(total.completion_tokens)),
            Stat("Coins", coins_text(total.cost_micro)),
        ],
        by_label=page.by_label,
        period_label=page.period_label,
        groups=[_group_row(labels[g], series.group_total(g)) for g in series.groups],
        requests=await _request_rows(state, records, scope.keys),
        show_who=page.show_who,
        older_url=older,
        newer_url="/usage?" + choice.query() if before is not None else "",
        data_url="/usage/data?" + choice.query(),
        export_url="/usage/export.csv?" + choice.query(),
        limits=await limits_view(state, scope.principal) if scope.principal is not None else None,
    )


def _group_row(label: str, totals: Totals) -> GroupRow:
    return GroupRow(
        label,
        number(totals.requests),
        number(totals.prompt_tokens),
        number(totals.completion_tokens),
        coins_text(totals.cost_micro),
    )


# --- data for the chart, and the CSV export ---------------------------------------------------------


def chart_data(series: Series, labels: dict[str, str]) -> dict[str, Any]:
    """The chart's datasets: the biggest groups, the rest as "other", per bucket."""
    shown = series.groups[:TOP_GROUPS]
    rest = series.groups[TOP_GROUPS:]

    def values(groups: list[str]) -> dict[str, list[int | float]]:
        cells = [sum((series.cell(b, g) for g in groups), Totals()) for b in series.buckets]
        return {
            "requests": [c.requests for c in cells],
            "tokens": [c.tokens for c in cells],
            "coins": [c.cost_micro / 1_000_000 for c in cells],
        }

    datasets = [{"label": labels.get(g, g), **values([g])} for g in shown]
    if rest:
        datasets.append({"label": f"{len(rest)} others", **values(rest)})
    total = series.total
    return {
        "period": series.period,
        "by": series.by,
        "buckets": series.buckets,
        "labels": [bucket_label(series.period, b) for b in series.buckets],
        "datasets": datasets,
        "totals": {
            "requests": total.requests,
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "coins": str(Decimal(total.cost_micro) / 1_000_000),
        },
    }


@router.get("/usage/data")
async def usage_data(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    state = portal.state
    await state.recorder.flush()
    choice = Choice.parse(request.query_params)
    scope = await resolve_scope(state, user, choice)
    series = await queries.usage_series(
        engine=state.engine, scope=scope.usage, period=choice.period, by=choice.by
    )
    labels = await group_labels(state, choice.by, series.groups, scope.keys)
    return JSONResponse(chart_data(series, labels))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        # A spreadsheet would run a cell starting with these as a formula (CSV injection).
        return "'" + value
    return value


async def _csv(
    state: AppState, rows: AsyncIterator[list[dict[str, Any]]], columns: Sequence[str]
) -> AsyncIterator[str]:
    header = [*columns, "cost_coins", "who", "outcome"]
    names: dict[str, str] = {}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    yield buffer.getvalue()
    async for batch in rows:
        buffer.seek(0)
        buffer.truncate()
        unknown = {row["principal"] for row in batch} - names.keys()
        if unknown:
            names.update(await principal_names(state, unknown))
        for row in batch:
            cost = Decimal(row["cost_micro"]) / 1_000_000
            values = [_cell(row[c]) for c in columns]
            outcome = outcome_label(row["status"], row["error_code"])
            writer.writerow([*values, format(cost, "f"), _cell(names[row["principal"]]), outcome])
        yield buffer.getvalue()


@router.get("/usage/export.csv")
async def usage_export(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    """Every request of the page's scope and period as CSV, streamed in batches."""
    state = portal.state
    await state.recorder.flush()
    choice = Choice.parse(request.query_params)
    scope = await resolve_scope(state, user, choice)
    since, _ = queries.window(choice.period, datetime.now(UTC))
    # Endpoint labels (URLs of internal hosts) are for administrators only.
    columns = queries.ADMIN_EXPORT_COLUMNS if user.is_admin else queries.EXPORT_COLUMNS
    rows = queries.export_rows(engine=state.engine, scope=scope.usage, since=since, columns=columns)
    filename = f"lumen-usage-{choice.who}-{choice.period}-{datetime.now(UTC):%Y%m%d}.csv"
    return StreamingResponse(
        _csv(state, rows, columns),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )
