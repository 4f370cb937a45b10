"""The portal's browser-facing protections: security headers and cookies.

Every portal response gets a Content-Security-Policy that allows scripts and styles from Lumen
itself only (no inline code, no CDN), cannot be framed, and sends no referrer to other sites.
Pages default to `Cache-Control: no-store`, since they show a person's data.

Cookies are HttpOnly and SameSite=Lax, `Secure` per `portal.secure_cookies`; a Secure cookie
also gets the `__Host-` prefix, which the browser accepts only from this exact host over HTTPS,
so a sibling subdomain cannot plant one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lumen.portal.config import PortalSettings

SESSION_COOKIE = "lumen_session"
LOGIN_CSRF_COOKIE = "lumen_login_csrf"
OIDC_COOKIE = "lumen_oidc"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


def content_security_policy(portal: PortalSettings) -> str:
    images = ["'self'", "data:"]
    if portal.logo and re.match(r"^https?://", portal.logo, re.IGNORECASE):
        parts = urlsplit(portal.logo)
        images.append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(images)}",
            "font-src 'self'",
            "connect-src 'self'",
            "manifest-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ]
    )


class SecurityHeaders:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which would buffer streamed answers)."""

    def __init__(self, app: ASGIApp, *, csp: Callable[[], str], hsts: Callable[[], bool]) -> None:
        self.app = app
        self._csp = csp
        self._hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = self._csp()
                headers["x-content-type-options"] = "nosniff"
                headers["referrer-policy"] = "same-origin"
                headers["x-frame-options"] = "DENY"
                headers["cross-origin-opener-policy"] = "same-origin"
                headers["permissions-policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
                if self._hsts():
                    headers["strict-transport-security"] = "max-age=31536000"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def secure_cookies(portal: PortalSettings, public_url: str) -> bool:
    if portal.secure_cookies != "auto":
        return portal.secure_cookies == "always"
    return not re.match(r"^http://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?(/|$)", public_url, re.IGNORECASE)


def cookie_name(base: str, secure: bool) -> str:
    return f"__Host-{base}" if secure else base


def set_cookie(response: Response, base: str, value: str, *, secure: bool, max_age: int | None) -> None:
    response.set_cookie(
        cookie_name(base, secure),
        value,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def clear_cookie(response: Response, base: str, *, secure: bool) -> None:
    response.delete_cookie(cookie_name(base, secure), path="/", secure=secure, httponly=True, samesite="lax")
