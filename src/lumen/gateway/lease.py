"""Endpoint leases: the only place an endpoint's in-flight count changes.

A `Lease` is taken when a call is about to be sent to an endpoint and released exactly once,
however the call ends; `Router` picks the endpoint (fewest in flight per unit of weight), keeps
the endpoints' passive health after each failure and decides whether another endpoint may be tried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lumen.errors import NoBackendAvailable, UpstreamError
from lumen.settings import RoutingSettings
from lumen.upstream.balancer import Balancer
from lumen.upstream.endpoint import Endpoint
from lumen.upstream.registry import Model

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Lease:
    endpoint: Endpoint
    released: bool = False

    def release(self, *, served: bool = False) -> None:
        if self.released:
            return
        self.released = True
        self.endpoint.in_flight -= 1
        if served:
            self.endpoint.served += 1


@dataclass(slots=True)
class Attempts:
    """The endpoints one call has tried, and how the last one failed."""

    tried: list[Endpoint] = field(default_factory=list)
    last_error: UpstreamError | None = None
    all_unreachable: bool = True


class Router:
    def __init__(self, routing: Callable[[], RoutingSettings]) -> None:
        self._routing = routing
        self._balancer = Balancer()

    def lease(self, model: Model, attempts: Attempts) -> Lease:
        """A lease on the next endpoint to try, or the error that ends the call: 503 when every
        endpoint is down or none could be reached, else the last endpoint's own failure."""
        endpoint = self._balancer.pick(model.endpoints, attempts.tried)
        if endpoint is None:
            raise self.final_error(model, attempts)
        attempts.tried.append(endpoint)
        endpoint.in_flight += 1
        return Lease(endpoint)

    def failed(self, lease: Lease, exc: UpstreamError, attempts: Attempts) -> bool:
        """Releases the lease and records the endpoint's health after `exc`; True when another
        endpoint may be tried."""
        lease.release()
        endpoint = lease.endpoint
        attempts.last_error = exc
        attempts.all_unreachable = attempts.all_unreachable and exc.unreachable
        if not exc.retryable:
            endpoint.record_success()  # it answered, so it is up; the request itself was refused
            return False
        self.mark_down(endpoint, exc)
        retry = len(attempts.tried) < self._routing().max_attempts
        log.warning(
            "endpoint %s failed: %s%s", endpoint.label, exc.detail, " (failing over)" if retry else ""
        )
        return retry

    @staticmethod
    def final_error(model: Model, attempts: Attempts) -> UpstreamError | NoBackendAvailable:
        """What a call that can try no more endpoints answers: 503 `model_unavailable` when none
        was up or none could be reached, else the last endpoint's own failure."""
        if attempts.last_error is not None and not attempts.all_unreachable:
            return attempts.last_error
        return unavailable(model)

    def mark_down(self, endpoint: Endpoint, exc: UpstreamError) -> None:
        routing = self._routing()
        endpoint.record_failure(exc.detail, backoff=routing.failure_backoff, max_backoff=routing.max_backoff)


def unavailable(model: Model) -> NoBackendAvailable:
    now = time.monotonic()
    wait = min((e.down_until - now for e in model.endpoints), default=1.0)
    retry_after = max(1, int(wait + 0.999))
    # A local engine's reason (say, its package is not installed) is safe and useful to show;
    # a remote endpoint's would reveal internal addresses.
    reasons = {e.last_error for e in model.endpoints if e.settings.type == "local" and e.last_error}
    detail = f" ({'; '.join(sorted(reasons))})" if reasons else ""
    return NoBackendAvailable(
        f"The model '{model.name}' is currently unavailable: none of its backends can serve{detail}. "
        f"Try again in {retry_after} s.",
        param="model",
        headers={"retry-after": str(retry_after)},
    )
