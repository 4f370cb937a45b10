"""Users, projects and API keys in the database.

Functions take the engine as a keyword argument and raise `lumen.errors` errors for anything a
caller (the CLI, the admin API) can get wrong, with a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import false as false_
from sqlalchemy import func, insert, select, update
from sqlalchemy import null as null_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from lumen.errors import InvalidRequest, NotFound
from lumen.identity import keys as key_material
from lumen.store.tables import api_keys, project_managers, projects, users


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    name: str
    is_admin: bool
    disabled: bool
    created_at: datetime

    @property
    def principal(self) -> str:
        return f"user:{self.id}"


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    name: str
    description: str
    owner_id: int
    disabled: bool
    created_at: datetime

    @property
    def principal(self) -> str:
        return f"project:{self.id}"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    owner_kind: str
    owner_id: int
    name: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    models: list[str] | None
    coin_cap_micro: int | None
    admin: bool = False
    """Created for administration: only such a key of an administrator opens the admin API."""

    @property
    def principal(self) -> str:
        return f"{self.owner_kind}:{self.owner_id}"


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """What authentication needs to know about a key and whom it belongs to."""

    key: ApiKey
    disabled: bool
    name: str  # the user's email or the project's name
    is_admin: bool
    claims: dict[str, Any] | None


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or not domain or "@" in domain or any(c.isspace() for c in email):
        raise InvalidRequest(f"'{email}' is not an email address.", param="email")
    return email


def _now() -> datetime:
    return datetime.now(UTC)


def _user(row: object) -> User:
    return User(**{f: getattr(row, f) for f in User.__dataclass_fields__})


def _project(row: object) -> Project:
    return Project(**{f: getattr(row, f) for f in Project.__dataclass_fields__})


def _key(row: object) -> ApiKey:
    return ApiKey(**{f: getattr(row, f) for f in ApiKey.__dataclass_fields__})


# --- users ------------------------------------------------------------------------------------


async def create_user(*, engine: AsyncEngine, email: str, name: str = "", is_admin: bool = False) -> User:
    email = normalise_email(email)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                insert(users).values(email=email, name=name, is_admin=is_admin, created_at=_now())
            )
            user_id = result.inserted_primary_key[0]  # type: ignore[index]
    except IntegrityError as exc:
        raise InvalidRequest(f"A user with the email {email} exists already.", param="email") from exc
    return await get_user(engine=engine, user_id=int(user_id))


async def get_user(*, engine: AsyncEngine, user_id: int) -> User:
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise NotFound(f"No user with id {user_id}.", code="user_not_found")
    return _user(row)


async def find_user(*, engine: AsyncEngine, email: str) -> User:
    email = normalise_email(email)
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.email == email))).first()
    if row is None:
        raise NotFound(f"No user with the email {email}.", code="user_not_found")
    return _user(row)


async def count_users(*, engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())


async def set_user_flags(
    *, engine: AsyncEngine, user_id: int, disabled: bool | None = None, is_admin: bool | None = None
) -> User:
    values = {k: v for k, v in {"disabled": disabled, "is_admin": is_admin}.items() if v is not None}
    async with engine.begin() as conn:
        result = await conn.execute(update(users).where(users.c.id == user_id).values(**values))
    if result.rowcount == 0:
        raise NotFound(f"No user with id {user_id}.", code="user_not_found")
    return await get_user(engine=engine, user_id=user_id)


# --- projects ---------------------------------------------------------------------------------


async def create_project(*, engine: AsyncEngine, name: str, owner_id: int, description: str = "") -> Project:
    name = name.strip()
    if not name:
        raise InvalidRequest("A project needs a name.", param="name")
    try:
        async with engine.begin() as conn:
            result = await conn.execute(
                insert(projects).values(
                    name=name, description=description, owner_id=owner_id, created_at=_now()
                )
            )
            project_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await conn.execute(insert(project_managers).values(project_id=project_id, user_id=owner_id))
    except IntegrityError as exc:
        raise InvalidRequest(f"A project named '{name}' exists already.", param="name") from exc
    return await get_project(engine=engine, project_id=project_id)


async def get_project(*, engine: AsyncEngine, project_id: int) -> Project:
    async with engine.connect() as conn:
        row = (await conn.execute(select(projects).where(projects.c.id == project_id))).first()
    if row is None:
        raise NotFound(f"No project with id {project_id}.", code="project_not_found")
    return _project(row)


async def find_project(*, engine: AsyncEngine, name: str) -> Project:
    async with engine.connect() as conn:
        row = (await conn.execute(select(projects).where(projects.c.name == name.strip()))).first()
    if row is None:
        raise NotFound(f"No project named '{name}'.", code="project_not_found")
    return _project(row)


async def set_project_disabled(*, engine: AsyncEngine, project_id: int, disabled: bool) -> Project:
    async with engine.begin() as conn:
        await conn.execute(update(projects).where(projects.c.id == project_id).values(disabled=disabled))
    return await get_project(engine=engine, project_id=project_id)


async def project_managers_of(*, engine: AsyncEngine, project_id: int) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(project_managers.c.user_id).where(project_managers.c.project_id == project_id)
        )
        return sorted(int(r[0]) for r in rows)


# --- keys -------------------------------------------------------------------------------------


async def create_key(
    *,
    engine: AsyncEngine,
    secret: bytes,
    owner_kind: str,
    owner_id: int,
    name: str = "",
    expires_at: datetime | None = None,
    models: list[str] | None = None,
    coin_cap_micro: int | None = None,
    created_by: int | None = None,
    admin: bool = False,
) -> tuple[ApiKey, str]:
    """Creates a key; returns it and its secret, which is shown once and never stored. For an admin
    key the caller has checked that the owner administers (`administers`)."""
    if owner_kind not in ("user", "project"):
        raise InvalidRequest("A key belongs to a user or a project.", param="owner_kind")
    if admin and owner_kind != "user":
        raise InvalidRequest("Only an administrator can have an admin key.", param="admin")
    if admin and models is not None:
        # A key handed out for a few models must never open the admin API.
        raise InvalidRequest("An admin key cannot be limited to some models.", param="models")
    if expires_at is not None and expires_at <= _now():
        raise InvalidRequest("The expiry date is in the past.", param="expires_at")
    plain = key_material.new_key()
    key = await insert_key(
        engine=engine,
        secret_hash=key_material.key_hash(secret, plain),
        hint=key_material.hint(plain),
        owner_kind=owner_kind,
        owner_id=owner_id,
        name=name,
        expires_at=expires_at,
        models=models,
        coin_cap_micro=coin_cap_micro,
        created_by=created_by,
        admin=admin,
    )
    return key, plain


def administers(*, is_admin: bool, email: str, admins: Iterable[str]) -> bool:
    """Whether a user is an administrator: marked so, or listed in the config's `admins`."""
    return is_admin or email.lower() in {a.lower() for a in admins}


async def insert_key(
    *,
    engine: AsyncEngine,
    secret_hash: str,
    hint: str,
    owner_kind: str,
    owner_id: int,
    name: str = "",
    expires_at: datetime | None = None,
    models: list[str] | None = None,
    coin_cap_micro: int | None = None,
    created_by: int | None = None,
    admin: bool = False,
) -> ApiKey:
    key_id = key_material.new_key_id()
    async with engine.begin() as conn:
        await conn.execute(
            insert(api_keys).values(
                id=key_id,
                owner_kind=owner_kind,
                owner_id=owner_id,
                name=name,
                secret_hash=secret_hash,
                hint=hint,
                created_at=_now(),
                expires_at=expires_at,
                models=models,
                coin_cap_micro=coin_cap_micro,
                created_by=created_by,
                admin=admin,
            )
        )
    return await get_key(engine=engine, key_id=key_id)


async def get_key(*, engine: AsyncEngine, key_id: str) -> ApiKey:
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
    if row is None:
        raise NotFound(f"No API key with id {key_id}.", code="key_not_found")
    return _key(row)


async def keys_by_ids(*, engine: AsyncEngine, key_ids: Iterable[str]) -> dict[str, ApiKey]:
    wanted = sorted(set(key_ids))
    if not wanted:
        return {}
    async with engine.connect() as conn:
        return {r.id: _key(r) for r in await conn.execute(select(api_keys).where(api_keys.c.id.in_(wanted)))}


async def projects_by_ids(*, engine: AsyncEngine, project_ids: Iterable[int]) -> dict[int, Project]:
    wanted = sorted(set(project_ids))
    if not wanted:
        return {}
    async with engine.connect() as conn:
        rows = await conn.execute(select(projects).where(projects.c.id.in_(wanted)))
        return {int(r.id): _project(r) for r in rows}


async def list_keys(*, engine: AsyncEngine, owner_kind: str, owner_id: int) -> list[ApiKey]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(api_keys)
            .where(api_keys.c.owner_kind == owner_kind, api_keys.c.owner_id == owner_id)
            .order_by(api_keys.c.created_at)
        )
        return [_key(r) for r in rows]


async def revoke_key(*, engine: AsyncEngine, key_id: str) -> ApiKey:
    """Marks the key revoked (kept, so its usage history keeps its key). Idempotent."""
    async with engine.begin() as conn:
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
    return await get_key(engine=engine, key_id=key_id)


async def key_owner_by_hash(*, engine: AsyncEngine, secret_hash: str) -> KeyOwner | None:
    """The key with this hash and its owner's state, or None."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.secret_hash == secret_hash))).first()
        if row is None:
            return None
        key = _key(row)
        if key.owner_kind == "user":
            query = select(users.c.disabled, users.c.email, users.c.is_admin, users.c.claims)
            owner = (await conn.execute(query.where(users.c.id == key.owner_id))).first()
        else:
            query = select(projects.c.disabled, projects.c.name, false_(), null_())
            owner = (await conn.execute(query.where(projects.c.id == key.owner_id))).first()
    if owner is None:
        return None
    return KeyOwner(key=key, disabled=bool(owner[0]), name=owner[1], is_admin=bool(owner[2]), claims=owner[3])


async def touch_keys(*, engine: AsyncEngine, last_used: dict[str, datetime]) -> None:
    """Writes the batched `last_used_at` times."""
    if not last_used:
        return
    async with engine.begin() as conn:
        for key_id, when in last_used.items():
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=when))


# --- listing and project membership (admin API) ------------------------------------------------


USER_SORTS = ("email", "name", "created_at", "last_login_at")
"""The columns a user list can be sorted by (the admin pages)."""


def _user_search(search: str) -> Any:
    pattern = f"%{search.lower()}%"
    return users.c.email.like(pattern) | func.lower(users.c.name).like(pattern)


async def list_users(
    *,
    engine: AsyncEngine,
    search: str = "",
    limit: int = 50,
    offset: int = 0,
    sort: str = "email",
    descending: bool = False,
) -> list[User]:
    if sort not in USER_SORTS:
        raise InvalidRequest(f"Users can be sorted by {', '.join(USER_SORTS)}.", param="sort")
    column = users.c[sort]
    # Never-logged-in users (NULL) sort last either way; the id breaks ties so pages never overlap.
    order = [column.is_(None), column.desc() if descending else column.asc(), users.c.id]
    query = select(users).order_by(*order).limit(limit).offset(offset)
    if search:
        query = query.where(_user_search(search))
    async with engine.connect() as conn:
        return [_user(r) for r in await conn.execute(query)]


async def count_matching_users(*, engine: AsyncEngine, search: str = "") -> int:
    query = select(func.count()).select_from(users)
    if search:
        query = query.where(_user_search(search))
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def users_by_ids(*, engine: AsyncEngine, user_ids: Iterable[int]) -> dict[int, User]:
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    async with engine.connect() as conn:
        rows = await conn.execute(select(users).where(users.c.id.in_(wanted)))
        return {int(r.id): _user(r) for r in rows}


async def user_claims(
    *, engine: AsyncEngine, user_ids: Iterable[int] | None = None
) -> dict[int, tuple[str, dict[str, Any] | None]]:
    """Email and last-login claims by user id (of `user_ids`, or of everyone): what group
    membership is computed from (`lumen.identity.groups.user_groups`)."""
    query = select(users.c.id, users.c.email, users.c.claims)
    if user_ids is not None:
        wanted = sorted(set(user_ids))
        if not wanted:
            return {}
        query = query.where(users.c.id.in_(wanted))
    async with engine.connect() as conn:
        return {int(r.id): (r.email, r.claims) for r in await conn.execute(query)}


async def last_logins(*, engine: AsyncEngine, user_ids: Iterable[int]) -> dict[int, datetime | None]:
    wanted = sorted(set(user_ids))
    if not wanted:
        return {}
    async with engine.connect() as conn:
        rows = await conn.execute(select(users.c.id, users.c.last_login_at).where(users.c.id.in_(wanted)))
        return {int(r.id): r.last_login_at for r in rows}


async def projects_managed_by(*, engine: AsyncEngine, user_id: int) -> list[Project]:
    """The projects the user owns or manages, by name."""
    managed = select(project_managers.c.project_id).where(project_managers.c.user_id == user_id)
    query = (
        select(projects)
        .where(projects.c.id.in_(managed) | (projects.c.owner_id == user_id))
        .order_by(projects.c.name)
    )
    async with engine.connect() as conn:
        return [_project(r) for r in await conn.execute(query)]


async def count_projects(*, engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(projects))).scalar_one())


async def list_projects(*, engine: AsyncEngine, limit: int = 50, offset: int = 0) -> list[Project]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(projects).order_by(projects.c.name).limit(limit).offset(offset))
        return [_project(r) for r in rows]


async def add_manager(*, engine: AsyncEngine, project_id: int, user_id: int) -> None:
    await get_project(engine=engine, project_id=project_id)
    await get_user(engine=engine, user_id=user_id)
    if user_id in await project_managers_of(engine=engine, project_id=project_id):
        return
    async with engine.begin() as conn:
        await conn.execute(insert(project_managers).values(project_id=project_id, user_id=user_id))


async def remove_manager(*, engine: AsyncEngine, project_id: int, user_id: int) -> None:
    project = await get_project(engine=engine, project_id=project_id)
    if project.owner_id == user_id:
        raise InvalidRequest("The owner is always a manager; transfer the ownership first.", param="user_id")
    async with engine.begin() as conn:
        await conn.execute(
            project_managers.delete().where(
                project_managers.c.project_id == project_id, project_managers.c.user_id == user_id
            )
        )


async def transfer_project(*, engine: AsyncEngine, project_id: int, new_owner_id: int) -> Project:
    await get_user(engine=engine, user_id=new_owner_id)
    async with engine.begin() as conn:
        await conn.execute(update(projects).where(projects.c.id == project_id).values(owner_id=new_owner_id))
    await add_manager(engine=engine, project_id=project_id, user_id=new_owner_id)
    return await get_project(engine=engine, project_id=project_id)
