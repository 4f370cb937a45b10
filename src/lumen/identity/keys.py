"""API key material: generation, the keyed hash that is stored, and the visible hint.

A key is `sk_` plus 256 random bits (URL-safe base64). Lumen stores only
HMAC-SHA256(server secret, key): a leaked database does not reveal usable keys, and without the
server secret the hashes cannot even be checked offline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "sk_"
KEY_SHAPE = re.compile(r"^sk_[A-Za-z0-9_-]{40,100}$")


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def key_hash(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def hint(key: str) -> str:
    """Enough to recognise a key in a list, far too little to guess it."""
    return f"{key[:6]}…{key[-4:]}"


def looks_like_a_key(token: str) -> bool:
    return bool(KEY_SHAPE.match(token))
