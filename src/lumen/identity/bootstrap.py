"""The bootstrap API key: lets a fresh instance be used before any user or key exists.

The key is taken from the settings (`server.bootstrap_key` / `LUMEN_BOOTSTRAP_KEY`) or generated
once into `<data_dir>/bootstrap-key` (mode 0600) and reused on later starts.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from lumen.errors import AuthenticationFailed
from lumen.identity.principal import Principal

KEY_FILE = "bootstrap-key"
BOOTSTRAP = Principal(id="bootstrap", kind="bootstrap", key_id="bootstrap")


def new_api_key() -> str:
    """`sk_` and 256 random bits, URL-safe."""
    return "sk_" + secrets.token_urlsafe(32)


def load_or_create_bootstrap_key(data_dir: Path) -> str:
    path = data_dir / KEY_FILE
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = new_api_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


class BootstrapAuthenticator:
    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        if not hmac.compare_digest(token.encode(), self._key):
            raise AuthenticationFailed(
                "Incorrect API key provided. You can find your API key under Profile → API Keys."
            )
        return BOOTSTRAP


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it in the Authorization header as 'Bearer sk_...'."
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("The Authorization header must have the form 'Bearer sk_...'.")
    return token
