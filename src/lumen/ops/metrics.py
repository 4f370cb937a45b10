"""Prometheus metrics at `/metrics`, behind `server.metrics_token`.

Each app has its own registry (no module-level state). Request metrics are updated from the
usage records, which every served or refused request produces, so the two always agree; gauges
(endpoint health, requests in flight, write queues) are read when Prometheus scrapes.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lumen.errors import AuthenticationFailed, NotFound
from lumen.usage.recorder import UsageRecord

if TYPE_CHECKING:
    from lumen.state import AppState

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self, state: Callable[[], AppState]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lumen_requests",
            "Requests answered, by model, HTTP status and source.",
            ["model", "status", "source"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lumen_request_latency_seconds",
            "Time to the whole answer.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "lumen_time_to_first_token_seconds",
            "Time to the first token of a stream.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "lumen_tokens",
            "Tokens, by model and kind (prompt or completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.coins = Counter(
            "lumen_coins_micro", "Micro-coins charged, by model.", ["model"], registry=self.registry
        )
        self.refusals = Counter(
            "lumen_refusals",
            "Requests refused before any backend was asked, by error code.",
            ["code"],
            registry=self.registry,
        )
        self._children: dict[tuple[object, ...], Any] = {}
        self._live = _LiveState(state)
        self.registry.register(self._live)

    async def refresh(self, state: AppState) -> None:
        """Reads, before a scrape, the values that need I/O (a collector cannot await)."""
        bank = state.bank
        if bank.outbox is None:
            self._live.coin_backlog = bank.ledger.pending
            return
        try:
            self._live.coin_backlog = await bank.outbox.length()
        except RedisError:
            log.warning("could not read the coin outbox's length for /metrics")

    def observe(self, record: UsageRecord) -> None:
        model = record.model or "-"
        self._child(self.requests, model, str(record.status), record.source).inc()
        if record.endpoint is None and record.error_code:
            self._child(self.refusals, record.error_code).inc()
            return
        self._child(self.latency, model).observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self._child(self.ttft, model).observe(record.ttft_ms / 1000)
        if record.prompt_tokens:
            self._child(self.tokens, model, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            self._child(self.tokens, model, "completion").inc(record.completion_tokens)
        if record.cost_micro:
            self._child(self.coins, model).inc(record.cost_micro)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: the client library's own lookup checks and
        converts its arguments on every call, a large part of a request's metrics cost."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


class _LiveState(Collector):
    """Values read at scrape time from the running app."""

    def __init__(self, state: Callable[[], AppState]) -> None:
        self._state = state
        self.coin_backlog = 0

    def describe(self) -> Iterator[Metric]:
        # Registration would otherwise call collect() to learn the names, before the app exists.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        up = GaugeMetricFamily(
            "lumen_endpoint_up", "1 when the endpoint is healthy.", labels=["model", "endpoint"]
        )
        in_flight = GaugeMetricFamily(
            "lumen_endpoint_in_flight", "Requests in flight at the endpoint.", labels=["model", "endpoint"]
        )
        for model in state.registry.models():
            for endpoint in model.endpoints:
                up.add_metric([model.name, endpoint.label], 1.0 if endpoint.is_up() else 0.0)
                in_flight.add_metric([model.name, endpoint.label], float(endpoint.in_flight))
        yield up
        yield in_flight
        recorder = state.recorder
        queue = GaugeMetricFamily("lumen_usage_queue", "Usage records waiting to be written.")
        queue.add_metric([], float(recorder.pending))
        yield queue
        dropped = GaugeMetricFamily(
            "lumen_usage_dropped", "Usage records dropped because the queue was full."
        )
        dropped.add_metric([], float(recorder.dropped))
        yield dropped
        pipeline = state.pipeline
        holding = GaugeMetricFamily(
            "lumen_requests_holding",
            "Admitted requests holding a rate-limit admission and coin reservations in this process.",
        )
        holding.add_metric([], float(pipeline.holding))
        yield holding
        settling = GaugeMetricFamily("lumen_settlements_pending", "Settlements started and not finished.")
        settling.add_metric([], float(pipeline.settling))
        yield settling
        coins = GaugeMetricFamily(
            "lumen_coin_movements_pending",
            "Coin movements not yet in the database ledger: this process's buffer, or with Redis the "
            "shared outbox (read at scrape time).",
        )
        coins.add_metric([], float(self.coin_backlog))
        yield coins


async def metrics(request: Request) -> Response:
    from lumen.state import app_state

    state = app_state(request)
    token = state.settings.server.metrics_token
    if token is None:
        raise NotFound("Metrics are off: set server.metrics_token to turn them on.", code="unknown_url")
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise AuthenticationFailed("/metrics needs `Authorization: Bearer <server.metrics_token>`.")
    await state.metrics.refresh(state)
    return Response(generate_latest(state.metrics.registry), media_type="text/plain; version=0.0.4")


def routes() -> list[BaseRoute]:
    return [Route("/metrics", metrics, methods=["GET"])]
