"""The `portal:` section of the config file: branding, login (local and OIDC) and sessions.

Its own module, like the other feature sections, so that `lumen.settings` can gather it without
importing the portal's web code.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from lumen.config_base import ConfigSection

CILOGON_METADATA_URL = "https://cilogon.org/.well-known/openid-configuration"
CILOGON_SCOPES = ("openid", "email", "profile", "org.cilogon.userinfo")
_HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


class FooterLink(ConfigSection):
    text: str = Field(min_length=1, max_length=80)
    """The link's text."""
    url: str = Field(min_length=1)
    """Where it goes: an `https://` or `http://` URL, `mailto:`, or a path on this server."""

    @field_validator("url")
    @classmethod
    def _safe_url(cls, url: str) -> str:
        # A `javascript:` URL would run script in the portal's origin.
        if not re.match(r"^(https?://|mailto:|/(?!/))", url):
            raise ValueError("must start with https://, http://, mailto: or / (a path on this server)")
        return url


class OidcSettings(ConfigSection):
    metadata_url: str = CILOGON_METADATA_URL
    """The provider's OpenID Connect discovery document (`.../.well-known/openid-configuration`)."""
    client_id: str = Field(min_length=1)
    """The client id registered with the provider."""
    client_secret_env: str = "LUMEN_OIDC_CLIENT_SECRET"
    """Name of the environment variable that holds the client secret (never written in the file)."""
    scopes: tuple[str, ...] = CILOGON_SCOPES
    """Scopes to request; the default is CILogon's, whose `org.cilogon.userinfo` adds the
    `affiliation`, `member_of`, `idp` and `ou` claims that group rules use."""
    idphint: str | None = None
    """CILogon's `idphint`: the entity id of the identity provider to preselect (or skip to)."""
    email_verification: Literal["required", "unless_false", "off"] | None = None
    """`required`: the `email_verified` claim must be true. `unless_false`: refuse only when the
    provider says false (for providers that vouch for every email without sending the claim).
    `off`: never checked. Unset: `unless_false` for CILogon — it releases only the email address
    the user's home institution asserts, and sends no `email_verified` claim — and `required` for
    every other provider."""
    button_label: str = "Log in with your institution"
    """Text of the login button."""

    @field_validator("metadata_url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not re.match(r"^https?://", url):
            raise ValueError("must be an http:// or https:// URL")
        return url

    @field_validator("scopes")
    @classmethod
    def _openid(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in scopes:
            raise ValueError("must include `openid`")
        return scopes


class PortalSettings(ConfigSection):
    enabled: bool = True
    """Serve the web portal at `/` (the API, admin API and health routes are served either way)."""
    instance_name: str = Field(default="Lumen", min_length=1, max_length=80)
    """Shown in the header, the page titles and the login page."""
    logo: str | None = None
    """The logo in the header: an `https://` URL, or an image file on disk (SVG, PNG, JPEG, WebP),
    which Lumen serves itself. Default: Lumen's own."""
    accent_color: str = "#2453c7"
    """Accent colour (links, buttons) in light mode, as `#rrggbb`."""
    accent_color_dark: str = "#8fb0ff"
    """Accent colour in dark mode, as `#rrggbb`."""
    footer_links: list[FooterLink] = Field(default_factory=list)
    """Links in the footer, e.g. support, the source repository, feature requests."""
    announcement: str = ""
    """A banner shown on every page (plain text); empty: none."""
    local_login: bool = True
    """Offer the email-and-password form (`lumen users set-password` sets passwords)."""
    oidc: OidcSettings | None = None
    """Log in through an OpenID Connect provider (docs/portal.md); none: local login only."""
    session_idle_minutes: int = Field(default=480, ge=1, le=60 * 24 * 30)
    """A session unused for this long ends."""
    session_max_hours: int = Field(default=168, ge=1, le=24 * 365)
    """A session ends this long after login, however much it is used."""
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    """Mark cookies `Secure` (sent over HTTPS only). `auto`: always, unless `server.public_url`
    is `http://localhost` or `http://127.0.0.1` (development)."""
    login_attempts_per_minute: int = Field(default=5, ge=1, le=1000)
    """Failed logins allowed per account and client address; more are refused for a while."""
    users_create_projects: bool = False
    """Let every user create projects on the Projects page (they own what they create); otherwise
    only administrators can."""

    @field_validator("accent_color", "accent_color_dark")
    @classmethod
    def _colour(cls, colour: str) -> str:
        if not _HEX_COLOUR.match(colour):
            raise ValueError("must be a colour like #2453c7")
        return colour.lower()

    @field_validator("logo")
    @classmethod
    def _logo(cls, logo: str | None) -> str | None:
        if logo is not None and re.match(r"^[a-z][a-z0-9+.-]*:", logo, re.IGNORECASE):
            if not re.match(r"^https?://", logo, re.IGNORECASE):
                raise ValueError("must be an http(s):// URL or the path of an image file")
        return logo
