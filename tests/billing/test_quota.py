from __future__ import annotations

import pytest

from lumen.billing.pools import HOUR_MS, PoolOverrides
from lumen.billing.quota import human_duration, insufficient_quota
from lumen.billing.store import Admission, PoolView
from tests.billing.conftest import T0, coins, pool


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (1, "1 second"),
        (59_000, "59 seconds"),
        (59_001, "1 minute"),
        (90_000, "2 minutes"),
        (HOUR_MS, "1 hour"),
        (HOUR_MS + 60_000, "1 hour 1 minute"),
        (26 * HOUR_MS + 5 * 60_000, "1 day 2 hours"),
    ],
)
def test_human_duration(ms: int, text: str) -> None:
    assert human_duration(ms) == text


def _refused(balance: int, reserved: int = 0, **params: float) -> Admission:
    p = pool(**params)  # type: ignore[arg-type]
    return Admission("insufficient", PoolView(balance, reserved, 0, T0, p, PoolOverrides()))


def test_the_message_says_when_enough_coins_arrive() -> None:
    error = insufficient_quota(_refused(coins(1), max_=10, refresh=2), coins(2), soft=False, now_ms=T0)
    assert error.status == 429 and error.code == "insufficient_quota"
    assert error.headers == {"x-should-retry": "false", "retry-after": "1800"}
    assert error.envelope()["error"]["type"] == "insufficient_quota"
    # 1 coin short at 2 coins per hour: 30 minutes after T0 (2027-01-15T08:00:00Z).
    assert "at 2027-01-15T08:30:00Z (in 30 minutes)" in error.message
    assert "refills 2 coins per hour" in error.message


def test_the_message_names_coins_held_by_requests_in_progress() -> None:
    error = insufficient_quota(
        _refused(coins(10), coins(9), max_=10, refresh=1), coins(2), soft=False, now_ms=T0
    )
    assert "9 coins are held by your requests in progress" in error.message
    assert "when your requests in progress finish" in error.message
