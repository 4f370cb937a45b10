"""How many tokens a request reserves before its answer is known."""

from __future__ import annotations

from lumen.limits import tokens_to_reserve
from lumen.limits.reservation import DEFAULT_OUTPUT_RESERVATION


def test_max_tokens_when_the_client_sets_it() -> None:
    assert tokens_to_reserve(120, 50) == 170


def test_a_default_output_when_it_does_not() -> None:
    assert tokens_to_reserve(120) == 120 + DEFAULT_OUTPUT_RESERVATION
    assert tokens_to_reserve(120, default_output=10) == 130


def test_capped_by_the_model_and_multiplied_by_n() -> None:
    assert tokens_to_reserve(10, 100_000, model_max_output=2048) == 10 + 2048
    assert tokens_to_reserve(10, None, model_max_output=16) == 26
    assert tokens_to_reserve(10, 100, n=3) == 310


def test_embeddings_reserve_only_the_input() -> None:
    assert tokens_to_reserve(500, 0) == 500
