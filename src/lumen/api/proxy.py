"""Serving one /v1 call through a model's endpoints: choose, fail over, relay, meter.

Everything that can refuse a call runs before the first byte, so refusals are real HTTP statuses.
A connection failure, timeout or 5xx before the first byte is retried on another endpoint, up to
`routing.max_attempts` endpoints; after the first byte the stream ends with an error event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import Response

from lumen.api.gate import Pass
from lumen.api.relay import StreamOutcome, StreamRelay, estimated_usage
from lumen.api.sse import SSEResponse
from lumen.billing.estimate import content_text, text_tokens
from lumen.errors import InvalidRequest, LumenError, ModelNotFound, NoBackendAvailable, UpstreamError
from lumen.identity.principal import Principal
from lumen.ops.tracing import annotate, inject_trace_headers
from lumen.settings import ModelSettings, Settings
from lumen.upstream.balancer import Balancer
from lumen.upstream.base import CallOptions, ChunkStream, Operation
from lumen.upstream.endpoint import Endpoint
from lumen.upstream.registry import Model, Registry
from lumen.usage.recorder import UsageRecord, UsageRecorder

log = logging.getLogger(__name__)

KIND_OF_OPERATION: dict[Operation, str] = {
    "chat.completions": "chat",
    "completions": "chat",
    "embeddings": "embeddings",
}
CHUNK_OBJECT: dict[Operation, str] = {
    "chat.completions": "chat.completion.chunk",
    "completions": "text_completion",
}


@dataclass(slots=True)
class Call:
    """One client request on its way through the gateway."""

    op: Operation
    model: Model
    body: dict[str, Any]
    principal: Principal
    request_id: str
    prompt_estimate: int
    include_usage: bool = False
    source: str = "api"
    started: float = 0.0
    gate_pass: Pass | None = None
    on_record: Callable[[UsageRecord], None] | None = None
    """Called with the call's usage record when the call ends, its cost final (the chat page stores
    an answer's tokens and coins from it)."""

    @property
    def headers(self) -> dict[str, str]:
        return self.gate_pass.headers if self.gate_pass is not None else {}


class Proxy:
    def __init__(
        self,
        registry: Registry,
        settings: Callable[[], Settings],
        recorder: UsageRecorder,
        observe: Callable[[UsageRecord], None] | None = None,
    ) -> None:
        self._registry = registry
        self._settings = settings
        self._recorder = recorder
        self._observe = observe
        self._balancer = Balancer()

    def _traced(self) -> bool:
        return self._settings().tracing.otlp_endpoint is not None

    def _options(self, call: Call) -> CallOptions:
        if not self._traced():
            return _options(call)
        carrier: dict[str, str] = {}
        inject_trace_headers(carrier)
        return _options(call, tuple(carrier.items()))

    def _emit(self, record: UsageRecord) -> None:
        """Every usage record goes to the database and to the metrics (and the trace, if on)."""
        self._recorder.record(record)
        if self._traced():
            annotate(
                model=record.model,
                endpoint=record.endpoint,
                principal=record.principal,
                source=record.source,
                prompt_tokens=record.prompt_tokens,
                completion_tokens=record.completion_tokens,
                cost_micro=record.cost_micro,
                ttft_ms=record.ttft_ms,
                finish_reason=record.finish_reason,
                error_code=record.error_code,
            )
        if self._observe is not None:
            self._observe(record)

    def resolve(self, name: str, op: Operation) -> Model:
        model = self._registry.get(name)
        if model is None:
            raise ModelNotFound(name)
        if model.settings.kind != KIND_OF_OPERATION[op]:
            raise InvalidRequest(
                f"The model '{name}' is a {model.settings.kind} model and cannot serve {op}.",
                param="model",
                code="model_not_supported",
            )
        return model

    async def unary(self, call: Call) -> Response:
        tried: list[Endpoint] = []
        last_error: UpstreamError | None = None
        while True:
            try:
                endpoint = self._next_endpoint(call, tried, last_error)
            except LumenError as exc:
                self._record(call, tried[-1] if tried else None, None, status=exc.status, error=exc)
                exc.headers.update(call.headers)
                raise
            endpoint.in_flight += 1
            try:
                result = await endpoint.backend.request(
                    call.op, self._upstream_body(call, endpoint), self._options(call)
                )
            except UpstreamError as exc:
                if self._fail_over(endpoint, exc, tried):
                    last_error = exc
                    continue
                self._record(call, endpoint, None, status=exc.status, error=exc)
                exc.headers.update(call.headers)
                raise
            finally:
                endpoint.in_flight -= 1
            endpoint.record_success()
            result["model"] = call.model.name
            usage = result.get("usage")
            if not isinstance(usage, dict) or "prompt_tokens" not in usage:
                usage = result["usage"] = self._estimate_unary(call, result)
            self._record(call, endpoint, usage, status=200, finish_reason=_finish_reason(result))
            return Response(orjson.dumps(result), media_type="application/json", headers=call.headers)

    async def stream(self, call: Call) -> SSEResponse:
        tried: list[Endpoint] = []
        try:
            endpoint, stream = await self._open(call, tried, None)
        except LumenError as exc:
            self._record(call, tried[-1] if tried else None, None, status=exc.status, error=exc)
            exc.headers.update(call.headers)
            raise

        async def reopen(error: UpstreamError) -> tuple[Endpoint, ChunkStream] | None:
            # The upstream failed before its first chunk: the client has seen only keep-alives,
            # so another endpoint can still answer in its place. The endpoint the relay holds
            # stays counted in flight until it is replaced.
            failed = relay.endpoint
            if not self._fail_over(failed, error, tried):
                return None
            try:
                replacement = await self._open(call, tried, error)
            except LumenError:
                return None
            failed.in_flight -= 1
            return replacement

        relay = StreamRelay(
            endpoint=endpoint,
            stream=stream,
            chunk_object=CHUNK_OBJECT[call.op],
            model_name=call.model.name,
            include_usage=call.include_usage,
            prompt_estimate=call.prompt_estimate,
            keepalive_interval=self._settings().routing.keepalive_interval,
            reopen=reopen,
            on_close=lambda ep, outcome: self._close_stream(call, ep, outcome),
        )
        return SSEResponse(relay.events(), headers=call.headers, on_abandon=relay.abandon)

    async def _open(
        self, call: Call, tried: list[Endpoint], last_error: UpstreamError | None
    ) -> tuple[Endpoint, ChunkStream]:
        while True:
            endpoint = self._next_endpoint(call, tried, last_error)
            endpoint.in_flight += 1
            try:
                stream = await endpoint.backend.open_stream(
                    call.op, self._upstream_body(call, endpoint), self._options(call)
                )
            except UpstreamError as exc:
                endpoint.in_flight -= 1
                if self._fail_over(endpoint, exc, tried):
                    last_error = exc
                    continue
                raise
            return endpoint, stream

    def _next_endpoint(self, call: Call, tried: list[Endpoint], last_error: UpstreamError | None) -> Endpoint:
        endpoint = self._balancer.pick(call.model.endpoints, tried)
        if endpoint is None:
            # Every endpoint is down or was tried: report what went wrong, or that none could serve.
            raise last_error or self._unavailable(call.model)
        tried.append(endpoint)
        return endpoint

    def _fail_over(self, endpoint: Endpoint, exc: UpstreamError, tried: list[Endpoint]) -> bool:
        """Records the endpoint's health after `exc`; True when another endpoint may be tried."""
        if not exc.retryable:
            endpoint.record_success()  # it answered, so it is up; the request itself was refused
            return False
        routing = self._settings().routing
        endpoint.record_failure(exc.message, backoff=routing.failure_backoff, max_backoff=routing.max_backoff)
        retry = len(tried) < routing.max_attempts
        log.warning(
            "endpoint %s failed: %s%s", endpoint.label, exc.message, " (failing over)" if retry else ""
        )
        return retry

    def _unavailable(self, model: Model) -> NoBackendAvailable:
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

    def _upstream_body(self, call: Call, endpoint: Endpoint) -> dict[str, Any]:
        body = dict(call.body)
        body["model"] = endpoint.upstream_model
        if body.get("stream"):
            if endpoint.settings.stream_usage:
                options = body.get("stream_options")
                body["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
        else:
            # Some servers (vLLM) reject stream_options on a non-streaming request.
            body.pop("stream_options", None)
        return body

    def _estimate_unary(self, call: Call, result: dict[str, Any]) -> dict[str, Any]:
        generated = 0
        for choice in result.get("choices") or ():
            if isinstance(choice, dict):
                message = choice.get("message")
                text = (
                    content_text(message.get("content")) if isinstance(message, dict) else choice.get("text")
                )
                generated += text_tokens(text if isinstance(text, str) else "")
        return estimated_usage(call.prompt_estimate, generated)

    def _close_stream(self, call: Call, endpoint: Endpoint, outcome: StreamOutcome) -> None:
        endpoint.in_flight -= 1
        error = outcome.error
        if isinstance(error, UpstreamError) and error.retryable:
            # A connection that broke or went silent mid-stream counts against the endpoint.
            routing = self._settings().routing
            endpoint.record_failure(
                error.message, backoff=routing.failure_backoff, max_backoff=routing.max_backoff
            )
        elif outcome.first_chunk_at is not None:
            endpoint.record_success()
        usage = outcome.usage or estimated_usage(call.prompt_estimate, outcome.completion_estimate())
        status = 499 if outcome.cancelled else (outcome.error.status if outcome.error else 200)
        reasons = [r for r in outcome.finish_reasons.values() if r]
        self._record(
            call,
            endpoint,
            usage,
            status=status,
            error=outcome.error,
            finish_reason=reasons[0] if reasons else ("cancelled" if outcome.cancelled else None),
            first_chunk_at=outcome.first_chunk_at,
        )

    def record_refusal(
        self,
        principal: Principal,
        request_id: str,
        op: Operation,
        model: str,
        error: LumenError,
        started: float,
        source: str = "api",
    ) -> None:
        self._emit(
            UsageRecord(
                request_id=request_id,
                created_at=datetime.now(UTC),
                principal=principal.id,
                key_id=principal.key_id,
                model=model,
                endpoint=None,
                source=source,
                operation=op,
                prompt_tokens=0,
                completion_tokens=0,
                estimated=False,
                cost_micro=0,
                latency_ms=(time.perf_counter() - started) * 1000,
                ttft_ms=None,
                status=error.status,
                finish_reason=None,
                error_code=error.code,
            )
        )

    def _record(
        self,
        call: Call,
        endpoint: Endpoint | None,
        usage: dict[str, Any] | None,
        *,
        status: int,
        error: LumenError | None = None,
        finish_reason: str | None = None,
        first_chunk_at: float | None = None,
    ) -> None:
        now = time.perf_counter()
        cost = call.gate_pass.close(usage) if call.gate_pass is not None else 0
        usage = usage or {}
        record = UsageRecord(
            request_id=call.request_id,
            created_at=datetime.now(UTC),
            principal=call.principal.id,
            key_id=call.principal.key_id,
            model=call.model.name,
            endpoint=endpoint.label if endpoint else None,
            source=call.source,
            operation=call.op,
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            estimated=bool(usage.get("estimated", False)) or not usage,
            cost_micro=cost,
            latency_ms=(now - call.started) * 1000,
            ttft_ms=(first_chunk_at - call.started) * 1000 if first_chunk_at else None,
            status=status,
            finish_reason=finish_reason,
            error_code=error.code if error else None,
        )
        self._emit(record)
        if call.on_record is not None:
            call.on_record(record)


def _options(call: Call, headers: tuple[tuple[str, str], ...] = ()) -> CallOptions:
    timeouts = call.model.settings.timeouts
    return CallOptions(
        connect_timeout=timeouts.connect,
        first_token_timeout=timeouts.first_token,
        between_chunks_timeout=timeouts.between_chunks,
        request_timeout=timeouts.request,
        request_id=call.request_id,
        headers=headers,
    )


def _finish_reason(result: dict[str, Any]) -> str | None:
    for choice in result.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return str(choice["finish_reason"])
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def model_card(model: ModelSettings) -> dict[str, Any]:
    """The `/v1/models` entry: the spec's fields plus Lumen's extensions."""
    caps = model.capabilities
    return {
        "id": model.name,
        "object": "model",
        "created": 0,
        "owned_by": model.owned_by,
        "description": model.description,
        "kind": model.kind,
        "max_model_len": caps.context_window,
        "context_window": caps.context_window,
        "max_output_tokens": caps.max_output_tokens,
        "capabilities": {
            "modalities": list(caps.modalities),
            "tools": caps.tools,
            "reasoning": caps.reasoning,
        },
        "pricing": {
            "unit": "coins per million tokens",
            "input": model.price.input,
            "output": model.price.output,
        },
    }
