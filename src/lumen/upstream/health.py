"""Active health checks: each endpoint's model list is fetched on an interval (never a billed
completion); a failure marks it down, a success brings it back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from lumen.errors import UpstreamError
from lumen.settings import RoutingSettings
from lumen.upstream.endpoint import Endpoint
from lumen.upstream.registry import Registry

log = logging.getLogger(__name__)


async def check_endpoint(endpoint: Endpoint, routing: RoutingSettings) -> bool:
    was_up = endpoint.consecutive_failures == 0
    try:
        await endpoint.backend.probe()
    except UpstreamError as exc:
        # The detail (the endpoint's address, the backend's own words) is for the admin pages.
        endpoint.record_failure(exc.detail, backoff=routing.failure_backoff, max_backoff=routing.max_backoff)
        if was_up:
            log.warning("endpoint %s failed its health check: %s", endpoint.label, exc.detail)
        ok = False
    else:
        if not was_up:
            log.info("endpoint %s is healthy again", endpoint.label)
        endpoint.record_success()
        ok = True
    endpoint.last_checked = time.time()
    return ok


async def check_all(registry: Registry, routing: RoutingSettings) -> None:
    endpoints = registry.endpoints()
    seen: set[int] = set()
    probes = []
    for endpoint in endpoints:
        # Endpoints sharing one backend (one server, several model names) are probed once.
        if id(endpoint.backend) in seen:
            continue
        seen.add(id(endpoint.backend))
        probes.append(endpoint)
    await asyncio.gather(*(check_endpoint(e, routing) for e in probes))
    by_backend = {id(e.backend): e for e in probes}
    for endpoint in endpoints:
        source = by_backend[id(endpoint.backend)]
        if endpoint is not source:
            endpoint.consecutive_failures = source.consecutive_failures
            endpoint.down_until = source.down_until
            endpoint.last_error = source.last_error
            endpoint.last_checked = source.last_checked


async def run_health_checks(registry: Registry, routing: Callable[[], RoutingSettings]) -> None:
    """Runs until cancelled. `routing` is read each round, so a reload changes the interval."""
    while True:
        current = routing()
        if current.health_interval > 0:
            await check_all(registry, current)
        await asyncio.sleep(current.health_interval or 1.0)
