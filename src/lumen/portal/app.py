"""The portal as an ASGI app, and the services its pages share.

`Portal` is built by `lumen.app.create_app` with the rest of the app; its services (sessions,
the login throttle, the OIDC client) are made on first use from the running `AppState` and closed
with the app. `Portal.route()` is what the root app mounts: it claims only the paths the
portal's routers declare plus unknown paths outside `/v1` and `/api/`, so the API keeps its own
404 and 405 answers in the OpenAI envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lumen.api.errors import error_response, handle_unexpected, http_error, invalid_request
from lumen.errors import CsrfFailed, LoginRequired, LumenError, PermissionDenied
from lumen.identity.oidc import MemoryStateCache, OidcClient, RedisStateCache
from lumen.identity.principal import Principal
from lumen.identity.sessions import PortalSession, SessionStore
from lumen.identity.throttle import LoginThrottle
from lumen.portal import deps
from lumen.portal.assets import Assets
from lumen.portal.config import OidcSettings, PortalSettings
from lumen.portal.nav import NAV
from lumen.portal.pages import Balance, Layout, Templates, Viewer, nav_links
from lumen.portal.routes import admin as admin_routes
from lumen.portal.routes import assets as asset_routes
from lumen.portal.routes import auth, chat, home
from lumen.portal.routes import help as help_routes
from lumen.portal.routes import models as model_routes
from lumen.portal.routes import profile as profile_routes
from lumen.portal.routes import projects as project_routes
from lumen.portal.routes import usage as usage_routes
from lumen.portal.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SecurityHeaders,
    content_security_policy,
    cookie_name,
    secure_cookies,
)
from lumen.settings import environment
from lumen.state import AppState

log = logging.getLogger(__name__)

ROUTERS = [
    asset_routes.router,
    auth.router,
    home.router,
    chat.router,
    model_routes.router,
    profile_routes.router,
    usage_routes.router,
    project_routes.router,
    admin_routes.router,
    help_routes.router,
]
"""The portal's feature routers; a new page adds its router here (and its `NavItem` to `NAV`)."""

API_PREFIXES = ("/v1", "/api/", "/healthz", "/readyz", "/metrics")
_UNSET = object()


class Portal:
    def __init__(self, get_state: Callable[[], AppState]) -> None:
        self._get_state = get_state
        self.assets = Assets()
        self.templates = Templates(self.assets)
        self._sessions: SessionStore | None = None
        self._throttle: LoginThrottle | None = None
        self._oidc: tuple[OidcSettings, OidcClient] | None = None
        self._state_cache: MemoryStateCache | RedisStateCache | None = None
        self._redis: Any = None
        self.app = self._build()

    # -- services ---------------------------------------------------------------------------------

    @property
    def state(self) -> AppState:
        return self._get_state()

    @property
    def settings(self) -> PortalSettings:
        return self.state.settings.portal

    def sessions(self) -> SessionStore:
        if self._sessions is None:
            state = self.state
            self._sessions = SessionStore(
                engine=state.engine,
                secret=state.authenticator.secret,
                idle=lambda: timedelta(minutes=self.settings.session_idle_minutes),
                max_age=lambda: timedelta(hours=self.settings.session_max_hours),
            )
        return self._sessions

    def throttle(self) -> LoginThrottle:
        if self._throttle is None:
            server = self.state.settings.server
            self._throttle = LoginThrottle.create(
                redis_url=server.redis_url.get_secret_value() if server.redis_url else None,
                prefix=server.redis_prefix,
                per_minute=lambda: self.settings.login_attempts_per_minute,
            )
        return self._throttle

    def oidc(self) -> OidcClient | None:
        """The OIDC client of the current config (rebuilt when a reload changes `portal.oidc`)."""
        configured = self.settings.oidc
        if configured is None:
            return None
        if self._oidc is None or self._oidc[0] != configured:
            secret = environment().get(configured.client_secret_env)
            if not secret:
                log.warning(
                    "portal.oidc: $%s is not set; logging in without a client secret",
                    configured.client_secret_env,
                )
            self._oidc = (configured, OidcClient(configured, client_secret=secret, cache=self._cache()))
        return self._oidc[1]

    def _cache(self) -> MemoryStateCache | RedisStateCache:
        if self._state_cache is None:
            server = self.state.settings.server
            if server.redis_url is None:
                self._state_cache = MemoryStateCache()
            else:
                from redis.asyncio import Redis

                self._redis = Redis.from_url(server.redis_url.get_secret_value())
                self._state_cache = RedisStateCache(self._redis, prefix=server.redis_prefix + "oidc:")
        return self._state_cache

    def secure(self) -> bool:
        return secure_cookies(self.settings, self.state.settings.public_url)

    async def aclose(self) -> None:
        if self._throttle is not None:
            await self._throttle.aclose()
        if self._redis is not None:
            await self._redis.aclose()

    # -- sessions ---------------------------------------------------------------------------------

    def session_token(self, request: Request) -> str | None:
        return request.cookies.get(cookie_name(SESSION_COOKIE, self.secure()))

    def login_csrf_token(self, request: Request) -> str | None:
        return request.cookies.get(cookie_name(LOGIN_CSRF_COOKIE, self.secure()))

    async def session_of(self, request: Request) -> PortalSession | None:
        """The request's live session (read once per request)."""
        cached = getattr(request.state, "portal_session", _UNSET)
        if cached is _UNSET:
            cached = await self.sessions().get(self.session_token(request))
            request.state.portal_session = cached
        assert cached is None or isinstance(cached, PortalSession)
        return cached

    async def admin_principal(self, request: Request) -> Principal | None:
        """For the admin API: the principal of the request's portal session (None without one).
        A state-changing call must carry the session's CSRF token in `X-CSRF-Token`."""
        session = await self.session_of(request)
        if session is None:
            return None
        if session.disabled:
            raise PermissionDenied("Your Lumen account is disabled.", code="account_disabled")
        if request.method in deps.UNSAFE_METHODS and not PortalSession.tokens_match(
            session.csrf_token, request.headers.get("x-csrf-token")
        ):
            raise CsrfFailed("A change made with a portal session needs the X-CSRF-Token header.")
        settings = self.state.settings
        return session.principal(settings.groups, settings.admins)

    # -- pages ------------------------------------------------------------------------------------

    async def layout(self, request: Request, *, title: str, user: deps.PortalUser | None = None) -> Layout:
        portal = self.settings
        balance = await self.balance(user.principal) if user is not None else None
        return Layout(
            title=title,
            instance_name=portal.instance_name,
            logo_url=self.logo_url(),
            branding_css=asset_routes.branding_url(portal),
            announcement=portal.announcement,
            footer_links=list(portal.footer_links),
            nav=nav_links(NAV, request.url.path, is_admin=user.is_admin) if user is not None else [],
            viewer=Viewer(user.email, user.name, user.is_admin) if user is not None else None,
            csrf_token=user.csrf_token if user is not None else "",
            balance=balance,
        )

    async def render(
        self,
        request: Request,
        template: str,
        *,
        title: str,
        user: deps.PortalUser | None = None,
        page: Any = None,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        layout = await self.layout(request, title=title, user=user)
        return self.templates.render(
            template, layout=layout, page=page, status_code=status_code, headers=headers
        )

    async def balance(self, principal: Principal) -> Balance:
        gate = self.state.gate
        view = await self.state.bank.balance(principal.id, params=gate.pool_params(principal.groups))
        params = view.params
        return Balance(params.state, view.available_micro, params.max_micro, params.refresh_micro)

    def logo_url(self) -> str:
        logo = self.settings.logo
        if logo is None:
            return self.assets.url("img/logo.svg")
        if logo.lower().startswith(("http://", "https://")):
            return logo
        return asset_routes.LOGO_PATH

    # -- the ASGI app -----------------------------------------------------------------------------

    def route(self) -> BaseRoute:
        # The security headers wrap everything the portal answers, its plain 500 included (that
        # one is sent by FastAPI's outermost middleware, outside any middleware added to it).
        secured = SecurityHeaders(
            self.app,
            csp=lambda: content_security_policy(self.settings),
            hsts=lambda: self.secure() and self.state.settings.public_url.startswith("https://"),
        )
        return PortalRoute(self.app, secured)

    def _build(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
        app.state.portal = self
        app.state.get_state = self._get_state  # the body limit of LimitedBodyRoute
        for router in ROUTERS:
            app.include_router(router, dependencies=[Depends(deps.csrf_protect)])
        app.add_exception_handler(LumenError, self._error)
        app.add_exception_handler(HTTPException, self._http_error)
        app.add_exception_handler(RequestValidationError, self._invalid)
        app.add_exception_handler(Exception, handle_unexpected)
        return app

    async def _invalid(self, request: Request, exc: Exception) -> Response:
        """A malformed body or query: Lumen's 400 (as a page or the JSON envelope), not FastAPI's 422."""
        assert isinstance(exc, RequestValidationError)
        return await self._error(request, invalid_request(exc.errors()))

    async def _error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LumenError)
        if not _wants_html(request):
            return error_response(exc)
        if isinstance(exc, LoginRequired) and request.method == "GET":
            return RedirectResponse(auth.login_url(request.url.path, request.url.query), status_code=303)
        return await self._error_page(request, exc)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = http_error(request, exc, not_found="There is no page at this address.")
        if not _wants_html(request):
            return error_response(error)
        return await self._error_page(request, error)

    async def _error_page(self, request: Request, exc: LumenError) -> Response:
        try:
            user = await deps.optional_user(request)
        except LumenError:
            user = None
        return await self.render(
            request,
            "error.html",
            title="Error",
            user=user,
            page=exc,
            status_code=exc.status,
            headers=exc.headers,
        )


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


class PortalRoute(BaseRoute):
    """Mounts the portal at `/` without swallowing the API's paths: a path under `/v1`, `/api/`
    or the operations routes is never the portal's, so unknown API URLs keep their JSON 404
    and a wrong method on an API route its 405."""

    def __init__(self, app: FastAPI, handler: ASGIApp) -> None:
        self.app = app
        self._handler = handler

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        path: str = scope["path"]
        if path.startswith(API_PREFIXES) and not any(
            # An API path is the portal's only if one of its routers declares it (/api/chat).
            route.matches(scope)[0] is not Match.NONE
            for route in self.app.router.routes
        ):
            return Match.NONE, {}
        return Match.FULL, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "HEAD":
            await self._handler(scope, receive, send)
            return

        # HEAD is GET without the body (RFC 9110), for link checkers and monitoring probes;
        # FastAPI routes declared with GET would answer it 405.
        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self._handler({**scope, "method": "GET"}, receive, headers_only)
