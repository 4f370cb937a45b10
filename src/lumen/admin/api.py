"""The admin API: users, projects, keys and usage, for scripts and the admin pages.

Every route needs an administrator's admin key (a key created with `admin`; an administrator's
other keys are ordinary ones) or an administrator's portal session. Errors use the same envelope
as /v1. The schema is served at /api/admin/openapi.json (no bundled Swagger page: it would load
scripts from a CDN).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException
from starlette.responses import Response

from lumen.access.config import EntityAccess
from lumen.actions import accounts, coins, keys, policy
from lumen.actions.coins import CoinCommand
from lumen.actions.context import Actor, Services
from lumen.actions.faces import server_services
from lumen.admin import audit_log
from lumen.admin.protocol import (
    AuditEntryPublic,
    CoinChange,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    PoolOverridesBody,
    PoolPublic,
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
    UsagePublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from lumen.api.body import LimitedBodyRoute
from lumen.api.errors import (
    error_response,
    handle_http_exception,
    handle_lumen_error,
    handle_unexpected,
    invalid_request,
)
from lumen.api.openapi import document_errors, error_responses
from lumen.api.params import IdPath, IdQuery, Offset
from lumen.billing.audit import audit_all
from lumen.billing.config import coins_to_micro
from lumen.billing.pools import PoolOverrides
from lumen.errors import InvalidRequest, LumenError, PermissionDenied
from lumen.identity import store
from lumen.identity.principal import Principal
from lumen.limits.config import LimitSettings
from lumen.state import AppState
from lumen.usage.queries import recent_usage

SessionAuth = Callable[[Request], Awaitable[Principal | None]]
FINDS = error_responses(404)
"""The responses of an operation that looks up a user, project or key by id or email (404 when there
is none); the statuses every operation has are added by `document_errors`."""


async def require_admin(request: Request) -> Principal:
    """An administrator's admin key, or (without an Authorization header) an administrator's
    portal session; a state-changing call with a session must carry its X-CSRF-Token."""
    state: AppState = request.app.state.get_state()
    authorization = request.headers.get("authorization")
    session_auth: SessionAuth | None = request.app.state.session_auth
    principal = None
    if authorization is None and session_auth is not None:
        principal = await session_auth(request)
    if principal is None:
        principal = await state.authenticate(authorization)
    if not principal.is_admin:
        raise PermissionDenied(
            "This needs an administrator's admin key (`lumen keys create --admin`) or portal session.",
            code="admin_required",
        )
    return principal


Admin = Annotated[Principal, Depends(require_admin)]


async def require_admin_actor(request: Request, principal: Admin) -> Actor:
    """The administrator making a change, and the face: the admin pages call this API with the
    portal session (no Authorization header), scripts with an API key."""
    return Actor.of(principal, "portal" if request.headers.get("authorization") is None else "api")


AdminActor = Annotated[Actor, Depends(require_admin_actor)]


def build_admin_api(get_state: Callable[[], AppState], session_auth: SessionAuth | None = None) -> FastAPI:
    app = FastAPI(
        title="Lumen admin API",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        description="Administer a Lumen instance: users, projects, API keys and usage. "
        "Authenticate with an administrator's admin key: `Authorization: Bearer sk_...`.",
    )

    app.state.get_state = get_state
    app.state.session_auth = session_auth
    app.router.route_class = LimitedBodyRoute

    def engine() -> AsyncEngine:
        return get_state().engine

    def services() -> Services:
        return server_services(get_state())

    async def audited(actor: Actor, action: str, target: str, details: Mapping[str, Any]) -> None:
        """Every change made through this API leaves an entry in the audit log (after it succeeded);
        the changes `lumen.actions` makes write their own."""
        await services().audit(actor, action, target, details)

    async def existing_principal(user_id: int | None, project_id: int | None) -> str:
        """`user:<id>` or `project:<id>` of an existing user or project (404 otherwise)."""
        kind, owner_id = _owner(user_id, project_id)
        if kind == "user":
            return (await store.get_user(engine=engine(), user_id=owner_id)).principal
        return (await store.get_project(engine=engine(), project_id=owner_id)).principal

    async def project_public(project: store.Project) -> ProjectPublic:
        managers = await store.project_managers_of(engine=engine(), project_id=project.id)
        return ProjectPublic(**_fields(project), managers=managers)

    @app.get("/users", response_model=list[UserPublic])
    async def list_users(
        _: Admin,
        search: str = "",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Offset = 0,
    ) -> list[UserPublic]:
        found = await store.list_users(engine=engine(), search=search, limit=limit, offset=offset)
        return [UserPublic(**_fields(u)) for u in found]

    @app.post("/users", response_model=UserPublic, status_code=201)
    async def create_user(actor: AdminActor, body: UserCreate) -> UserPublic:
        user = await store.create_user(
            engine=engine(), email=body.email, name=body.name, is_admin=body.is_admin
        )
        await audited(actor, "user.create", user.principal, body.model_dump(mode="json"))
        return UserPublic(**_fields(user))

    @app.get("/users/{user_id}", response_model=UserPublic, responses=FINDS)
    async def get_user(_: Admin, user_id: IdPath) -> UserPublic:
        return UserPublic(**_fields(await store.get_user(engine=engine(), user_id=user_id)))

    @app.patch("/users/{user_id}", response_model=UserPublic, responses=FINDS)
    async def update_user(actor: AdminActor, user_id: IdPath, body: UserUpdate) -> UserPublic:
        user = await accounts.set_user_flags(
            services(), user_id, by=actor, disabled=body.disabled, is_admin=body.is_admin
        )
        return UserPublic(**_fields(user))

    @app.get("/projects", response_model=list[ProjectPublic])
    async def list_projects(
        _: Admin, limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0
    ) -> list[ProjectPublic]:
        return [
            await project_public(p)
            for p in await store.list_projects(engine=engine(), limit=limit, offset=offset)
        ]

    @app.post("/projects", response_model=ProjectPublic, status_code=201, responses=FINDS)
    async def create_project(actor: AdminActor, body: ProjectCreate) -> ProjectPublic:
        owner = await store.find_user(engine=engine(), email=body.owner_email)
        project = await store.create_project(
            engine=engine(), name=body.name, owner_id=owner.id, description=body.description
        )
        await audited(actor, "project.create", project.principal, body.model_dump(mode="json"))
        return await project_public(project)

    @app.patch("/projects/{project_id}", response_model=ProjectPublic, responses=FINDS)
    async def update_project(actor: AdminActor, project_id: IdPath, body: ProjectUpdate) -> ProjectPublic:
        project = await store.get_project(engine=engine(), project_id=project_id)
        if body.owner_email is not None:
            owner = await store.find_user(engine=engine(), email=body.owner_email)
            project = await store.transfer_project(
                engine=engine(), project_id=project_id, new_owner_id=owner.id
            )
            await audited(actor, "project.update", project.principal, {"owner_email": body.owner_email})
        if body.disabled is not None:
            project = await accounts.set_project_disabled(services(), project_id, body.disabled, by=actor)
        return await project_public(project)

    @app.put("/projects/{project_id}/managers/{user_id}", status_code=204, responses=FINDS)
    async def add_manager(actor: AdminActor, project_id: IdPath, user_id: IdPath) -> Response:
        await store.add_manager(engine=engine(), project_id=project_id, user_id=user_id)
        await audited(actor, "project.add_manager", f"project:{project_id}", {"user_id": user_id})
        return Response(status_code=204)

    @app.delete("/projects/{project_id}/managers/{user_id}", status_code=204, responses=FINDS)
    async def remove_manager(actor: AdminActor, project_id: IdPath, user_id: IdPath) -> Response:
        await store.remove_manager(engine=engine(), project_id=project_id, user_id=user_id)
        await audited(actor, "project.remove_manager", f"project:{project_id}", {"user_id": user_id})
        return Response(status_code=204)

    @app.get("/keys", response_model=list[KeyPublic])
    async def list_keys(_: Admin, user_id: IdQuery = None, project_id: IdQuery = None) -> list[KeyPublic]:
        kind, owner_id = _owner(user_id, project_id)
        return [
            _key_public(k) for k in await store.list_keys(engine=engine(), owner_kind=kind, owner_id=owner_id)
        ]

    @app.post("/keys", response_model=KeyCreated, status_code=201, responses=FINDS)
    async def create_key(actor: AdminActor, body: KeyCreate) -> KeyCreated:
        kind, owner_id = _owner(body.user_id, body.project_id)
        await existing_principal(body.user_id, body.project_id)  # 404 for an unknown owner
        if body.admin and kind == "user":
            owner = await store.get_user(engine=engine(), user_id=owner_id)
            if not store.administers(
                is_admin=owner.is_admin, email=owner.email, admins=get_state().settings.admins
            ):
                raise InvalidRequest(
                    f"{owner.email} is not an administrator: an admin key needs one.", param="admin"
                )
        expires = (
            body.expires_at.astimezone(UTC) if body.expires_at and body.expires_at.tzinfo else body.expires_at
        )
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        key, plain = await store.create_key(
            engine=engine(),
            secret=get_state().authenticator.secret,
            owner_kind=kind,
            owner_id=owner_id,
            name=body.name,
            expires_at=expires,
            models=body.models,
            created_by=_user_id(actor.id),
            coin_cap_micro=None if body.coin_cap is None else coins_to_micro(body.coin_cap),
            admin=body.admin,
        )
        public = _key_public(key)
        await audited(actor, "key.create", f"key:{key.id}", public.model_dump(mode="json"))
        return KeyCreated(**public.model_dump(), key=plain)

    @app.delete("/keys/{key_id}", response_model=KeyPublic, responses=FINDS)
    async def revoke_key(actor: AdminActor, key_id: str) -> KeyPublic:
        return _key_public(await keys.revoke_key(services(), key_id, by=actor))

    @app.get("/usage", response_model=list[UsagePublic])
    async def usage(
        _: Admin, principal: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[UsagePublic]:
        rows = await recent_usage(engine=engine(), limit=limit, principal=principal)
        return [UsagePublic(**{f: getattr(r, f) for f in UsagePublic.model_fields}) for r in rows]

    async def on_pool(actor: Actor, command: CoinCommand) -> PoolPublic:
        view = await coins.change_coins(services(), command, by=actor)
        return PoolPublic(
            principal=command.principal,
            balance=_coins(view.balance_micro),
            reserved=_coins(view.reserved_micro),
            available=_coins(view.available_micro),
        )

    @app.get("/coins", response_model=PoolPublic, responses=FINDS)
    async def show_coins(
        actor: AdminActor, user_id: IdQuery = None, project_id: IdQuery = None
    ) -> PoolPublic:
        return await on_pool(actor, CoinCommand(await existing_principal(user_id, project_id), "show"))

    @app.post("/coins/{action}", response_model=PoolPublic, responses=FINDS)
    async def change_coins(
        actor: AdminActor, action: Literal["grant", "set", "reset"], body: CoinChange
    ) -> PoolPublic:
        owner = await existing_principal(body.user_id, body.project_id)
        amount = None if body.amount is None or action == "reset" else coins_to_micro(body.amount)
        return await on_pool(actor, CoinCommand(owner, action, amount_micro=amount, note=body.note))

    @app.put("/coins/settings", response_model=PoolPublic, responses=FINDS)
    async def set_pool_settings(
        actor: AdminActor, body: PoolOverridesBody, user_id: IdQuery = None, project_id: IdQuery = None
    ) -> PoolPublic:
        owner = await existing_principal(user_id, project_id)

        def micro(value: Decimal | None) -> int | None:
            return None if value is None else coins_to_micro(value)

        overrides = PoolOverrides(
            state=body.state,
            max_micro=micro(body.max),
            refresh_micro=micro(body.refresh),
            starting_micro=micro(body.starting),
        )
        return await on_pool(actor, CoinCommand(owner, "settings", overrides=overrides))

    @app.put("/access", status_code=204, responses=FINDS)
    async def set_access_rule(
        actor: AdminActor, body: EntityAccess, user_id: IdQuery = None, project_id: IdQuery = None
    ) -> Response:
        """A user's or project's own model access rule (an empty body removes it)."""
        target = await existing_principal(user_id, project_id)
        await policy.set_access_rule(services(), target, body, by=actor)
        return Response(status_code=204)

    @app.put("/rate-limits", status_code=204, responses=FINDS)
    async def set_rate_limits(
        actor: AdminActor, body: LimitSettings, user_id: IdQuery = None, project_id: IdQuery = None
    ) -> Response:
        """A user's or project's own rate limits; fields left out are inherited, `{}` removes them."""
        target = await existing_principal(user_id, project_id)
        await policy.set_rate_limits(services(), target, body, by=actor)
        return Response(status_code=204)

    @app.get("/audit")
    async def audit_ledger(_: Admin) -> dict[str, object]:
        """`lumen audit`: every balance against its ledger; with Redis, every live balance too."""
        state = get_state()
        await state.bank.flush()
        redis_url = state.settings.server.redis_url
        result = await audit_all(
            engine(),
            redis_url=redis_url.get_secret_value() if redis_url is not None else None,
            redis_prefix=state.settings.server.redis_prefix,
        )
        found = result.discrepancies
        outbox = result.live.outbox if result.live is not None else None
        return {"ok": not found, "discrepancies": [str(d) for d in found], "outbox": outbox}

    @app.get("/audit-log", response_model=list[AuditEntryPublic])
    async def audit_entries(
        _: Admin,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: IdQuery = None,
        actor: str | None = None,
        target: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntryPublic]:
        """The audit log of administrative actions, newest first (`before`: the last id seen)."""
        found = await audit_log.entries(
            engine=engine(), limit=limit, before=before, actor=actor, target=target, action=action
        )
        return [AuditEntryPublic(**_fields(entry)) for entry in found]

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(invalid_request(exc.errors()))

    app.add_exception_handler(LumenError, handle_lumen_error)
    app.add_exception_handler(HTTPException, handle_http_exception)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, handle_unexpected)
    document_errors(app)
    return app


def _fields(obj: object) -> dict[str, object]:
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}  # type: ignore[attr-defined]


def _coins(micro: int | None) -> Decimal:
    return Decimal(micro or 0) / 1_000_000


def _owner(user_id: int | None, project_id: int | None) -> tuple[str, int]:
    if (user_id is None) == (project_id is None):
        raise InvalidRequest("Give exactly one of user_id and project_id.", param="user_id")
    return ("user", user_id) if user_id is not None else ("project", project_id)  # type: ignore[return-value]


def _user_id(principal: str) -> int | None:
    kind, _, number = principal.partition(":")
    return int(number) if kind == "user" else None


def _key_public(key: store.ApiKey) -> KeyPublic:
    return KeyPublic(
        id=key.id,
        owner=key.principal,
        name=key.name,
        hint=key.hint,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        models=key.models,
        coin_cap=None if key.coin_cap_micro is None else _coins(key.coin_cap_micro),
        admin=key.admin,
    )
