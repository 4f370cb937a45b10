from __future__ import annotations

from collections import Counter
from typing import Any

from lumen.settings import EndpointSettings
from lumen.upstream.balancer import Balancer
from lumen.upstream.endpoint import Endpoint


def _endpoint(url: str, weight: int = 1) -> Endpoint:
    settings = EndpointSettings(type="openai", url=url, weight=weight)
    backend: Any = object()
    return Endpoint(settings, backend, "m")


def test_fewest_in_flight_wins() -> None:
    a, b, c = _endpoint("http://a"), _endpoint("http://b"), _endpoint("http://c")
    a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
    assert Balancer().pick([a, b, c]) is b


def test_ties_rotate_round_robin() -> None:
    endpoints = [_endpoint("http://a"), _endpoint("http://b"), _endpoint("http://c")]
    balancer = Balancer()
    picks = [balancer.pick(endpoints) for _ in range(9)]
    assert Counter(id(p) for p in picks) == Counter({id(e): 3 for e in endpoints})


def test_weights_share_ties() -> None:
    heavy, light = _endpoint("http://heavy", weight=3), _endpoint("http://light", weight=1)
    balancer = Balancer()
    picks = Counter(balancer.pick([heavy, light]).settings.url for _ in range(400))  # type: ignore[union-attr]
    assert picks["http://heavy"] == 300
    assert picks["http://light"] == 100


def test_load_is_relative_to_weight() -> None:
    heavy, light = _endpoint("http://heavy", weight=4), _endpoint("http://light", weight=1)
    heavy.in_flight, light.in_flight = 3, 1  # 0.75 against 1.0 per unit of weight
    assert Balancer().pick([heavy, light]) is heavy


def test_down_and_excluded_endpoints_are_skipped() -> None:
    a, b = _endpoint("http://a"), _endpoint("http://b")
    a.record_failure("boom", backoff=60, max_backoff=60)
    assert Balancer().pick([a, b]) is b
    assert Balancer().pick([a, b], exclude=[b]) is None


def test_backoff_doubles_and_success_clears() -> None:
    a = _endpoint("http://a")
    a.record_failure("x", backoff=1, max_backoff=60)
    first = a.down_until
    a.record_failure("x", backoff=1, max_backoff=60)
    a.record_failure("x", backoff=1, max_backoff=60)
    assert a.consecutive_failures == 3
    assert a.down_until - first >= 3.0  # 1 s, then 4 s from (almost) the same moment
    assert not a.is_up()
    a.record_success()
    assert a.is_up() and a.consecutive_failures == 0
