"""The Admin pages (administrators only): users, groups and their resolved policies, models and the
health of their endpoints, the effective configuration with secrets masked, and the audit log.

The pages read; their buttons change things through the admin API (`/api/admin`, with the
session and its CSRF token: `static/js/admin.js`), so every change runs the admin API's code and
leaves its entry in the audit log. Policies are shown as the request path resolves them: pools by
the gate's resolver, rate limits by `Gate.limits_of`, access by `lumen.access.policy.decide`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import yaml
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from lumen.access.policy import Status, decide
from lumen.admin import audit_log
from lumen.api.params import MAX_ID, bounded_offset
from lumen.billing.pools import PoolParams
from lumen.errors import InvalidRequest
from lumen.identity import store
from lumen.identity.groups import GroupSettings, member_groups, user_groups
from lumen.identity.principal import Principal
from lumen.limits import EffectiveLimits, Rates
from lumen.portal.deps import AdminUser, PortalDep, PortalUser
from lumen.portal.pages import Balance
from lumen.portal.routes.usage import coins_text, number, principal_names, when_text
from lumen.settings import Settings
from lumen.state import AppState
from lumen.usage.queries import Totals, UsageScope, totals_by_principal, usage_series

if TYPE_CHECKING:
    from lumen.portal.app import Portal

router = APIRouter()

PAGE_SIZE = 25
USAGE_DAYS = 30
TABS = (
    ("users", "Users", "/admin"),
    ("groups", "Groups", "/admin/groups"),
    ("models", "Models", "/admin/models"),
    ("config", "Configuration", "/admin/config"),
    ("audit", "Audit log", "/admin/audit"),
)
SORTS = {"email": "User", "name": "Name", "created_at": "Joined", "last_login_at": "Last login"}
SORTED_COLUMNS = ("email", "created_at", "last_login_at")
"""The table's sortable columns, in order (the name is shown under the email, sorted by `?sort=name`)."""
MASK = "********"


@dataclass(frozen=True, slots=True)
class Tab:
    label: str
    href: str
    current: bool


def tabs(current: str) -> list[Tab]:
    return [Tab(label, href, key == current) for key, label, href in TABS]


async def _render(
    request: Request, portal: Portal, user: PortalUser, template: str, title: str, page: Any
) -> Response:
    return await portal.render(request, template, title=f"Admin: {title}", user=user, page=page)


# --- users -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortLink:
    label: str
    href: str
    aria_sort: str
    """`ascending`, `descending` or `none` (for the column header's aria-sort)."""


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    email: str
    name: str
    is_admin: bool
    disabled: bool
    joined: str
    last_login: str
    balance: str
    balance_state: str
    is_you: bool
    """The administrator looking: they cannot disable themselves here (and lock everyone out)."""
    requests: str
    coins: str
    usage_url: str


@dataclass(frozen=True, slots=True)
class UsersPage:
    tabs: list[Tab]
    search: str
    sort: str
    descending: bool
    columns: list[SortLink]
    users: list[UserRow]
    total: int
    first: int
    last: int
    older_url: str
    newer_url: str


def _users_url(search: str, sort: str, descending: bool, offset: int = 0) -> str:
    query = {"q": search, "sort": sort, "dir": "desc" if descending else "", "offset": offset or ""}
    encoded = urlencode({k: v for k, v in query.items() if v})
    return "/admin" + (f"?{encoded}" if encoded else "")


async def user_balance(state: AppState, user: store.User, claims: dict[str, Any] | None) -> Balance:
    groups = member_groups(state.settings.groups, kind="user", name=user.email, claims=claims)
    view = await state.bank.balance(user.principal, params=state.gate.pool_params(groups))
    params = view.params
    return Balance(params.state, view.available_micro, params.max_micro, params.refresh_micro)


@router.get("/admin")
async def users_page(request: Request, user: AdminUser, portal: PortalDep) -> Response:
    state = portal.state
    engine = state.engine
    await state.recorder.flush()
    params = request.query_params
    search = (params.get("q") or "").strip()[:200]
    sort = params.get("sort") or "email"
    if sort not in SORTS:
        sort = "email"
    descending = params.get("dir") == "desc"
    offset = bounded_offset(params.get("offset"))
    found = await store.list_users(
        engine=engine, search=search, limit=PAGE_SIZE, offset=offset, sort=sort, descending=descending
    )
    total = await store.count_matching_users(engine=engine, search=search)
    ids = [u.id for u in found]
    claims = await store.user_claims(engine=engine, user_ids=ids)
    logins = await store.last_logins(engine=engine, user_ids=ids)
    since = datetime.now(UTC) - timedelta(days=USAGE_DAYS)
    usage = await totals_by_principal(engine=engine, principals=[u.principal for u in found], since=since)
    rows = []
    for u in found:
        balance = await user_balance(state, u, claims.get(u.id, ("", None))[1])
        totals = usage.get(u.principal, Totals())
        rows.append(
            UserRow(
                id=u.id,
                email=u.email,
                name=u.name,
                is_admin=u.is_admin or u.email in {a.lower() for a in state.settings.admins},
                disabled=u.disabled,
                joined=u.created_at.astimezone(UTC).strftime("%Y-%m-%d"),
                last_login=when_text(logins.get(u.id)),
                balance=balance.text,
                balance_state=balance.state,
                is_you=u.id == user.id,
                requests=number(totals.requests),
                coins=coins_text(totals.cost_micro),
                usage_url="/usage?" + urlencode({"who": "user", "user": u.email, "period": "month"}),
            )
        )
    columns = [
        SortLink(
            label,
            _users_url(search, key, not descending if key == sort else False),
            ("descending" if descending else "ascending") if key == sort else "none",
        )
        for key, label in SORTS.items()
        if key in SORTED_COLUMNS
    ]
    page = UsersPage(
        tabs=tabs("users"),
        search=search,
        sort=sort,
        descending=descending,
        columns=columns,
        users=rows,
        total=total,
        first=offset + 1 if rows else 0,
        last=offset + len(rows),
        older_url=_users_url(search, sort, descending, offset + PAGE_SIZE)
        if offset + PAGE_SIZE < total
        else "",
        newer_url=_users_url(search, sort, descending, max(offset - PAGE_SIZE, 0)) if offset > 0 else "",
    )
    return await _render(request, portal, user, "admin_users.html", "Users", page)


@router.get("/admin/users")
async def users_alias(_: AdminUser) -> Response:
    return RedirectResponse("/admin", status_code=308)


# --- groups ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelAccessLine:
    status: str
    models: list[str]


@dataclass(frozen=True, slots=True)
class LimitLine:
    scope: str
    rpm: str
    tpm: str
    concurrent: str


@dataclass(frozen=True, slots=True)
class GroupView:
    name: str
    description: str
    members: list[str]
    member_count: int
    projects: list[str]
    rules: list[str]
    access_rule: str
    access: list[ModelAccessLine]
    pool_own: str
    pool: str
    limits: list[LimitLine]
    usage_url: str


@dataclass(frozen=True, slots=True)
class GroupsPage:
    tabs: list[Tab]
    groups: list[GroupView]
    default: GroupView


STATUS_LABELS = {
    Status.ALLOWED: "Allowed",
    Status.NEEDS_ACK: "Allowed after acknowledging the notice",
    Status.REFUSED: "Not allowed (listed as such)",
    Status.HIDDEN: "Hidden",
}


def pool_text(params: PoolParams) -> str:
    if params.state == "unlimited":
        return "Unlimited"
    if params.state == "blocked":
        return "Blocked (no coins)"
    return (
        f"Up to {coins_text(params.max_micro)} coins, refilled {coins_text(params.refresh_micro)} an hour, "
        f"starting with {coins_text(params.starting_micro)}"
    )


def _rates(value: int | None) -> str:
    return "no limit" if value is None else number(value)


def limit_lines(limits: EffectiveLimits) -> list[LimitLine]:
    def line(scope: str, rates: Rates) -> LimitLine:
        return LimitLine(scope, _rates(rates.rpm), _rates(rates.tpm), _rates(rates.concurrent))

    return [
        line("All of a member's requests", limits.principal),
        line("Each API key", limits.key),
        line("Each model, per member", limits.model),
    ]


def access_lines(settings: Settings, group: GroupSettings | None) -> list[ModelAccessLine]:
    """What a member of only this group (or of no group) may do with each model, by the policy
    the request path runs (`decide`), before any rule of the member's own."""
    rules = {group.name: group.access} if group is not None and group.access is not None else {}
    by_status: dict[Status, list[str]] = {}
    for model in settings.models:
        decision = decide(model, None, rules, settings.access)
        by_status.setdefault(decision.status, []).append(model.name)
    return [ModelAccessLine(STATUS_LABELS[s], by_status[s]) for s in Status if s in by_status]


def _rule_text(group: GroupSettings) -> list[str]:
    texts = []
    for rule in group.rules:
        if rule.equals is not None:
            texts.append(f"{rule.claim} is “{rule.equals}”")
        elif rule.one_of is not None:
            texts.append(f"{rule.claim} is one of {', '.join(rule.one_of)}")
        else:
            texts.append(f"{rule.claim} matches /{rule.pattern}/")
    return texts


def _access_rule_text(group: GroupSettings | None) -> str:
    if group is None or group.access is None or group.access.is_empty():
        return "No rule of its own"
    rule = group.access
    parts = []
    if rule.default:
        parts.append(f"default {rule.default}")
    if rule.allow:
        parts.append(f"allow {', '.join(rule.allow)}")
    if rule.block:
        parts.append(f"block {', '.join(rule.block)}")
    return "; ".join(parts)


@router.get("/admin/groups")
async def groups_page(request: Request, user: AdminUser, portal: PortalDep) -> Response:
    state = portal.state
    settings = state.settings
    everyone = await store.user_claims(engine=state.engine)
    views = []
    for group in settings.groups:
        members = [email for email, claims in everyone.values() if user_groups([group], email, claims)]
        views.append(
            GroupView(
                name=group.name,
                description=group.description,
                members=sorted(members)[:20],
                member_count=len(members),
                projects=list(group.projects),
                rules=_rule_text(group),
                access_rule=_access_rule_text(group),
                access=access_lines(settings, group),
                pool_own="Its own pool" if group.pool is not None else "No pool of its own",
                pool=pool_text(state.gate.pool_params((group.name,))),
                limits=limit_lines(
                    state.gate.limits_of(
                        Principal(id=f"group:{group.name}", kind="user", groups=(group.name,))
                    )
                ),
                usage_url="/usage?" + urlencode({"who": "group", "group": group.name, "period": "month"}),
            )
        )
    default = GroupView(
        name="Everyone (no group)",
        description="What a user or project in no group gets: the global defaults.",
        members=[],
        member_count=sum(
            1 for email, claims in everyone.values() if not user_groups(settings.groups, email, claims)
        ),
        projects=[],
        rules=[],
        access_rule=f"global default {settings.access.default}",
        access=access_lines(settings, None),
        pool_own="The default pool (billing.default_pool)",
        pool=pool_text(state.gate.pool_params(())),
        limits=limit_lines(state.gate.limits_of(Principal(id="group:", kind="user"))),
        usage_url="",
    )
    page = GroupsPage(tabs=tabs("groups"), groups=views, default=default)
    return await _render(request, portal, user, "admin_groups.html", "Groups", page)


# --- models ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointView:
    label: str
    type: str
    weight: int
    up: bool
    state: str
    failures: int
    last_error: str
    last_checked: str
    in_flight: int
    served: int


@dataclass(frozen=True, slots=True)
class ModelView:
    name: str
    kind: str
    enabled: bool
    price: str
    context: str
    access: str
    requests_day: str
    tokens_day: str
    endpoints: list[EndpointView]
    healthy: int


@dataclass(frozen=True, slots=True)
class ModelsPage:
    tabs: list[Tab]
    models: list[ModelView]


@router.get("/admin/models")
async def models_page(request: Request, user: AdminUser, portal: PortalDep) -> Response:
    state = portal.state
    await state.recorder.flush()
    day = await usage_series(engine=state.engine, scope=UsageScope(), period="day", by="model")
    views = []
    for settings in state.settings.models:
        model = state.registry.get(settings.name)
        endpoints = []
        for endpoint in model.endpoints if model is not None else ():
            up = endpoint.is_up()
            endpoints.append(
                EndpointView(
                    label=endpoint.label,
                    type=endpoint.settings.type,
                    weight=endpoint.weight,
                    up=up,
                    state="healthy"
                    if up and endpoint.consecutive_failures == 0
                    else "down"
                    if not up
                    else "recovering",
                    failures=endpoint.consecutive_failures,
                    last_error=endpoint.last_error or "",
                    last_checked=when_text(
                        datetime.fromtimestamp(endpoint.last_checked, UTC) if endpoint.last_checked else None
                    ),
                    in_flight=endpoint.in_flight,
                    served=endpoint.served,
                )
            )
        price = settings.price
        totals = day.group_total(settings.name)
        access: str = settings.access.access or "by the defaults"
        if settings.access.acknowledge:
            access += ", needs acknowledgement"
        views.append(
            ModelView(
                name=settings.name,
                kind=settings.kind,
                enabled=settings.enabled,
                price=f"{price.input:g} in / {price.output:g} out",
                context=number(settings.capabilities.context_window)
                if settings.capabilities.context_window
                else "—",
                access=access,
                requests_day=number(totals.requests),
                tokens_day=number(totals.tokens),
                endpoints=endpoints,
                healthy=sum(1 for e in endpoints if e.up),
            )
        )
    page = ModelsPage(tabs=tabs("models"), models=views)
    return await _render(request, portal, user, "admin_models.html", "Models", page)


# --- the effective configuration -----------------------------------------------------------------


_SECRET_NAME = re.compile(
    r"(secret|password|passwd|token|api_key|apikey|credential|authorization|cookie)", re.I
)
_URL_CREDENTIALS = re.compile(r"(?<=//)[^/@\s]+@")
_QUERY_SECRET = re.compile(
    r"(?<=[?&])((?:api[_-]?key|key|token|secret|password|access_token)=)[^&#\s]+", re.I
)


def _secret_name(name: str) -> bool:
    # `api_key_env` and `client_secret_env` name environment variables: they are not secrets.
    return bool(_SECRET_NAME.search(name)) and not name.endswith("_env")


def mask(value: Any, name: str = "") -> Any:
    """The config with every secret replaced: SecretStr fields (already `**********` in a JSON
    dump), fields named like secrets, every value of a `headers` map, and credentials inside URLs."""
    if isinstance(value, dict):
        if name == "headers":
            return {k: MASK for k in value}
        return {k: mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, name) for v in value]
    if isinstance(value, str):
        if value and _secret_name(name):
            return MASK
        return _QUERY_SECRET.sub(r"\1" + MASK, _URL_CREDENTIALS.sub("***@", value))
    return value


@dataclass(frozen=True, slots=True)
class Fact:
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class ConfigPage:
    tabs: list[Tab]
    branding: list[Fact]
    footer_links: list[Fact]
    source: str
    yaml: str


@router.get("/admin/config")
async def config_page(request: Request, user: AdminUser, portal: PortalDep) -> Response:
    state = portal.state
    settings = state.settings
    branding = settings.portal
    dumped = mask(settings.model_dump(mode="json"))
    page = ConfigPage(
        tabs=tabs("config"),
        branding=[
            Fact("Instance name", branding.instance_name),
            Fact("Logo", branding.logo or "Lumen's own"),
            Fact("Accent colour (light mode)", branding.accent_color),
            Fact("Accent colour (dark mode)", branding.accent_color_dark),
            Fact("Announcement banner", branding.announcement or "none"),
            Fact("Users may create projects", "yes" if branding.users_create_projects else "no"),
        ],
        footer_links=[Fact(link.text, link.url) for link in branding.footer_links],
        source=str(state.config_path) if state.config_path else "the embedded default (no config file)",
        yaml=yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True, width=100),
    )
    return await _render(request, portal, user, "admin_config.html", "Configuration", page)


# --- the audit log -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: str
    at_text: str
    actor: str
    action: str
    target: str
    target_url: str
    details: str


@dataclass(frozen=True, slots=True)
class AuditPage:
    tabs: list[Tab]
    rows: list[AuditRow]
    action: str
    target: str
    older_url: str
    newest_url: str


async def _target_names(state: AppState, targets: set[str]) -> dict[str, tuple[str, str]]:
    """Each target as text and a link: a user's email (their usage), a project's name (its page)."""
    names = await principal_names(state, {t for t in targets if t.startswith(("user:", "project:"))})
    keys = await store.keys_by_ids(
        engine=state.engine, key_ids=[t[4:] for t in targets if t.startswith("key:")]
    )
    found: dict[str, tuple[str, str]] = {}
    for target in targets:
        kind, _, ident = target.partition(":")
        if kind == "user":
            email = names.get(target, target)
            found[target] = (email, "/usage?" + urlencode({"who": "user", "user": email}))
        elif kind == "project":
            found[target] = (names.get(target, target), f"/projects/{ident}")
        elif kind == "key" and ident in keys:
            key = keys[ident]
            found[target] = (f"key {key.name or ident} ({key.hint})", "")
        else:
            found[target] = (target, "")
    return found


@router.get("/admin/audit")
async def audit_page(request: Request, user: AdminUser, portal: PortalDep) -> Response:
    state = portal.state
    params = request.query_params
    action = (params.get("action") or "").strip()[:100]
    target = (params.get("target") or "").strip()[:200]
    try:
        before = int(params["before"]) if params.get("before") else None
        if before is not None and not 1 <= before <= MAX_ID:
            raise ValueError(before)
    except ValueError:
        raise InvalidRequest("That page of the audit log does not exist.", param="before") from None
    entries = await audit_log.entries(
        engine=state.engine,
        limit=PAGE_SIZE * 2 + 1,
        before=before,
        action=action or None,
        target=target or None,
    )
    more = len(entries) > PAGE_SIZE * 2
    entries = entries[: PAGE_SIZE * 2]
    targets = await _target_names(state, {e.target for e in entries})
    rows = [
        AuditRow(
            id=e.id,
            at=e.created_at.astimezone(UTC).isoformat(),
            at_text=e.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            actor=e.actor_name or e.actor,
            action=e.action,
            target=targets[e.target][0],
            target_url=targets[e.target][1],
            details=json.dumps(e.details, ensure_ascii=False, sort_keys=True),
        )
        for e in entries
    ]
    filters = {"action": action, "target": target}
    older = ""
    if more:
        older = "/admin/audit?" + urlencode(
            {**{k: v for k, v in filters.items() if v}, "before": entries[-1].id}
        )
    newest = "/admin/audit" + (
        "?" + urlencode({k: v for k, v in filters.items() if v}) if action or target else ""
    )
    page = AuditPage(
        tabs=tabs("audit"),
        rows=rows,
        action=action,
        target=target,
        older_url=older,
        newest_url=newest if before is not None else "",
    )
    return await _render(request, portal, user, "admin_audit.html", "Audit log", page)
