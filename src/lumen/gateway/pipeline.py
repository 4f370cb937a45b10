"""The call pipeline: one object owns a model call from admission to settlement.

    call = pipeline.call(spec, principal, request_id=rid, source="api")
    async with call:                        # admission: access, coin hold, rate limits
        result = await call.unary()         # lease, upstream, failover
    # leaving the block released everything and settled: charge + usage record, exactly once

    call = pipeline.call(spec, principal, ...)
    await call.admit()
    events = await call.stream()            # SSE bytes; its `finally` (or `aclose`) settles
    return SSEResponse(events, headers=call.headers, on_abandon=call.aclose)

Whatever ends the call — success, a refusal, an upstream failure, an exception, a cancellation
or a client disconnect — `aclose` (also run by `__aexit__` and by the stream's `finally`) releases
the endpoint lease, settles the coin holds, returns unused rate-limit tokens and writes one usage
record, once. Nothing else in Lumen touches holds, leases or in-flight counts.

Billing rules, written once here: a call that never reached a backend costs nothing; a call whose
backend failed before the client received any of the answer costs nothing; every other call costs
its usage as reported by the backend, or else the prompt estimate plus the locally counted answer
(also for a client that stopped it), never more completion tokens than the cap that was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

from lumen.billing.bank import CoinBank, Reservation
from lumen.billing.estimate import content_text, counter_for, estimate_prompt, text_tokens
from lumen.billing.prices import cost_micro
from lumen.errors import InvalidRequest, LumenError, ModelNotFound, NoBackendAvailable, UpstreamError
from lumen.gateway.admission import Gate, Ticket
from lumen.gateway.lease import Attempts, Lease, Router
from lumen.gateway.relay import DONE, KEEPALIVE, StreamOutcome, StreamRelay, estimated_usage
from lumen.gateway.spec import CallSpec, call_spec
from lumen.identity.principal import Principal
from lumen.ops.tracing import annotate, inject_trace_headers
from lumen.settings import Settings
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
SETTLE_RETRY_DELAYS = (0.05, 0.25, 1.0, 4.0)
"""Seconds between attempts to settle a call whose settlement failed (a Redis hiccup)."""
FIRST_WAIT = 2.0
"""Seconds a stream waits for the upstream's headers before its response starts: a refusal or a
failure within them is a real HTTP status; after them the client gets keep-alive comments, and a
failure arrives as an error event."""


@dataclass(frozen=True, slots=True)
class Ending:
    """How a call ended, for its usage record and its bill."""

    status: int
    usage: dict[str, Any] | None = None
    error: LumenError | None = None
    finish_reason: str | None = None
    first_chunk_at: float | None = None
    delivered: bool = False
    """The client received some of the answer."""
    completion_estimate: int = 0
    truncated: bool = False


class Pipeline:
    def __init__(
        self,
        *,
        registry: Registry,
        settings: Callable[[], Settings],
        gate: Gate,
        bank: CoinBank,
        recorder: UsageRecorder,
        observe: Callable[[UsageRecord], None] | None = None,
    ) -> None:
        self.registry = registry
        self.gate = gate
        self.bank = bank
        self.recorder = recorder
        self.router = Router(lambda: settings().routing)
        self._settings = settings
        self._observe = observe
        self._pending: set[asyncio.Future[None]] = set()
        # Both only grow; their difference is the number of admitted calls still open.
        self.admitted = 0
        self.closed = 0

    @property
    def holding(self) -> int:
        """Admitted calls holding a rate-limit admission and coin reservations right now."""
        return self.admitted - self.closed

    @property
    def settling(self) -> int:
        """Settlements started and not finished."""
        return len(self._pending)

    def settings(self) -> Settings:
        return self._settings()

    def resolve(self, name: str, op: Operation) -> Model:
        model = self.registry.get(name)
        if model is None:
            raise ModelNotFound(name)
        if model.settings.kind != KIND_OF_OPERATION[op]:
            raise InvalidRequest(
                f"The model '{name}' is a {model.settings.kind} model and cannot serve {op}.",
                param="model",
                code="model_not_supported",
            )
        return model

    def spec(self, op: Operation, model: Model, body: dict[str, Any]) -> CallSpec:
        """The call spec of a validated body; the whole prompt is estimated once, here (with the
        model's own tokenizer where Lumen runs it), for the hold and for billing a call that
        ends without the backend's usage."""
        counter = counter_for(endpoint.backend for endpoint in model.endpoints)
        return call_spec(
            op,
            model,
            body,
            prompt_estimate=estimate_prompt(op, body, counter=counter),
            default_output_tokens=self._settings().billing.default_output_tokens,
        )

    def call(
        self,
        spec: CallSpec,
        principal: Principal,
        *,
        request_id: str,
        source: str = "api",
        started: float | None = None,
        on_record: Callable[[UsageRecord], None] | None = None,
    ) -> Call:
        return Call(self, spec, principal, request_id, source, started or time.perf_counter(), on_record)

    def record_refusal(
        self,
        principal: Principal,
        *,
        request_id: str,
        op: str,
        model: str,
        error: LumenError | None,
        started: float,
        source: str = "api",
    ) -> None:
        """The usage record of a request that ended before it was a call (a bad body, an unknown
        model, or `error=None`: cancelled meanwhile, 499): counted, never billed."""
        status = 499 if error is None else error.status
        record = _record(request_id, principal, model, op, source, started, error=error, status=status)
        self.recorder.record(record)
        self.observe(record)

    def observe(self, record: UsageRecord) -> None:
        """Every usage record goes to the metrics (and the trace, if on); to the database it goes
        with its charge (`CoinBank.finish`), or, for a refusal, through the recorder."""
        if self.traced():
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

    def traced(self) -> bool:
        return self._settings().tracing.otlp_endpoint is not None

    def track(self, task: asyncio.Future[None]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def aclose(self) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)


class Call:
    """One admitted (or refused) model call. See the module docstring for its life."""

    def __init__(
        self,
        pipeline: Pipeline,
        spec: CallSpec,
        principal: Principal,
        request_id: str,
        source: str,
        started: float,
        on_record: Callable[[UsageRecord], None] | None,
    ) -> None:
        self.pipeline = pipeline
        self.spec = spec
        self.principal = principal
        self.request_id = request_id
        self.source = source
        self.started = started
        self.on_record = on_record
        self.ticket: Ticket | None = None
        self.record: UsageRecord | None = None
        """The call's usage record, once it has ended (cost final)."""
        self._attempts = Attempts()
        self._lease: Lease | None = None
        self._ending: Ending | None = None
        self._opening: asyncio.Future[tuple[Endpoint, ChunkStream]] | None = None
        self._relay: StreamRelay | None = None
        self._finishing: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def headers(self) -> dict[str, str]:
        return self.ticket.headers if self.ticket is not None else {}

    async def __aenter__(self) -> Call:
        await self.admit()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose(exc)

    async def admit(self) -> None:
        """Access, coins, rate limits; a refusal is recorded and raised with the rate headers."""
        pipeline = self.pipeline
        try:
            self.ticket = await pipeline.gate.admit(self.spec, self.principal, request_id=self.request_id)
        except Exception as exc:
            self._closed = True
            error = exc if isinstance(exc, LumenError) else unexpected_error(exc)
            pipeline.record_refusal(
                self.principal,
                request_id=self.request_id,
                op=self.spec.op,
                model=self.spec.model.name,
                error=error,
                started=self.started,
                source=self.source,
            )
            if error is exc and "x-ratelimit-limit-requests" not in error.headers:
                error.headers.update(await pipeline.gate.peek_headers(self.principal, self.spec.model.name))
            raise
        except BaseException:
            self._closed = True  # cancelled: the gate gave back what it had taken
            pipeline.record_refusal(
                self.principal,
                request_id=self.request_id,
                op=self.spec.op,
                model=self.spec.model.name,
                error=None,
                started=self.started,
                source=self.source,
            )
            raise
        self.spec = self.ticket.spec
        pipeline.admitted += 1

    # -- non-streaming ----------------------------------------------------------------------

    async def unary(self) -> dict[str, Any]:
        """The backend's answer, after failover; the call's ending is set for `aclose`."""
        spec, router = self.spec, self.pipeline.router
        while True:
            lease = self._lease = router.lease(spec.model, self._attempts)
            endpoint = lease.endpoint
            try:
                result = await endpoint.backend.request(spec.op, self._body(endpoint), self._options())
            except UpstreamError as exc:
                if router.failed(lease, exc, self._attempts):
                    continue
                raise router.final_error(spec.model, self._attempts) from exc
            break
        endpoint.record_success()
        result["model"] = spec.model.name
        usage = result.get("usage")
        truncated = _enforce_cap(result, spec)
        if not isinstance(usage, dict) or "prompt_tokens" not in usage:
            usage = result["usage"] = estimated_usage(spec.prompt_estimate, _generated_tokens(result))
        self._ending = Ending(
            200, usage, finish_reason=_finish_reason(result), delivered=True, truncated=truncated
        )
        return result

    # -- streaming ---------------------------------------------------------------------------

    async def stream(self) -> AsyncGenerator[bytes, None]:
        """Opens the upstream stream (failover included) and returns the client's SSE bytes. Waits
        up to `FIRST_WAIT` for the upstream's headers, so that an early failure is raised as a
        real HTTP status; a later one reaches the client as an error event."""
        opening = self._opening = asyncio.ensure_future(self._open())
        try:
            await asyncio.wait({opening}, timeout=min(FIRST_WAIT, self._keepalive()))
        except BaseException as exc:
            await self.aclose(exc)
            raise
        error = _failure(opening)
        if error is not None:
            await self.aclose(error)
            raise error
        return self._events(opening)

    async def _events(
        self, opening: asyncio.Future[tuple[Endpoint, ChunkStream]]
    ) -> AsyncGenerator[bytes, None]:
        try:
            while not opening.done():
                await asyncio.wait({opening}, timeout=self._keepalive())
                if not opening.done():
                    yield KEEPALIVE
            error = _failure(opening)
            if isinstance(error, asyncio.CancelledError):
                raise error
            if error is not None:
                failure = error if isinstance(error, LumenError) else unexpected_error(error)
                await self._finish(Ending(failure.status, error=failure))
                yield _error_event(failure)
                return
            endpoint, upstream = opening.result()
            spec = self.spec
            self._relay = StreamRelay(
                endpoint=endpoint,
                stream=upstream,
                chunk_object=CHUNK_OBJECT[spec.op],
                model_name=spec.model.name,
                include_usage=spec.include_usage,
                prompt_estimate=spec.prompt_estimate,
                max_completion=spec.max_completion,
                keepalive_interval=self._keepalive(),
                reopen=self._reopen,
                settle=self._settle_stream,
            )
            try:
                async for chunk in self._relay.events():
                    yield chunk
            except Exception as exc:  # noqa: BLE001 - a bug's exception, reported in-band
                # A bug, not a backend failure (those the relay sends itself): the answer has
                # started, so the error goes in-band and the call settles with it.
                failure = unexpected_error(exc)
                self._relay.outcome.error = failure
                await self._finish(_stream_ending(self._relay.outcome))
                yield _error_event(failure)
        finally:
            await self.aclose()

    async def _open(self) -> tuple[Endpoint, ChunkStream]:
        spec, router = self.spec, self.pipeline.router
        while True:
            lease = self._lease = router.lease(spec.model, self._attempts)
            endpoint = lease.endpoint
            try:
                upstream = await endpoint.backend.open_stream(spec.op, self._body(endpoint), self._options())
            except UpstreamError as exc:
                if router.failed(lease, exc, self._attempts):
                    continue
                raise router.final_error(spec.model, self._attempts) from exc
            return endpoint, upstream

    async def _reopen(self, error: UpstreamError) -> tuple[Endpoint, ChunkStream] | None:
        """The upstream failed before its first chunk: the client has seen only keep-alives, so
        another endpoint can still answer in its place."""
        assert self._lease is not None
        if not self.pipeline.router.failed(self._lease, error, self._attempts):
            return None
        try:
            return await self._open()
        except LumenError:
            return None

    async def _settle_stream(self, outcome: StreamOutcome) -> None:
        await self._finish(_stream_ending(outcome))

    # -- the end -----------------------------------------------------------------------------

    async def aclose(self, exc: BaseException | None = None) -> None:
        """Ends the call, once: stops what runs upstream and settles. `exc` is what ended it, if
        anything went wrong (a cancellation counts as the client leaving)."""
        if self._closed:
            return
        self._closed = True
        opening = self._opening
        if opening is not None and not opening.done():
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
        if self._relay is not None:
            try:
                await self._relay.close()
            except Exception:
                log.exception("closing the upstream stream of request %s failed", self.request_id)
        elif opening is not None and opening.done() and _failure(opening) is None:
            await opening.result()[1].aclose()  # opened, never relayed: the client left first
        if self._finishing is None:
            await self._finish(self._ending_after(exc))

    def _ending_after(self, exc: BaseException | None) -> Ending:
        if self._ending is not None and exc is None:
            return self._ending
        if self._relay is not None:
            outcome = self._relay.outcome
            if exc is None or isinstance(exc, asyncio.CancelledError | GeneratorExit):
                outcome.cancelled = outcome.cancelled or outcome.error is None
            return _stream_ending(outcome)
        if exc is None or isinstance(exc, asyncio.CancelledError | GeneratorExit):
            return Ending(499, finish_reason="cancelled")
        error = exc if isinstance(exc, LumenError) else unexpected_error(exc)
        return Ending(error.status, error=error)

    async def _finish(self, ending: Ending) -> None:
        if self._finishing is None:
            # A task of its own, so the settlement runs to its end even when the request's task is
            # being cancelled again.
            self._finishing = asyncio.ensure_future(self._settle(ending))
            self.pipeline.track(self._finishing)
        await asyncio.shield(self._finishing)

    async def _settle(self, ending: Ending) -> None:
        pipeline, spec = self.pipeline, self.spec
        lease, self._lease = self._lease, None
        reached = lease is not None or bool(self._attempts.tried)
        if lease is not None:
            error = ending.error
            if isinstance(error, UpstreamError) and error.retryable and not lease.released:
                pipeline.router.mark_down(lease.endpoint, error)  # it broke or went silent mid-answer
            elif ending.delivered:
                lease.endpoint.record_success()
            lease.release(served=ending.status == 200)
        usage = ending.usage
        if usage is None and reached:
            usage = estimated_usage(spec.prompt_estimate, ending.completion_estimate)
        prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        if ending.truncated and spec.max_completion:
            completion = min(completion, spec.max_completion)
        failed_backend = isinstance(ending.error, UpstreamError | NoBackendAvailable)
        billable = reached and not (failed_backend and not ending.delivered)
        cost = cost_micro(spec.model.settings.price, prompt, completion) if billable else 0
        endpoint = lease.endpoint if lease is not None else None
        record = _record(
            self.request_id,
            self.principal,
            spec.model.name,
            spec.op,
            self.source,
            self.started,
            error=ending.error,
            status=ending.status,
            endpoint=endpoint.label if endpoint is not None else None,
            prompt=prompt,
            completion=completion,
            estimated=bool(usage and usage.get("estimated")) or usage is None,
            cost=cost,
            first_chunk_at=ending.first_chunk_at,
            finish_reason=ending.finish_reason,
        )
        ticket = self.ticket
        try:
            await self._settle_and_record(ticket.reservations if ticket is not None else (), record)
        finally:
            self.record = record
            pipeline.observe(record)
            if self.on_record is not None:
                self.on_record(record)
            if ticket is not None:
                pipeline.closed += 1
                await ticket.limits.release(prompt + completion if billable else 0)

    async def _settle_and_record(self, reservations: Sequence[Reservation], record: UsageRecord) -> None:
        """Charges the holds and stores the usage record with the charge (`CoinBank.finish`),
        retrying a failed attempt: it is the one step of a call that must not be given up. A retry
        cannot charge twice: `finish` retires each hold before it charges it, so a second call only
        stores the record, which `record_id` keeps single."""
        for delay in (*SETTLE_RETRY_DELAYS, None):
            try:
                # In this task of its own (`_finish`), which `Pipeline.aclose` waits for.
                await self.pipeline.bank.finish(reservations, record, own_task=False)
                return
            except (Exception, asyncio.CancelledError) as exc:
                task = asyncio.current_task()
                if isinstance(exc, asyncio.CancelledError) and task is not None:
                    task.uncancel()  # this task exists to finish the settlement
                if delay is None:
                    log.error("could not settle request %s", self.request_id, exc_info=exc)
                    return
                log.warning("settling request %s failed (%r); retrying", self.request_id, exc)
                await asyncio.sleep(delay)

    # -- helpers -----------------------------------------------------------------------------

    def _keepalive(self) -> float:
        return self.pipeline.settings().routing.keepalive_interval

    def _body(self, endpoint: Endpoint) -> dict[str, Any]:
        return self.spec.upstream_body(endpoint.upstream_model, stream_usage=endpoint.settings.stream_usage)

    def _options(self) -> CallOptions:
        timeouts = self.spec.model.settings.timeouts
        routing = self.pipeline.settings().routing
        headers: tuple[tuple[str, str], ...] = ()
        if self.pipeline.traced():
            carrier: dict[str, str] = {}
            inject_trace_headers(carrier)
            headers = tuple(carrier.items())
        return CallOptions(
            connect_timeout=timeouts.connect,
            first_token_timeout=timeouts.first_token,
            between_chunks_timeout=timeouts.between_chunks,
            request_timeout=timeouts.request,
            request_id=self.request_id,
            headers=headers,
            max_response_bytes=routing.max_response_bytes,
            max_event_bytes=routing.max_event_bytes,
        )


def _failure(opening: asyncio.Future[Any]) -> BaseException | None:
    """What a finished opening failed with (a cancellation included), or None."""
    if not opening.done():
        return None
    if opening.cancelled():
        return asyncio.CancelledError()
    return opening.exception()


def _error_event(error: LumenError) -> bytes:
    return b"data: " + orjson.dumps(error.envelope()) + b"\n\n" + DONE


def _stream_ending(outcome: StreamOutcome) -> Ending:
    reasons = [r for r in outcome.finish_reasons.values() if r]
    error = outcome.error
    status = 499 if outcome.cancelled and error is None else (error.status if error else 200)
    return Ending(
        status,
        usage=outcome.usage,
        error=error,
        finish_reason=reasons[0] if reasons else ("cancelled" if outcome.cancelled else None),
        first_chunk_at=outcome.first_chunk_at,
        delivered=outcome.delivered,
        completion_estimate=outcome.completion_estimate(),
        truncated=outcome.truncated,
    )


def _enforce_cap(result: dict[str, Any], spec: CallSpec) -> bool:
    """A non-streaming answer from a backend that ignored its cap: each choice is cut at about the
    cap (four characters a token) and ends with `finish_reason: "length"`. True if it was cut."""
    if not spec.output_cap:
        return False
    usage = result.get("usage")
    reported = usage.get("completion_tokens") if isinstance(usage, dict) else None
    generated = reported if isinstance(reported, int) else _generated_tokens(result)
    if generated <= spec.max_completion:
        return False
    limit = spec.output_cap * 4
    for choice in result.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            message["content"] = message["content"][:limit]
        elif isinstance(choice.get("text"), str):
            choice["text"] = choice["text"][:limit]
        choice["finish_reason"] = "length"
    if isinstance(usage, dict):
        usage["completion_tokens"] = spec.max_completion
        usage["total_tokens"] = _count(usage, "prompt_tokens") + spec.max_completion
    return True


def _generated_tokens(result: dict[str, Any]) -> int:
    generated = 0
    for choice in result.get("choices") or ():
        if isinstance(choice, dict):
            message = choice.get("message")
            text = content_text(message.get("content")) if isinstance(message, dict) else choice.get("text")
            generated += text_tokens(text if isinstance(text, str) else "")
    return generated


def _finish_reason(result: dict[str, Any]) -> str | None:
    for choice in result.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return str(choice["finish_reason"])
    return None


def _count(usage: dict[str, Any] | None, name: str) -> int:
    value = usage.get(name) if usage else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def unexpected_error(exc: BaseException) -> LumenError:
    """A bug's exception as the error the client and the usage record see (logged in full)."""
    log.error("call failed unexpectedly", exc_info=exc)
    return LumenError("The server had an error while processing your request.")


def _record(
    request_id: str,
    principal: Principal,
    model: str,
    op: str,
    source: str,
    started: float,
    *,
    status: int,
    error: LumenError | None = None,
    endpoint: str | None = None,
    prompt: int = 0,
    completion: int = 0,
    estimated: bool = False,
    cost: int = 0,
    first_chunk_at: float | None = None,
    finish_reason: str | None = None,
) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        created_at=datetime.now(UTC),
        principal=principal.id,
        key_id=principal.key_id,
        model=model,
        endpoint=endpoint,
        source=source,
        operation=op,
        prompt_tokens=prompt,
        completion_tokens=completion,
        estimated=estimated,
        cost_micro=cost,
        latency_ms=(time.perf_counter() - started) * 1000,
        ttft_ms=(first_chunk_at - started) * 1000 if first_chunk_at else None,
        status=status,
        finish_reason=finish_reason,
        error_code=error.code if error else None,
    )
