"""What portal pages depend on: the portal's services, the logged-in user, CSRF protection.

A page declares the user it needs and gets a `PortalUser`, or the visitor is sent to the login
page (HTML) or answered 401 `login_required` (fetch calls)::

    from lumen.portal.deps import CurrentUser, PortalDep

    @router.get("/models")
    async def models(request: Request, user: CurrentUser, portal: PortalDep) -> Response:
        ...  # user.principal is what /v1 builds for this user's keys: call the same access,
        ...  # rate-limit and billing code with it, with source "chat"
        return await portal.render(request, "models.html", title="Models", user=user, page=...)

`AdminUser` also requires an administrator (403 otherwise). Every router of the portal runs
`csrf_protect` (see `lumen.portal.app`): a POST, PUT, PATCH or DELETE must carry the session's
CSRF token, as the `X-CSRF-Token` header (fetch calls; the token is in the page's
`<meta name="csrf-token">`) or as the form field `csrf_token` (forms; `base.html` has a macro).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from lumen.errors import CsrfFailed, InvalidRequest, LoginRequired, PermissionDenied
from lumen.identity.auth import AccountDisabled
from lumen.identity.principal import Principal
from lumen.identity.sessions import PortalSession

if TYPE_CHECKING:
    from lumen.portal.app import Portal

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANONYMOUS_FORMS = frozenset({"/login"})
"""Forms posted before a session exists; they carry the login CSRF cookie's token instead."""


@dataclass(frozen=True, slots=True)
class PortalUser:
    """The person logged in to the portal."""

    id: int
    email: str
    name: str
    is_admin: bool
    principal: Principal
    """The same principal /v1 builds for this user's API keys (groups from the claims of the last
    login, admin flag), without a key."""
    csrf_token: str
    session: PortalSession


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


async def optional_user(request: Request) -> PortalUser | None:
    """The logged-in user, or None. A disabled user's session is ended and refused."""
    portal = portal_of(request)
    session = await portal.session_of(request)
    if session is None:
        return None
    if session.disabled:
        await portal.sessions().delete(portal.session_token(request))
        raise AccountDisabled("Your Lumen account is disabled. Ask your Lumen administrator.")
    settings = portal.state.settings
    return PortalUser(
        id=session.user_id,
        email=session.email,
        name=session.name,
        is_admin=session.is_admin or session.email in {a.lower() for a in settings.admins},
        principal=session.principal(settings.groups, settings.admins),
        csrf_token=session.csrf_token,
        session=session,
    )


async def current_user(user: Annotated[PortalUser | None, Depends(optional_user)]) -> PortalUser:
    if user is None:
        raise LoginRequired("Log in to continue.")
    return user


async def admin_user(user: Annotated[PortalUser, Depends(current_user)]) -> PortalUser:
    if not user.is_admin:
        raise PermissionDenied("This page is for administrators.", code="admin_required")
    return user


async def csrf_protect(request: Request) -> None:
    """Refuses a state-changing request that does not carry its session's CSRF token."""
    if request.method not in UNSAFE_METHODS:
        return
    portal = portal_of(request)
    supplied = request.headers.get("x-csrf-token")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        if any("\x00" in key or (isinstance(value, str) and "\x00" in value) for key, value in form.items()):
            # As for JSON bodies and URLs (lumen.api.body): PostgreSQL cannot store it, and a
            # form field holding it would fail its write as a 500.
            raise InvalidRequest("The form holds a NUL character (%00), which Lumen does not accept.")
        if supplied is None:
            value = form.get("csrf_token")
            supplied = value if isinstance(value, str) else None
    expected = []
    session = await portal.session_of(request)
    if session is not None:
        expected.append(session.csrf_token)
    if request.url.path in ANONYMOUS_FORMS:
        expected.append(portal.login_csrf_token(request) or "")
    if not any(PortalSession.tokens_match(token, supplied) for token in expected):
        raise CsrfFailed(
            "This form has expired or did not come from this site. Reload the page and try again."
        )


PortalDep = Annotated["Portal", Depends(portal_of)]
OptionalUser = Annotated[PortalUser | None, Depends(optional_user)]
CurrentUser = Annotated[PortalUser, Depends(current_user)]
AdminUser = Annotated[PortalUser, Depends(admin_user)]
