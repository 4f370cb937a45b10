"""The Projects pages: the projects a person owns or manages (administrators: all), and one
project's people, API keys, acknowledgements, coins and usage.

Who may do what: a project's owner and managers see it and run its keys and acknowledgements; the
owner (and administrators) also add and remove managers and hand the ownership on; administrators
also disable it. Anyone else is told the project does not exist (404), the same as for an unknown
id. Every change goes through the identity store, the access resolver and the bank, as in the
admin API, and leaves an entry in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from lumen.access import store as access_store
from lumen.access.policy import Status
from lumen.actions import keys as key_actions
from lumen.actions.accounts import set_project_disabled
from lumen.actions.context import Actor
from lumen.actions.faces import server_services
from lumen.api.params import IdPath, bounded_offset
from lumen.errors import InvalidRequest, LumenError, NotFound, PermissionDenied
from lumen.identity import store
from lumen.identity.groups import member_groups
from lumen.identity.principal import Principal
from lumen.portal.deps import CurrentUser, PortalDep, PortalUser
from lumen.portal.pages import Balance
from lumen.portal.routes.profile import KeyForm, _coin_cap, _expiry, key_state
from lumen.portal.routes.usage import Stat, coins_text, number, principal_names, visible_project, when_text
from lumen.usage.queries import Totals, recent_volume, totals_by_principal

if TYPE_CHECKING:
    from lumen.portal.app import Portal

router = APIRouter()

NAME_MAX = 100
PAGE_SIZE = 50
USAGE_DAYS = 30
MESSAGES = {
    "created": "The project is created. Add managers and create its API keys below.",
    "manager_added": "The manager is added.",
    "manager_removed": "The manager is removed.",
    "owner_changed": "The ownership is handed on. The previous owner stays a manager.",
    "key_revoked": "The key is revoked: programs using it are refused from now on.",
    "acknowledged": "The notice is acknowledged for the project.",
    "disabled": "The project is disabled: its keys are refused until it is enabled again.",
    "enabled": "The project is enabled again.",
}


# --- the list ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProjectRow:
    id: int
    name: str
    owner: str
    managers: int
    disabled: bool
    role: str
    requests: str
    coins: str


@dataclass(frozen=True, slots=True)
class CreateForm:
    name: str = ""
    description: str = ""
    owner: str = ""


@dataclass(frozen=True, slots=True)
class ProjectsPage:
    projects: list[ProjectRow]
    can_create: bool
    is_admin: bool
    form: CreateForm = field(default_factory=CreateForm)
    error: str = ""
    older_url: str = ""
    newer_url: str = ""
    total: int = 0
    name_max: int = NAME_MAX


def can_create(portal: Portal, user: PortalUser) -> bool:
    return user.is_admin or portal.settings.users_create_projects


async def _list_page(
    request: Request,
    user: PortalUser,
    portal: Portal,
    *,
    form: CreateForm | None = None,
    error: str = "",
    status: int = 200,
) -> Response:
    engine = portal.state.engine
    await portal.state.recorder.flush()
    offset = 0
    total = 0
    if user.is_admin:
        offset = bounded_offset(request.query_params.get("offset"))
        found = await store.list_projects(engine=engine, limit=PAGE_SIZE, offset=offset)
        total = await store.count_projects(engine=engine)
    else:
        found = await store.projects_managed_by(engine=engine, user_id=user.id)
        total = len(found)
    since = datetime.now(UTC) - timedelta(days=USAGE_DAYS)
    usage = await totals_by_principal(engine=engine, principals=[p.principal for p in found], since=since)
    owners = await store.users_by_ids(engine=engine, user_ids=[p.owner_id for p in found])
    rows = []
    for project in found:
        managers = await store.project_managers_of(engine=engine, project_id=project.id)
        role = (
            "owner" if project.owner_id == user.id else "manager" if user.id in managers else "administrator"
        )
        totals = usage.get(project.principal, Totals())
        owner = owners.get(project.owner_id)
        rows.append(
            ProjectRow(
                id=project.id,
                name=project.name,
                owner=owner.email if owner else f"user {project.owner_id}",
                managers=len(managers),
                disabled=project.disabled,
                role=role,
                requests=number(totals.requests),
                coins=coins_text(totals.cost_micro),
            )
        )
    page = ProjectsPage(
        projects=rows,
        can_create=can_create(portal, user),
        is_admin=user.is_admin,
        form=form or CreateForm(owner=user.email),
        error=error,
        older_url=f"/projects?offset={offset + PAGE_SIZE}" if offset + PAGE_SIZE < total else "",
        newer_url=f"/projects?offset={max(offset - PAGE_SIZE, 0)}" if offset > 0 else "",
        total=total,
    )
    return await portal.render(
        request, "projects.html", title="Projects", user=user, page=page, status_code=status
    )


@router.get("/projects")
async def projects_list(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    return await _list_page(request, user, portal)


@router.post("/projects")
async def create_project(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    if not can_create(portal, user):
        raise PermissionDenied(
            "Only administrators can create projects on this instance.", code="admin_required"
        )
    data = await request.form()
    form = CreateForm(
        name=str(data.get("name") or "").strip(),
        description=str(data.get("description") or "").strip(),
        owner=str(data.get("owner") or "").strip() if user.is_admin else user.email,
    )
    engine = portal.state.engine
    try:
        if not form.name:
            raise InvalidRequest("Give the project a name.", param="name")
        if len(form.name) > NAME_MAX:
            raise InvalidRequest(f"The name can have at most {NAME_MAX} characters.", param="name")
        owner = await store.find_user(engine=engine, email=form.owner or user.email)
        project = await store.create_project(
            engine=engine, name=form.name, owner_id=owner.id, description=form.description
        )
    except (InvalidRequest, NotFound) as exc:
        return await _list_page(request, user, portal, form=form, error=exc.message, status=exc.status)
    await _audit(
        portal,
        user,
        "project.create",
        project.principal,
        {"name": project.name, "owner": owner.email, "description": project.description},
    )
    return RedirectResponse(f"/projects/{project.id}?done=created", status_code=303)


# --- one project -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Role:
    is_admin: bool
    is_owner: bool
    is_manager: bool

    @property
    def manages_people(self) -> bool:
        return self.is_admin or self.is_owner

    @property
    def name(self) -> str:
        if self.is_owner:
            return "owner"
        return "manager" if self.is_manager else "administrator"


@dataclass(frozen=True, slots=True)
class Person:
    id: int
    email: str
    name: str
    is_owner: bool


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    name: str
    hint: str
    state: str
    created: str
    last_used: str
    expires: str
    models: str
    requests: str
    coins: str


@dataclass(frozen=True, slots=True)
class AckRow:
    model: str
    acknowledged: bool
    notice: str
    notice_hash: str
    when: str
    by: str


@dataclass(frozen=True, slots=True)
class ProjectPage:
    project: store.Project
    role: Role
    owner: str
    balance: Balance
    max_coins: str
    refill: str
    stats: list[Stat]
    usage_url: str
    people: list[Person]
    keys: list[KeyRow]
    models: list[str]
    acks: list[AckRow]
    groups: tuple[str, ...]
    message: str = ""
    error: str = ""
    created_key: str = ""
    created_key_name: str = ""
    key_form: KeyForm = field(default_factory=KeyForm)
    today: str = ""
    name_max: int = NAME_MAX


async def _project_and_role(portal: Portal, user: PortalUser, project_id: int) -> tuple[store.Project, Role]:
    project = await visible_project(portal.state, user, str(project_id))
    managers = await store.project_managers_of(engine=portal.state.engine, project_id=project.id)
    return project, Role(user.is_admin, project.owner_id == user.id, user.id in managers)


def project_principal(portal: Portal, project: store.Project) -> Principal:
    """The principal the project's keys get: what its access, pool and limits are resolved for."""
    groups = member_groups(portal.state.settings.groups, kind="project", name=project.name, claims=None)
    return Principal(id=project.principal, kind="project", name=project.name, groups=groups)


async def _detail(
    request: Request,
    user: PortalUser,
    portal: Portal,
    project: store.Project,
    role: Role,
    *,
    error: str = "",
    status: int = 200,
    created_key: tuple[str, str] | None = None,
    key_form: KeyForm | None = None,
) -> Response:
    state = portal.state
    engine = state.engine
    await state.recorder.flush()  # the usage columns include a request just made
    principal = project_principal(portal, project)
    view = await state.bank.balance(principal.id, params=state.gate.pool_params(principal.groups))
    params = view.params
    balance = Balance(params.state, view.available_micro, params.max_micro, params.refresh_micro)

    since = datetime.now(UTC) - timedelta(days=USAGE_DAYS)
    volume = await recent_volume(engine=engine, principal=principal.id, since=since)
    total = volume.total

    manager_ids = await store.project_managers_of(engine=engine, project_id=project.id)
    people_found = await store.users_by_ids(engine=engine, user_ids=[*manager_ids, project.owner_id])
    people = sorted(
        (Person(u.id, u.email, u.name, u.id == project.owner_id) for u in people_found.values()),
        key=lambda p: (not p.is_owner, p.email),
    )

    keys = await store.list_keys(engine=engine, owner_kind="project", owner_id=project.id)
    now = datetime.now(UTC)
    key_rows = [
        KeyRow(
            id=k.id,
            name=k.name or "unnamed key",
            hint=k.hint,
            state=key_state(k, now),
            created=when_text(k.created_at),
            last_used=when_text(k.last_used_at),
            expires=when_text(k.expires_at) if k.expires_at else "never",
            models=", ".join(k.models) if k.models else "all the project may use",
            requests=number(volume.by_key.get(k.id, Totals()).requests),
            coins=coins_text(volume.by_key.get(k.id, Totals()).cost_micro),
        )
        for k in sorted(keys, key=lambda k: (k.revoked_at is not None, -k.created_at.timestamp()))
    ]

    access = await state.access.resolve(principal.id, principal.groups)
    records = {
        (a.model, a.notice_hash): a
        for a in await access_store.acknowledgements(engine=engine, principal=principal.id)
    }
    names = await principal_names(state, {a.acknowledged_by for a in records.values()})
    acks = []
    for decision in access.decisions.values():
        if decision.notice is None or decision.status not in (Status.ALLOWED, Status.NEEDS_ACK):
            continue
        record = records.get((decision.model, decision.notice_hash or ""))
        acks.append(
            AckRow(
                model=decision.model,
                acknowledged=decision.acknowledged,
                notice=decision.notice,
                notice_hash=decision.notice_hash or "",
                when=when_text(record.acknowledged_at) if record else "",
                by=names.get(record.acknowledged_by, "") if record else "",
            )
        )
    owner = people_found.get(project.owner_id)
    done = request.query_params.get("done", "")
    page = ProjectPage(
        project=project,
        role=role,
        owner=owner.email if owner else f"user {project.owner_id}",
        balance=balance,
        max_coins=coins_text(params.max_micro),
        refill=coins_text(params.refresh_micro),
        stats=[
            Stat(f"Requests, last {USAGE_DAYS} days", number(total.requests)),
            Stat("Tokens", number(total.tokens)),
            Stat("Coins spent", coins_text(total.cost_micro)),
        ],
        usage_url=f"/usage?who=project&project={project.id}&period=month",
        people=people,
        keys=key_rows,
        models=[d.model for d in access.listed()],
        acks=acks,
        groups=principal.groups,
        message=MESSAGES.get(done, ""),
        error=error,
        created_key=created_key[1] if created_key else "",
        created_key_name=created_key[0] if created_key else "",
        key_form=key_form or KeyForm(),
        today=now.date().isoformat(),
    )
    return await portal.render(
        request, "project.html", title=project.name, user=user, page=page, status_code=status
    )


@router.get("/projects/{project_id}")
async def project_page(
    project_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep
) -> Response:
    project, role = await _project_and_role(portal, user, project_id)
    return await _detail(request, user, portal, project, role)


def _back(project: store.Project, done: str) -> Response:
    return RedirectResponse(f"/projects/{project.id}?done={done}", status_code=303)


async def _audit(portal: Portal, user: PortalUser, action: str, target: str, details: dict[str, Any]) -> None:
    await server_services(portal.state).audit(_actor(user), action, target, details)


def _actor(user: PortalUser) -> Actor:
    return Actor.of(user.principal, "portal")


def _require_people_rights(role: Role) -> None:
    if not role.manages_people:
        raise PermissionDenied("Only the project's owner or an administrator can change its managers.")


@router.post("/projects/{project_id}/managers")
async def add_manager(project_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    project, role = await _project_and_role(portal, user, project_id)
    _require_people_rights(role)
    email = str((await request.form()).get("email") or "").strip()
    try:
        if not email:
            raise InvalidRequest("Enter the email of the person to add.", param="email")
        added = await store.find_user(engine=portal.state.engine, email=email)
        await store.add_manager(engine=portal.state.engine, project_id=project.id, user_id=added.id)
    except (InvalidRequest, NotFound) as exc:
        message = exc.message
        if isinstance(exc, NotFound):
            message += " They must log in to Lumen once before they can be added."
        return await _detail(request, user, portal, project, role, error=message, status=exc.status)
    await _audit(
        portal, user, "project.add_manager", project.principal, {"user_id": added.id, "email": added.email}
    )
    return _back(project, "manager_added")


@router.post("/projects/{project_id}/managers/{user_id}/remove")
async def remove_manager(
    project_id: IdPath, user_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep
) -> Response:
    project, role = await _project_and_role(portal, user, project_id)
    _require_people_rights(role)
    try:
        await store.remove_manager(engine=portal.state.engine, project_id=project.id, user_id=user_id)
    except InvalidRequest as exc:
        return await _detail(request, user, portal, project, role, error=exc.message, status=exc.status)
    await _audit(portal, user, "project.remove_manager", project.principal, {"user_id": user_id})
    return _back(project, "manager_removed")


@router.post("/projects/{project_id}/owner")
async def transfer(project_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    project, role = await _project_and_role(portal, user, project_id)
    if not role.manages_people:
        raise PermissionDenied("Only the project's owner or an administrator can hand the ownership on.")
    email = str((await request.form()).get("email") or "").strip()
    try:
        if not email:
            raise InvalidRequest("Enter the email of the new owner.", param="email")
        new_owner = await store.find_user(engine=portal.state.engine, email=email)
        await store.transfer_project(
            engine=portal.state.engine, project_id=project.id, new_owner_id=new_owner.id
        )
    except (InvalidRequest, NotFound) as exc:
        return await _detail(request, user, portal, project, role, error=exc.message, status=exc.status)
    await _audit(
        portal, user, "project.transfer", project.principal, {"from": project.owner_id, "to": new_owner.id}
    )
    return _back(project, "owner_changed")


@router.post("/projects/{project_id}/keys")
async def create_key(project_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    project, role = await _project_and_role(portal, user, project_id)
    data = await request.form()
    form = KeyForm.read(data)
    state = portal.state
    principal = project_principal(portal, project)
    try:
        form.check_name()
        listed = {d.model for d in (await state.access.resolve(principal.id, principal.groups)).listed()}
        unknown = [m for m in form.models if m not in listed]
        if unknown:
            raise InvalidRequest(f"The project may not use: {', '.join(unknown)}.", param="models")
        key, secret = await store.create_key(
            engine=state.engine,
            secret=state.authenticator.secret,
            owner_kind="project",
            owner_id=project.id,
            name=form.name,
            expires_at=_expiry(form.expires),
            models=list(dict.fromkeys(form.models)) or None,
            created_by=user.id,
            coin_cap_micro=_coin_cap(form.coin_cap),
        )
    except InvalidRequest as exc:
        return await _detail(
            request, user, portal, project, role, error=exc.message, status=400, key_form=form
        )
    await _audit(
        portal,
        user,
        "key.create",
        f"key:{key.id}",
        {
            "owner": project.principal,
            "name": key.name,
            "models": key.models,
            "expires_at": form.expires or None,
        },
    )
    return await _detail(request, user, portal, project, role, status=201, created_key=(key.name, secret))


@router.post("/projects/{project_id}/keys/{key_id}/revoke")
async def revoke_key(
    project_id: IdPath, key_id: str, request: Request, user: CurrentUser, portal: PortalDep
) -> Response:
    project, _ = await _project_and_role(portal, user, project_id)
    state = portal.state
    try:
        key = await store.get_key(engine=state.engine, key_id=key_id)
    except NotFound:
        key = None
    if key is None or key.owner_kind != "project" or key.owner_id != project.id:
        raise NotFound("This project has no API key with this id.", code="key_not_found")
    await key_actions.revoke_key(server_services(state), key.id, by=_actor(user))
    return _back(project, "key_revoked")


@router.post("/projects/{project_id}/acknowledge")
async def acknowledge(project_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    project, role = await _project_and_role(portal, user, project_id)
    data = await request.form()
    model = str(data.get("model") or "")
    principal = project_principal(portal, project)
    try:
        await portal.state.access.acknowledge(
            principal.id,
            model,
            actor=user.principal.id,
            via="web",
            groups=principal.groups,
            notice_hash=str(data.get("notice_hash") or "") or None,
            actor_is_admin=user.is_admin,
        )
    except LumenError as exc:
        if isinstance(exc, PermissionDenied):
            raise
        return await _detail(request, user, portal, project, role, error=exc.message, status=exc.status)
    await _audit(portal, user, "project.acknowledge", project.principal, {"model": model})
    return _back(project, "acknowledged")


@router.post("/projects/{project_id}/status")
async def set_status(project_id: IdPath, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    project, role = await _project_and_role(portal, user, project_id)
    if not role.is_admin:
        raise PermissionDenied("Only administrators can disable or enable a project.", code="admin_required")
    disabled = str((await request.form()).get("disabled") or "") == "true"
    await set_project_disabled(server_services(portal.state), project.id, disabled, by=_actor(user))
    return _back(project, "disabled" if disabled else "enabled")
