"""Profile and Profile → API Keys: the user's coins and groups, and their own API keys.

Keys are made and listed with the identity store functions the admin API uses, and revoked with
the same service (`lumen.actions.keys`): audited, and refused by every Lumen process at once. A
new key's secret is in the response to its creation only: it is never stored (only its keyed
hash is) and the page is sent with `Cache-Control: no-store`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from lumen.actions.context import Actor
from lumen.actions.faces import server_services
from lumen.actions.keys import revoke_key
from lumen.billing.config import coins_to_micro
from lumen.billing.pools import MAX_AMOUNT_MICRO, MICRO, time_to_afford
from lumen.errors import InvalidRequest, NotFound
from lumen.identity import store
from lumen.portal.content import Document, render_page
from lumen.portal.deps import CurrentUser, PortalDep, PortalUser
from lumen.portal.pages import Balance, coins
from lumen.portal.routes.help import api_base, example_model
from lumen.portal.routes.models import ModelRow, visible_models
from lumen.usage.queries import Totals, recent_volume

if TYPE_CHECKING:
    from starlette.datastructures import FormData

    from lumen.portal.app import Portal

router = APIRouter()

NAME_MAX = 100
LONGEST_EXPIRY_DAYS = 3660


# --- the profile --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coins:
    balance: Balance
    available: str
    max: str
    refill_per_hour: str
    next_coin: str
    """When the next whole coin arrives, in words ("in 6 minutes", "your pool is full", …)."""


@dataclass(frozen=True, slots=True)
class ProfilePage:
    coins: Coins
    groups: tuple[str, ...]
    keys_active: int
    api_base: str


def duration_text(ms: int) -> str:
    """A wait in words, rounded up to the minute: "less than a minute", "6 minutes", "2 h 5 min"."""
    if ms <= 0:
        return "now"
    if ms < 60_000:
        return "less than a minute"
    minutes = -(-ms // 60_000)
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{-(-hours // 24)} days"


async def coin_facts(portal: Portal, user: PortalUser) -> Coins:
    """The user's pool as the bank sees it now (refill applied), and when the next coin comes."""
    gate = portal.state.gate
    params = gate.pool_params(user.principal.groups)
    view = await portal.state.bank.balance(user.principal.id, params=params)
    params = view.params  # with the user's own overrides
    balance = Balance(params.state, view.available_micro, params.max_micro, params.refresh_micro)
    available = view.available_micro
    if params.state != "limited":
        next_coin = "—"
    elif available < 0:
        # A debt (requests that cost more than they held): refills pay it before anything else.
        paid = time_to_afford(view.balance_micro, view.reserved_micro, view.carry, params, 0)
        next_coin = "No automatic refill" if paid is None else f"Debt paid in {duration_text(paid)}"
    elif view.balance_micro >= params.max_micro:
        next_coin = "Your pool is full"
    elif params.refresh_micro == 0:
        next_coin = "No automatic refill"
    else:
        # The next whole coin, or the top of the pool if that comes first.
        whole = (max(available, 0) // MICRO + 1) * MICRO
        full = params.max_micro - view.reserved_micro
        needed = min(whole, full)
        wait = time_to_afford(view.balance_micro, view.reserved_micro, view.carry, params, needed)
        if wait is None:  # cannot happen for needed <= full; kept as a plain answer
            next_coin = "No automatic refill"
        else:
            prefix = "Full in" if needed == full else "In"
            next_coin = f"{prefix} {duration_text(wait)}"
    return Coins(
        balance=balance,
        available=coins(available),
        max=coins(params.max_micro),
        refill_per_hour=coins(params.refresh_micro),
        next_coin=next_coin,
    )


@router.get("/profile")
async def profile(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    keys = await store.list_keys(engine=portal.state.engine, owner_kind="user", owner_id=user.id)
    now = datetime.now(UTC)
    page = ProfilePage(
        coins=await coin_facts(portal, user),
        groups=user.principal.groups,
        keys_active=sum(1 for k in keys if key_state(k, now) == "active"),
        api_base=api_base(request, portal),
    )
    return await portal.render(request, "profile.html", title="Profile", user=user, page=page)


# --- API keys -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: store.ApiKey
    state: str
    """`active`, `expired` or `revoked`."""
    usage: Totals
    coin_cap: str | None

    @property
    def coins_spent(self) -> str:
        return coins(self.usage.cost_micro)


@dataclass(frozen=True, slots=True)
class KeyForm:
    """What the user typed into a create-key form (shown again when it is refused): the keys page's and a
    project's page's (lumen.portal.routes.projects) forms have the same fields and name rules."""

    name: str = ""
    expires: str = ""
    models: tuple[str, ...] = ()
    coin_cap: str = ""
    admin: bool = False
    """An admin key (offered to administrators on their own keys page only)."""

    @classmethod
    def read(cls, data: FormData) -> KeyForm:
        return cls(
            name=str(data.get("name") or "").strip(),
            expires=str(data.get("expires") or "").strip(),
            models=tuple(str(m) for m in data.getlist("models")),
            coin_cap=str(data.get("coin_cap") or "").strip(),
            admin=data.get("admin") == "on",
        )

    def check_name(self) -> None:
        if not self.name:
            raise InvalidRequest("Give the key a name, so you can tell it apart later.", param="name")
        if len(self.name) > NAME_MAX:
            raise InvalidRequest(f"The name can have at most {NAME_MAX} characters.", param="name")


@dataclass(frozen=True, slots=True)
class CreatedKey:
    secret: str
    name: str
    snippet: Document


@dataclass(frozen=True, slots=True)
class KeysPage:
    keys: list[KeyRow]
    models: list[ModelRow]
    form: KeyForm = field(default_factory=KeyForm)
    error: str = ""
    created: CreatedKey | None = None
    revoked: str = ""
    today: str = ""
    admin_keys: bool = False
    """Whether the form offers admin keys (to administrators)."""
    name_max: int = NAME_MAX


def key_state(key: store.ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


async def key_rows(portal: Portal, user: PortalUser) -> list[KeyRow]:
    """The user's keys, active ones first, newest first, with what each has been used for."""
    engine = portal.state.engine
    keys = await store.list_keys(engine=engine, owner_kind="user", owner_id=user.id)
    usage: dict[str | None, Totals] = {}
    if keys:
        # Usage of a key cannot predate it: the oldest key's creation bounds the scan.
        since = min(k.created_at for k in keys)
        usage = (await recent_volume(engine=engine, principal=user.principal.id, since=since)).by_key
    now = datetime.now(UTC)
    rows = [
        KeyRow(
            key=k,
            state=key_state(k, now),
            usage=usage.get(k.id, Totals()),
            coin_cap=None if k.coin_cap_micro is None else coins(k.coin_cap_micro),
        )
        for k in keys
    ]
    rows.sort(key=lambda r: (r.state != "active", -r.key.created_at.timestamp()))
    return rows


async def _keys_page(
    request: Request,
    user: PortalUser,
    portal: Portal,
    *,
    form: KeyForm | None = None,
    error: str = "",
    created: CreatedKey | None = None,
    status: int = 200,
) -> Response:
    rows = await key_rows(portal, user)
    # Confirms a revocation only of one of the user's own revoked keys, whatever the address says.
    revoked = request.query_params.get("revoked", "")
    page = KeysPage(
        keys=rows,
        models=await visible_models(portal, user),
        form=form or KeyForm(),
        error=error,
        created=created,
        revoked=revoked if any(r.key.id == revoked and r.state == "revoked" for r in rows) else "",
        today=datetime.now(UTC).date().isoformat(),
        admin_keys=user.is_admin,
    )
    return await portal.render(
        request, "keys.html", title="API keys", user=user, page=page, status_code=status
    )


@router.get("/profile/keys")
async def keys(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    return await _keys_page(request, user, portal)


def _expiry(text: str) -> datetime | None:
    """A key chosen to expire on a day works through that day (UTC)."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequest("Give the expiry date as YYYY-MM-DD.", param="expires") from exc
    today = datetime.now(UTC).date()
    if day < today:
        raise InvalidRequest("The expiry date is in the past.", param="expires")
    if day > today + timedelta(days=LONGEST_EXPIRY_DAYS):
        raise InvalidRequest("Choose an expiry date within ten years.", param="expires")
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def _coin_cap(text: str) -> int | None:
    if not text:
        return None
    try:
        amount = Decimal(text)
        micro = coins_to_micro(amount) if amount.is_finite() else -1
    except (InvalidOperation, ValueError) as exc:
        raise InvalidRequest(
            "The coin limit must be a number with at most six decimals, like 25 or 2.5.", param="coin_cap"
        ) from exc
    if micro < 0 or micro > MAX_AMOUNT_MICRO:
        raise InvalidRequest("The coin limit must be between 0 and 1,000,000,000.", param="coin_cap")
    return micro


def _models(chosen: tuple[str, ...], allowed: list[ModelRow]) -> list[str] | None:
    if not chosen:
        return None
    names = {m.name for m in allowed}
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise InvalidRequest(
            f"You cannot limit a key to a model you may not use: {', '.join(unknown)}.", param="models"
        )
    return list(dict.fromkeys(chosen))


@router.post("/profile/keys")
async def create_key(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    data = await request.form()
    form = KeyForm.read(data)
    allowed = await visible_models(portal, user)
    try:
        form.check_name()
        expires_at = _expiry(form.expires)
        cap = _coin_cap(form.coin_cap)
        models = _models(form.models, allowed)
        if form.admin and not user.is_admin:
            raise InvalidRequest("Only an administrator can create an admin key.", param="admin")
        key, secret = await store.create_key(
            engine=portal.state.engine,
            secret=portal.state.authenticator.secret,
            owner_kind="user",
            owner_id=user.id,
            name=form.name,
            expires_at=expires_at,
            models=models,
            created_by=user.id,
            coin_cap_micro=cap,
            admin=form.admin,
        )
    except InvalidRequest as exc:
        return await _keys_page(request, user, portal, form=form, error=exc.message, status=400)
    snippet = render_page(
        "new-key.md",
        base_url=api_base(request, portal),
        key=secret,
        model=example_model([m for m in allowed if not models or m.name in models]),
    )
    created = CreatedKey(secret=secret, name=key.name, snippet=snippet)
    return await _keys_page(request, user, portal, created=created, status=201)


async def _own_key(portal: Portal, user: PortalUser, key_id: str) -> store.ApiKey:
    """The key, if it is this user's own; anyone else's is "not found", as if it did not exist."""
    mine = NotFound("You have no API key with this id.", code="key_not_found")
    try:
        key = await store.get_key(engine=portal.state.engine, key_id=key_id)
    except NotFound as exc:
        raise mine from exc
    if key.owner_kind != "user" or key.owner_id != user.id:
        raise mine
    return key


@dataclass(frozen=True, slots=True)
class RevokePage:
    key: store.ApiKey
    state: str


@router.get("/profile/keys/{key_id}/revoke")
async def confirm_revoke(key_id: str, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    key = await _own_key(portal, user, key_id)
    page = RevokePage(key, key_state(key, datetime.now(UTC)))
    return await portal.render(request, "keys_revoke.html", title="Revoke API key", user=user, page=page)


@router.post("/profile/keys/{key_id}/revoke")
async def revoke(key_id: str, request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    await _own_key(portal, user, key_id)
    key = await revoke_key(server_services(portal.state), key_id, by=Actor.of(user.principal, "portal"))
    return RedirectResponse(f"/profile/keys?revoked={key.id}", status_code=303)
