"""Header values: Go-style durations as OpenAI sends them, and the retry headers the SDKs read."""

from __future__ import annotations

import re

import pytest

from lumen.limits import HEADER_NAMES
from lumen.limits.headers import go_duration, retry_after


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.0000001, "1ms"),
        (0.012, "12ms"),
        (0.0121, "13ms"),
        (0.999, "999ms"),
        (0.9999, "1s"),
        (1, "1s"),
        (1.2, "2s"),
        (6.0, "6s"),
        (59.5, "1m0s"),
        (60, "1m0s"),
        (61, "1m1s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3723, "1h2m3s"),
        (90061, "25h1m1s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.001, 0.5, 1, 6, 59.9, 60, 61.5, 3599, 7201.2])
def test_go_durations_parse_with_the_usual_client_regex_and_never_undershoot(seconds: float) -> None:
    text = go_duration(seconds)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", text)
    assert "".join(number + unit for number, unit in parts) == text
    parsed = sum(int(number) * units[unit] for number, unit in parts)
    assert seconds <= parsed < seconds + 1


def test_retry_after_is_whole_seconds_and_milliseconds() -> None:
    assert retry_after(6) == {"retry-after": "6", "retry-after-ms": "6000"}
    assert retry_after(0.25) == {"retry-after": "1", "retry-after-ms": "250"}
    assert retry_after(0) == {"retry-after": "1", "retry-after-ms": "1"}  # the SDKs ignore 0
    assert retry_after(61.0001) == {"retry-after": "62", "retry-after-ms": "61001"}


def test_header_names_are_lower_case_for_the_error_handler() -> None:
    assert all(name == name.lower() for name in HEADER_NAMES)
    assert "retry-after" in HEADER_NAMES
