from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from lumen.billing.prices import DEFAULT_OUTPUT_TOKENS, cost_micro, output_budget, worst_case_micro
from lumen.settings import Price


@dataclass(frozen=True)
class P:
    input: float | Decimal | int = 0.0
    output: float | Decimal | int = 0.0
    audio_hour: float | Decimal | int = 0.0


@pytest.mark.parametrize(
    ("price", "prompt", "completion", "audio", "expected"),
    [
        (P(), 1000, 1000, 0, 0),  # free model
        (P(1, 2), 1_000_000, 1_000_000, 0, 3_000_000),  # a million of each: 1 + 2 coins
        (P(1, 2), 1, 1, 0, 3),  # coins per million tokens = micro-coins per token
        (P(0.15, 0.6), 1000, 500, 0, 450),  # 150 + 300
        (P(0.1, 0.2), 3, 0, 0, 1),  # 0.3 micro-coins rounds up to 1, not 0
        (P(0.1, 0.2), 10, 0, 0, 1),  # exactly 1.0: no float error pushes it to 2
        (P(0.1, 0.2), 1, 1, 0, 1),  # 0.1 + 0.2 = 0.3 exactly, rounded once (not 1 + 1)
        (P(0.000001, 0), 999_999, 0, 0, 1),  # 0.999999 -> 1
        (P(3, 15), 12_345, 678, 0, 37_035 + 10_170),
        (P(audio_hour=0.36), 0, 0, 10, 1000),  # 0.36 coins/hour * 10 s = 0.001 coins
        (P(audio_hour=1), 0, 0, 3600, 1_000_000),
        (P(audio_hour=1), 0, 0, 1, 278),  # 277.77… rounds up
        (P(audio_hour=1), 0, 0, 0.5, 139),  # fractional seconds (138.8…)
        (P(Decimal("0.1"), Decimal("0.2")), 1, 1, 0, 1),
        (P(1_000_000, 0), 1_000_000, 0, 0, 10**12),  # large values stay exact integers
    ],
)
def test_cost_table(price: P, prompt: int, completion: int, audio: float, expected: int) -> None:
    assert cost_micro(price, prompt, completion, audio) == expected


def test_cost_accepts_the_config_price_model() -> None:
    assert cost_micro(Price(input=0.15, output=0.6), 1000, 500) == 450


def test_float_prices_are_read_as_written() -> None:
    # 0.1 as a binary float is 0.1000000000000000055…; a million tokens must cost exactly 0.1 coins.
    assert cost_micro(P(0.1, 0), 1_000_000, 0) == 100_000
    assert cost_micro(P(0.07, 0), 100, 0) == 7


@pytest.mark.parametrize("bad", [(-1, 0, 0), (0, -1, 0), (0, 0, -1)])
def test_negative_quantities_are_refused(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        cost_micro(P(1, 1, 1), *bad)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_tokens": 100, "output_cap": 50}, 50),  # the model cannot write more than its cap
        ({"max_completion_tokens": 30, "max_tokens": 100}, 30),  # the newer field wins
        ({"output_cap": 2048}, 2048),  # no request bound: the model's cap
        ({}, DEFAULT_OUTPUT_TOKENS),  # neither: the site default
        ({"default_output_tokens": 10}, 10),
        ({"max_tokens": 0}, 0),
        ({"max_tokens": 100, "n": 3}, 300),  # n choices
    ],
)
def test_output_budget(kwargs: dict[str, int], expected: int) -> None:
    assert output_budget(**kwargs) == expected


def test_worst_case_is_prompt_plus_output_budget() -> None:
    price = P(1, 2)
    assert worst_case_micro(price, 100, max_tokens=50) == 100 + 100
    assert worst_case_micro(price, 100, output_cap=10) == 100 + 20
    assert worst_case_micro(price, 100, max_tokens=50) >= cost_micro(price, 100, 50)
    assert worst_case_micro(P(), 10**6, max_tokens=10**6) == 0
