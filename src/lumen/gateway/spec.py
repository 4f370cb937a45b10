"""The call spec: what a surface derives once from a request, and what admission, the limiter, the
bank and the relay all read.

The output cap is the rule "reserve what is sent, and send what is reserved": the number of
completion tokens per choice that Lumen reserves coins and rate-limit tokens for is the very number
it sends upstream as the request's bound, whether the client gave one, Lumen's default stood in for
a missing one, or admission lowered it to what the caller's pool can pay.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lumen.upstream.base import Operation
from lumen.upstream.registry import Model


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One model call, as the pipeline sees it; surfaces build it with `call_spec`."""

    op: Operation
    model: Model
    body: Mapping[str, Any]
    """The request as the client sent it (already validated): forwarded with only the model name,
    the output cap and the stream options changed."""
    stream: bool
    prompt_estimate: int
    output_cap: int | None
    """Completion tokens per choice, sent upstream; None for operations that generate no text."""
    choices: int = 1
    include_usage: bool = False
    """The client asked for the usage chunk of a stream (`stream_options.include_usage`)."""
    cap_fields: tuple[str, ...] = ("max_tokens",)
    """The body fields that carry the cap upstream (the one the client used, or `max_tokens`)."""

    @property
    def max_completion(self) -> int:
        """Completion tokens of all choices together: what is reserved and relayed at most."""
        return 0 if self.output_cap is None else self.output_cap * self.choices

    def with_cap(self, cap: int) -> CallSpec:
        return dataclasses.replace(self, output_cap=cap)

    def upstream_body(self, upstream_model: str, *, stream_usage: bool) -> dict[str, Any]:
        """The body an endpoint receives: its own model name, the cap, and usage asked for on a
        stream when the endpoint supports `stream_options`."""
        body = dict(self.body)
        body["model"] = upstream_model
        if self.output_cap is not None:
            for name in self.cap_fields:
                body[name] = self.output_cap
        if self.stream:
            if stream_usage:
                options = body.get("stream_options")
                body["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
        else:
            # Some servers (vLLM) reject stream_options on a non-streaming request.
            body.pop("stream_options", None)
        return body


def call_spec(
    op: Operation,
    model: Model,
    body: Mapping[str, Any],
    *,
    prompt_estimate: int,
    default_output_tokens: int,
) -> CallSpec:
    """The spec of a validated request body. The cap is the client's (`max_completion_tokens`,
    else `max_tokens`), else `default_output_tokens`, never above the model's own output limit."""
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    if op == "embeddings":
        return CallSpec(op, model, body, False, prompt_estimate, None)
    fields = tuple(
        name for name in ("max_completion_tokens", "max_tokens") if _int(body.get(name)) is not None
    )
    requested = next((_int(body.get(name)) for name in fields), None)
    cap = default_output_tokens if requested is None else requested
    model_max = model.settings.capabilities.max_output_tokens
    if model_max is not None:
        cap = min(cap, model_max)
    choices = _int(body.get("n")) or 1
    return CallSpec(
        op,
        model,
        body,
        stream,
        prompt_estimate,
        cap,
        choices=max(choices, 1),
        include_usage=include_usage,
        cap_fields=fields or ("max_tokens",),
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
