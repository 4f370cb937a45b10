"""Logging in (email and password, or OIDC) and out.

A login always makes a new session (and ends the one the browser had), so a session id planted
before login is worthless. Failed password logins are throttled per client address
(`lumen.identity.throttle`); the address is the one uvicorn puts in the scope, which is the
client's as named by a trusted proxy (`server.trusted_proxies`). The login form, posted before
any session exists, is protected by a double-submit token: a random value in an HttpOnly cookie
and in the form.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, Form, Request
from starlette.responses import RedirectResponse, Response

from lumen.changes import Change
from lumen.errors import NotFound
from lumen.identity.auth import AccountDisabled
from lumen.identity.oidc import STATE_SECONDS, identity_from_claims, login_user
from lumen.identity.passwords import check_login, record_login
from lumen.identity.store import User
from lumen.portal.deps import OptionalUser, PortalDep
from lumen.portal.security import (
    LOGIN_CSRF_COOKIE,
    OIDC_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    cookie_name,
    set_cookie,
)

if TYPE_CHECKING:
    from lumen.portal.app import Portal

router = APIRouter()
DISABLED = "Your Lumen account is disabled. Ask your Lumen administrator if you think this is a mistake."


@dataclass(frozen=True, slots=True)
class LoginPage:
    next: str
    local_login: bool
    oidc_label: str | None
    oidc_url: str
    login_csrf: str
    email: str = ""
    error: str = ""
    notice: str = ""


def safe_next(target: str | None) -> str:
    """A local path to return to after login; anything else (another site, a scheme) is `/`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(c in target for c in "\r\n\t\\"):
        return "/"
    return target


def login_url(path: str = "/", query: str = "") -> str:
    target = path + (f"?{query}" if query else "")
    return "/login" if target == "/" else "/login?" + urlencode({"next": target})


@router.get("/login")
async def login_form(request: Request, portal: PortalDep, user: OptionalUser) -> Response:
    target = safe_next(request.query_params.get("next"))
    if user is not None:
        return RedirectResponse(target, status_code=303)
    notice = "You have logged out." if "logged_out" in request.query_params else ""
    return await _login_page(request, portal, target, notice=notice)


@router.post("/login")
async def login(
    request: Request,
    portal: PortalDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=2048)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    if not portal.settings.local_login:
        raise NotFound("Logging in with a password is turned off here.")
    target = safe_next(next)
    address = request.client.host if request.client else "unknown"
    throttle = portal.throttle()
    wait = await throttle.wait_seconds(email, address)
    if wait > 0:
        seconds = math.ceil(wait)
        return await _login_page(
            request,
            portal,
            target,
            email=email,
            error=f"Too many failed logins. Try again in {seconds} seconds.",
            status_code=429,
            headers={"retry-after": str(seconds)},
        )
    user = await check_login(engine=portal.state.engine, email=email, password=password)
    if user is None or user.disabled:
        # A disabled account answers its right password like a wrong one: the page must not
        # confirm a guessed password of an account that cannot log in anyway.
        await throttle.failed(email, address)
        return await _login_page(
            request, portal, target, email=email, error="Wrong email or password.", status_code=401
        )
    return await _start_session(request, portal, user, method="password", target=target)


@router.get("/logout")
async def logout_form(request: Request, portal: PortalDep, user: OptionalUser) -> Response:
    if user is None:
        return RedirectResponse("/login", status_code=303)
    return await portal.render(request, "logout.html", title="Log out", user=user)


@router.post("/logout")
async def logout(request: Request, portal: PortalDep) -> Response:
    await portal.sessions().delete(portal.session_token(request))
    response = RedirectResponse("/login?logged_out=1", status_code=303)
    clear_cookie(response, SESSION_COOKIE, secure=portal.secure())
    return response


@router.get("/auth/oidc/login")
async def oidc_login(request: Request, portal: PortalDep) -> Response:
    client = portal.oidc()
    if client is None:
        raise NotFound("Logging in through an identity provider is not configured here.")
    redirect_uri = _external_url(request, portal, "/auth/oidc/callback")
    response, state = await client.start(request, redirect_uri)
    target = safe_next(request.query_params.get("next"))
    set_cookie(
        response, OIDC_COOKIE, f"{state}:{quote(target)}", secure=portal.secure(), max_age=STATE_SECONDS
    )
    return response


@router.get("/auth/oidc/callback")
async def oidc_callback(request: Request, portal: PortalDep) -> Response:
    client = portal.oidc()
    if client is None:
        raise NotFound("Logging in through an identity provider is not configured here.")
    bound, _, target = (request.cookies.get(cookie_name(OIDC_COOKIE, portal.secure())) or "").partition(":")
    claims = await client.finish(request, bound or None)
    identity = identity_from_claims(claims, client.settings)
    user, claims_changed = await login_user(engine=portal.state.engine, identity=identity)
    if claims_changed:
        # The user's groups may have changed with the claims: cached keys and access decisions
        # are re-read, in every process.
        await portal.state.changes.publish(Change.KEYS, user.principal)
        await portal.state.changes.publish(Change.ACCESS, user.principal)
    response = await _start_session(request, portal, user, method="oidc", target=safe_next(unquote(target)))
    clear_cookie(response, OIDC_COOKIE, secure=portal.secure())
    return response


async def _start_session(
    request: Request, portal: Portal, user: User, *, method: str, target: str
) -> Response:
    if user.disabled:
        raise AccountDisabled(DISABLED)
    sessions = portal.sessions()
    await sessions.delete(portal.session_token(request))
    token, _ = await sessions.create(
        user_id=user.id,
        method=method,
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    if method == "password":
        await record_login(engine=portal.state.engine, user_id=user.id)
    secure = portal.secure()
    response = RedirectResponse(target, status_code=303)
    set_cookie(
        response, SESSION_COOKIE, token, secure=secure, max_age=portal.settings.session_max_hours * 3600
    )
    clear_cookie(response, LOGIN_CSRF_COOKIE, secure=secure)
    return response


async def _login_page(
    request: Request,
    portal: Portal,
    target: str,
    *,
    email: str = "",
    error: str = "",
    notice: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    settings = portal.settings
    token = portal.login_csrf_token(request)
    fresh = token is None or len(token) > 100
    if fresh:
        token = secrets.token_urlsafe(32)
    assert token is not None
    page = LoginPage(
        next=target,
        local_login=settings.local_login,
        oidc_label=settings.oidc.button_label if settings.oidc else None,
        oidc_url="/auth/oidc/login" + ("?" + urlencode({"next": target}) if target != "/" else ""),
        login_csrf=token,
        email=email,
        error=error,
        notice=notice,
    )
    response = await portal.render(
        request, "login.html", title="Log in", page=page, status_code=status_code, headers=headers
    )
    if fresh:
        set_cookie(response, LOGIN_CSRF_COOKIE, token, secure=portal.secure(), max_age=None)
    return response


def _external_url(request: Request, portal: Portal, path: str) -> str:
    """This server's URL for `path`: `server.public_url` when configured (behind a proxy),
    otherwise the URL the browser used."""
    configured = portal.state.settings.server.public_url
    if configured:
        return configured.rstrip("/") + path
    return str(request.base_url).rstrip("/") + path
