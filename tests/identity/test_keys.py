from __future__ import annotations

import math

from lumen.identity import keys


def test_keys_are_long_random_and_prefixed() -> None:
    made = {keys.new_key() for _ in range(200)}
    assert len(made) == 200
    for key in made:
        assert key.startswith("sk_") and keys.looks_like_a_key(key)
        # 32 random bytes in URL-safe base64: at least 192 bits, as required.
        assert (len(key) - 3) * math.log2(64) >= 192


def test_hash_is_keyed_and_hint_reveals_little() -> None:
    key = keys.new_key()
    assert keys.key_hash(b"secret-a", key) != keys.key_hash(b"secret-b", key)
    assert keys.key_hash(b"secret-a", key) == keys.key_hash(b"secret-a", key)
    hint = keys.hint(key)
    assert hint.startswith(key[:6]) and hint.endswith(key[-4:])
    assert len(hint.replace("…", "")) == 10


def test_key_shape_check() -> None:
    assert not keys.looks_like_a_key("sk_short")
    assert not keys.looks_like_a_key("pk_" + "a" * 43)
    assert not keys.looks_like_a_key("sk_" + "a" * 40 + " ")
