"""Login through an OpenID Connect provider (CILogon by default), with Authlib's Starlette client.

The flow: `start` redirects the browser to the provider with a fresh `state`, `nonce` and PKCE
verifier; Authlib keeps them in `StateCache` (this process's memory, or Redis when several
processes serve) and the portal sets a short-lived cookie holding the `state`, which binds the
callback to the browser that started it. `finish` checks that binding, exchanges the code,
validates the ID token (signature, issuer, audience, nonce) and merges the claims of the ID token
and the userinfo endpoint. `identity_from_claims` applies the email rules and `login_user` creates
the user at the first login (the email is the identity) and stores the claims at every login, for
the claim rules of groups (`lumen.identity.groups`).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from authlib.integrations.base_client import OAuthError
from authlib.integrations.starlette_client import OAuth
from joserfc.errors import JoseError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from lumen.errors import InvalidRequest, LoginFailed
from lumen.identity.store import User, normalise_email
from lumen.portal.config import CILOGON_METADATA_URL, OidcSettings
from lumen.store.engine import SQLITE_BEGIN_OPTION
from lumen.store.tables import users

log = logging.getLogger(__name__)

CLIENT_NAME = "lumen"
STATE_SECONDS = 600
"""How long a started login may take at the provider."""
_STATE_KEY = f"_state_{CLIENT_NAME}_"
# Claims that only served the token exchange; not worth keeping with the user.
_TRANSIENT_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash"})


class StateCache(Protocol):
    """What Authlib needs to keep a login's `state` data between the redirect and the callback."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, expires: int | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...


class MemoryStateCache:
    """One process's pending logins; bounded, since anyone can start a login."""

    def __init__(self, *, limit: int = 10_000, clock: Any = time.monotonic) -> None:
        self._items: dict[str, tuple[float, str]] = {}
        self._limit = limit
        self._clock = clock

    async def get(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None or item[0] <= self._clock():
            self._items.pop(key, None)
            return None
        return item[1]

    async def set(self, key: str, value: str, expires: int | None = None) -> None:
        now = self._clock()
        if len(self._items) >= self._limit:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            if len(self._items) >= self._limit:
                self._items.pop(next(iter(self._items)))
        self._items[key] = (now + min(expires or STATE_SECONDS, STATE_SECONDS), value)

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)


class RedisStateCache:
    """Pending logins in Redis, so the callback may reach another Lumen process."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def get(self, key: str) -> str | None:
        value = await self._client.get(self._prefix + key)
        return value.decode() if isinstance(value, bytes) else value

    async def set(self, key: str, value: str, expires: int | None = None) -> None:
        await self._client.set(self._prefix + key, value, ex=min(expires or STATE_SECONDS, STATE_SECONDS))

    async def delete(self, key: str) -> None:
        await self._client.delete(self._prefix + key)


@dataclass(frozen=True, slots=True)
class Identity:
    email: str
    name: str
    claims: dict[str, Any]


class OidcClient:
    def __init__(self, settings: OidcSettings, *, client_secret: str | None, cache: StateCache) -> None:
        self.settings = settings
        oauth = OAuth(cache=cache)
        self._app = oauth.register(
            name=CLIENT_NAME,
            client_id=settings.client_id,
            client_secret=client_secret,
            server_metadata_url=settings.metadata_url,
            client_kwargs={
                "scope": " ".join(settings.scopes),
                "code_challenge_method": "S256",
                "timeout": 15,
            },
        )

    async def start(self, request: Request, redirect_uri: str) -> tuple[Response, str]:
        """The redirect to the provider, and the `state` to bind to the browser (in a cookie)."""
        flow: dict[str, Any] = {}
        request.scope["session"] = flow  # Authlib leaves its marker here; the data goes to the cache
        extra = {"idphint": self.settings.idphint} if self.settings.idphint else {}
        try:
            response = await self._app.authorize_redirect(request, redirect_uri, **extra)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("OIDC provider metadata unavailable: %s", exc)
            raise LoginFailed(
                "The identity provider cannot be reached right now. Please try again in a minute."
            ) from exc
        states = [key[len(_STATE_KEY) :] for key in flow if key.startswith(_STATE_KEY)]
        assert len(states) == 1, "Authlib stored no state"
        return response, states[0]

    async def finish(self, request: Request, bound_state: str | None) -> dict[str, Any]:
        """The provider's claims about the user who just logged in (ID token and userinfo)."""
        if request.query_params.get("error"):
            description = request.query_params.get("error_description") or request.query_params["error"]
            raise LoginFailed(f"The identity provider did not log you in: {description}")
        state = request.query_params.get("state") or ""
        if not bound_state or not hmac.compare_digest(state.encode(), bound_state.encode()):
            raise LoginFailed(
                "This login was started in another browser or has expired. Please log in again."
            )
        request.scope["session"] = {_STATE_KEY + state: {"exp": time.time() + STATE_SECONDS}}
        try:
            token = await self._app.authorize_access_token(request)
            claims = dict(token.get("userinfo") or {})
            metadata = await self._app.load_server_metadata()
            if metadata.get("userinfo_endpoint"):
                extra = dict(await self._app.userinfo(token=token))
                if claims and extra.get("sub") != claims.get("sub"):
                    raise LoginFailed("The identity provider's answers disagree about who you are.")
                claims.update(extra)
        except OAuthError as exc:
            log.info("OIDC login refused: %s", exc)
            raise LoginFailed(
                "This login was started in another browser or has expired. Please log in again."
                if exc.error == "mismatching_state"
                else f"The identity provider did not log you in ({exc.error})."
            ) from exc
        except (httpx.HTTPError, JoseError, ValueError) as exc:
            log.warning("OIDC login failed: %r", exc)
            raise LoginFailed(
                "The answer of the identity provider could not be verified. Please try again."
            ) from exc
        return {k: v for k, v in claims.items() if k not in _TRANSIENT_CLAIMS}


def identity_from_claims(claims: Mapping[str, Any], settings: OidcSettings) -> Identity:
    raw_email = claims.get("email")
    if not isinstance(raw_email, str) or not raw_email.strip():
        raise LoginFailed(
            "Your identity provider did not tell Lumen your email address, which Lumen needs to "
            "know who you are. Allow it to share your email, or choose another provider."
        )
    try:
        email = normalise_email(raw_email)
    except InvalidRequest as exc:
        raise LoginFailed(
            f"Your identity provider sent an email address Lumen cannot use: {raw_email!r}."
        ) from exc
    verified = _truth(claims.get("email_verified"))
    rule = settings.email_verification
    if rule is None:
        rule = "unless_false" if settings.metadata_url == CILOGON_METADATA_URL else "required"
    if (rule == "required" and verified is not True) or (rule == "unless_false" and verified is False):
        raise LoginFailed(
            f"Your identity provider has not verified the email address {email}. Verify it with "
            "your provider (or ask your Lumen administrator), then log in again."
        )
    name = claims.get("name")
    if not isinstance(name, str) or not name.strip():
        parts = [claims.get("given_name"), claims.get("family_name")]
        name = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    return Identity(email=email, name=name.strip(), claims=_json_safe(dict(claims)))


async def login_user(*, engine: AsyncEngine, identity: Identity) -> tuple[User, bool]:
    """The user with this email, created at the first login; their name (when the provider sends
    one), claims and `last_login_at` are updated at every login. Also says whether the claims
    changed (groups may have: cached keys of the user must be re-read)."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {"claims": identity.claims, "last_login_at": now}
    if identity.name:
        values["name"] = identity.name
    changed = False
    for _ in range(2):
        async with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Read, then write: take the write lock first, or a concurrent writer makes the
                # upgrade from read to write fail at once ("database is locked").
                await conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            async with conn.begin():
                found = users.c.email == identity.email
                before = (await conn.execute(select(users.c.claims).where(found).with_for_update())).first()
                if before is not None:
                    changed = before.claims != identity.claims
                    await conn.execute(update(users).where(found).values(**values))
        if before is not None:
            break
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    insert(users).values(
                        **{"name": identity.name, **values, "email": identity.email, "created_at": now}
                    )
                )
            break
        except IntegrityError:
            continue  # a parallel first login created the user a moment ago: update it instead
    async with engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.email == identity.email))).one()
    return User(**{f: getattr(row, f) for f in User.__dataclass_fields__}), changed


def _truth(value: Any) -> bool | None:
    """`email_verified` as a boolean; some providers send the strings "true" and "false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _json_safe(claims: dict[str, Any]) -> dict[str, Any]:
    # Claims go into a JSON column; anything exotic is stored as its string.
    return dict(json.loads(json.dumps(claims, default=str)))
