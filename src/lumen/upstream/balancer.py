"""Choosing an endpoint: the fewest requests in flight per unit of weight, ties by round robin."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from lumen.upstream.endpoint import Endpoint


class Balancer:
    def __init__(self) -> None:
        self._turn = 0

    def pick(self, endpoints: Sequence[Endpoint], exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint to try next, or None when every candidate is down or already tried."""
        now = time.monotonic()
        best: list[Endpoint] = []
        best_load = 0.0
        for endpoint in endpoints:
            if endpoint in exclude or not endpoint.is_up(now):
                continue
            load = endpoint.in_flight / endpoint.weight
            if not best or load < best_load:
                best, best_load = [endpoint], load
            elif load == best_load:
                best.append(endpoint)
        if not best:
            return None
        if len(best) == 1:
            return best[0]
        self._turn += 1
        return _weighted_turn(best, self._turn)


def _weighted_turn(endpoints: list[Endpoint], turn: int) -> Endpoint:
    """Round robin in which an endpoint of weight w takes w turns out of every cycle."""
    cycle = sum(e.weight for e in endpoints)
    position = turn % cycle
    for endpoint in endpoints:
        if position < endpoint.weight:
            return endpoint
        position -= endpoint.weight
    return endpoints[-1]
