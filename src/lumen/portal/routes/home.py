"""The home page after login: the balance, the account and how to reach the API."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import Response

from lumen.portal.deps import CurrentUser, PortalDep
from lumen.portal.pages import Balance, coins

router = APIRouter()


@dataclass(frozen=True, slots=True)
class HomePage:
    balance: Balance
    max_coins: str
    refill_per_hour: str
    groups: tuple[str, ...]
    api_base: str
    login_method: str


@router.get("/")
async def home(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
    balance = await portal.balance(user.principal)
    page = HomePage(
        balance=balance,
        max_coins=coins(balance.max_micro),
        refill_per_hour=coins(balance.refresh_micro),
        groups=user.principal.groups,
        api_base=portal.state.settings.public_url + "/v1",
        login_method="your identity provider" if user.session.method == "oidc" else "email and password",
    )
    return await portal.render(request, "home.html", title="Home", user=user, page=page)
