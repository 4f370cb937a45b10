"""OpenTelemetry tracing, exported over real OTLP/HTTP to a collector the test runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from lumen.ops.tracing import _route
from tests.fakes.upstream import FakeUpstream
from tests.support import model, running_lumen, upstream

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Collector:
    """An OTLP/HTTP trace receiver: decodes every export request it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, str]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    collector.resources.append(
                        {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                    )
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.server.shutdown()


def attributes(span: Span) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        found[attribute.key] = getattr(value, value.WhichOneof("value"))
    return found


def config(fake: FakeUpstream, endpoint: str | None) -> dict[str, Any]:
    tracing = {"otlp_endpoint": endpoint, "service_name": "lumen-test"} if endpoint else {}
    return {"models": [model("m", upstream(fake.url))], "tracing": tracing}


def test_a_request_is_one_server_span_in_the_callers_trace_and_the_upstreams(
    tmp_path: Path, fake: FakeUpstream, collector: Collector
) -> None:
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with running_lumen(tmp_path, config(fake, collector.url)) as lumen:
        plain = httpx.post(
            lumen.v1 + "/chat/completions", headers={**lumen.auth, "traceparent": traceparent}, json=BODY
        )
        streamed = httpx.post(
            lumen.v1 + "/chat/completions", headers=lumen.auth, json={**BODY, "stream": True}
        )
        missing = httpx.post(
            lumen.v1 + "/chat/completions", headers=lumen.auth, json={**BODY, "model": "nope"}
        )
    # Leaving the block shut Lumen down, which exports every span still batched.
    assert plain.status_code == 200 and streamed.status_code == 200 and missing.status_code == 404
    spans = collector.named("POST /v1/chat/completions")
    assert len(spans) == 3
    assert collector.resources[0]["service.name"] == "lumen-test"
    by_request = {attributes(s)["lumen.request_id"]: s for s in spans}

    first = by_request[plain.headers["x-request-id"]]
    assert first.trace_id.hex() == CALLER_TRACE and first.parent_span_id.hex() == CALLER_SPAN
    assert first.kind == Span.SPAN_KIND_SERVER
    facts = attributes(first)
    assert facts["http.response.status_code"] == 200 and facts["lumen.model"] == "m"
    assert facts["lumen.completion_tokens"] > 0 and facts["lumen.source"] == "api"
    # The upstream was called inside that span, with it as the parent.
    sent = fake.headers[0]["traceparent"].split("-")
    assert sent[1] == CALLER_TRACE and sent[2] == first.span_id.hex()

    second = by_request[streamed.headers["x-request-id"]]
    assert second.trace_id.hex() != CALLER_TRACE and not second.parent_span_id  # a new trace
    assert attributes(second)["lumen.finish_reason"] == "stop"
    assert fake.headers[1]["traceparent"].split("-")[1] == second.trace_id.hex()
    # A stream's span ends when its last byte is sent, after the upstream's answer completed.
    assert second.end_time_unix_nano > second.start_time_unix_nano

    refused = attributes(by_request[missing.headers["x-request-id"]])
    assert refused["http.response.status_code"] == 404


def test_without_a_collector_nothing_is_traced_or_sent_upstream(tmp_path: Path, fake: FakeUpstream) -> None:
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with running_lumen(tmp_path, config(fake, None)) as lumen:
        answer = httpx.post(
            lumen.v1 + "/chat/completions", headers={**lumen.auth, "traceparent": traceparent}, json=BODY
        )
    assert answer.status_code == 200
    assert "traceparent" not in fake.headers[0]


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1/models", "/v1/models"),
        ("/v1/models/org/llama-3", "/v1/models/{model}"),
        ("/v1/models/careful/acknowledge", "/v1/models/{model}/acknowledge"),
    ],
)
def test_span_names_keep_model_names_out(path: str, route: str) -> None:
    assert _route(path) == route
