"""Optional OpenTelemetry tracing: one server span per HTTP request, linked to the caller's trace
(W3C `traceparent`) and to the upstream's (the same header is sent upstream).

Off unless `tracing.otlp_endpoint` is set; then spans are exported in batches over OTLP/HTTP to
that collector (Jaeger, Tempo, Honeycomb, an OpenTelemetry Collector...). The packages come with
the `otel` extra (`pip install 'lumen[otel]'`) and are imported only when tracing is on, so a
Lumen without tracing pays nothing for it: no middleware, no span, no import.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from lumen.config_base import ConfigSection

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Routes whose path names a model: the span name keeps the route, the model goes in an attribute.
_TEMPLATED = ("/v1/models/",)


class TracingSettings(ConfigSection):
    otlp_endpoint: str | None = None
    """OTLP/HTTP traces URL of a collector, e.g. `http://otel-collector:4318/v1/traces`. Unset:
    tracing is off. Needs the `otel` extra (`pip install 'lumen[otel]'`)."""
    service_name: str = Field(default="lumen", min_length=1)
    """`service.name` of the spans."""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces recorded (a caller's sampled `traceparent` is always followed)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers for the collector (e.g. an API key: put it in the environment as
    `OTEL_EXPORTER_OTLP_TRACES_HEADERS` rather than in the file)."""


class TracingUnavailable(RuntimeError):
    pass


def start_tracing(settings: TracingSettings) -> TracerProvider:
    """A tracer provider that exports to the configured collector in the background."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise TracingUnavailable(
            "tracing.otlp_endpoint is set but OpenTelemetry is not installed: pip install 'lumen[otel]'"
        ) from exc
    assert settings.otlp_endpoint is not None
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=settings.headers or None)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    return provider


class TracingMiddleware:
    """A SERVER span around each HTTP request, from its first byte to its response's last (a
    stream's span lasts as long as the stream). The span is the current one while the request is
    handled, so the upstream call's `traceparent` (`inject_trace_headers`) names it as parent."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(carrier)
        method, path = scope["method"], scope["path"]
        span = self.tracer.start_span(
            f"{method} {_route(path)}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        )
        token = context.attach(trace.set_span_in_context(span, parent))

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            await send(message)

        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            request_id = scope.get("state", {}).get("request_id")
            if request_id:
                span.set_attribute("lumen.request_id", request_id)
            span.end()
            context.detach(token)


def annotate(**attributes: Any) -> None:
    """Adds `lumen.*` attributes to the current request's span (a no-op when tracing is off)."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"lumen.{k}": v for k, v in attributes.items() if v is not None})


def inject_trace_headers(headers: MutableMapping[str, str]) -> None:
    """Adds the current span's `traceparent` (and `tracestate`) for an upstream request."""
    from opentelemetry import propagate

    propagate.inject(headers)


def _route(path: str) -> str:
    for prefix in _TEMPLATED:
        if path.startswith(prefix) and len(path) > len(prefix):
            rest = path[len(prefix) :]
            return prefix + "{model}" + ("/acknowledge" if rest.endswith("/acknowledge") else "")
    return path
