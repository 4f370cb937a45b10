"""How many tokens a request reserves from its tokens-per-minute limits before the answer is known.

Reserve the prompt (estimated) plus the most the answer may use: `max_tokens` when the client set it,
else `DEFAULT_OUTPUT_RESERVATION`, capped by what the model can produce, times `n`. After the answer,
`Admission.release(tokens_used)` replaces the reservation with the real count, so what a limit is
charged is exact once requests settle, and an answer longer than its reservation puts the limit in
debt that later requests wait for. Reserving keeps N concurrent streams from all passing a nearly
exhausted limit, which charging only afterwards would allow.
"""

from __future__ import annotations

DEFAULT_OUTPUT_RESERVATION = 1024
"""Completion tokens reserved when the request does not say `max_tokens`."""


def tokens_to_reserve(
    prompt_tokens: int,
    max_tokens: int | None = None,
    *,
    model_max_output: int | None = None,
    n: int = 1,
    default_output: int = DEFAULT_OUTPUT_RESERVATION,
) -> int:
    """Prompt plus expected completion tokens: for embeddings pass `max_tokens=0`."""
    output = default_output if max_tokens is None else max_tokens
    if model_max_output is not None:
        output = min(output, model_max_output)
    return max(prompt_tokens, 0) + max(output, 0) * max(n, 1)
