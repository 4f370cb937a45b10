"""Micro-benchmark: CPU per request of aiohttp.ClientSession vs httpx.AsyncClient.

The architecture leaves the upstream client open ("measure both, keep the faster"). Each
client runs in a fresh interpreter on uvloop, pooled with keep-alive, against the fake
upstream, and we count the CPU time of that process only (time.process_time) over the
measured requests: that is what the client costs the gateway, with the gateway's own work
taken out. The fake upstream runs in its own process on the other core.

    python bench/client_overhead.py [--requests 3000] [--rounds 3] [--concurrency 1,16]

Modes: non-streaming (read the whole body) and a 16-chunk stream, read both as raw byte
chunks (what a relaying gateway needs) and as lines (what an SSE parser built on the
client's line reader would need).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson

from common import free_port, run

HERE = os.path.dirname(os.path.abspath(__file__))
BODY = orjson.dumps(
    {"model": "fake", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
)
STREAM_BODY = orjson.dumps(
    {
        "model": "fake",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
)
HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sk-fake"}
MODES = ("json", "stream-raw", "stream-lines")


async def _aiohttp(url: str, mode: str, n: int, warmup: int, conc: int) -> tuple[float, float, int]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one() -> int:
            if mode == "json":
                async with s.post(url, data=BODY, headers=HEADERS) as r:
                    return len(await r.read())
            count = 0
            async with s.post(url, data=STREAM_BODY, headers=HEADERS) as r:
                if mode == "stream-raw":
                    async for chunk in r.content.iter_any():
                        count += len(chunk)
                else:
                    async for line in r.content:
                        count += len(line)
            return count

        return await _drive(one, n, warmup, conc)


async def _httpx(url: str, mode: str, n: int, warmup: int, conc: int) -> tuple[float, float, int]:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=60)
    async with httpx.AsyncClient(limits=limits, timeout=60) as c:

        async def one() -> int:
            if mode == "json":
                r = await c.post(url, content=BODY, headers=HEADERS)
                return len(r.content)
            count = 0
            async with c.stream("POST", url, content=STREAM_BODY, headers=HEADERS) as r:
                if mode == "stream-raw":
                    async for chunk in r.aiter_raw():
                        count += len(chunk)
                else:
                    async for line in r.aiter_lines():
                        count += len(line)
            return count

        return await _drive(one, n, warmup, conc)


async def _drive(one: Any, n: int, warmup: int, conc: int) -> tuple[float, float, int]:
    """Run `warmup` then `n` calls of one() across `conc` workers; CPU and wall of the second part."""
    left = {"n": 0}

    async def worker() -> None:
        while left["n"] > 0:
            left["n"] -= 1
            if await one() <= 0:
                raise RuntimeError("empty response")

    left["n"] = warmup
    await asyncio.gather(*(worker() for _ in range(conc)))
    left["n"] = n
    c0, w0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return time.process_time() - c0, time.perf_counter() - w0, n


def worker_main(args: argparse.Namespace) -> None:
    fn = _aiohttp if args.worker == "aiohttp" else _httpx
    cpu, wall, n = run(fn(args.url, args.mode, args.requests, args.warmup, args.conc))
    print(orjson.dumps({"cpu_ms_per_request": cpu * 1000 / n, "rps": n / wall}).decode())


def _pin(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="measured non-streaming requests per run")
    ap.add_argument("--stream-requests", type=int, default=600, help="measured streams per run")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--concurrency", default="1,16", help="comma-separated in-flight request counts")
    ap.add_argument("--chunk-interval-ms", type=float, default=1.0, help="passed to the fake upstream")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument(
        "--out", default=None, help="result file (default bench/results/client-overhead-<ts>.json)"
    )
    # worker mode (internal)
    ap.add_argument("--worker", choices=("aiohttp", "httpx"), help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--conc", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args)
        return

    pin = (os.cpu_count() or 1) >= 2 and not args.no_pin
    port = free_port()
    fake = subprocess.Popen(
        [
            *_pin(1 if pin else None),
            sys.executable,
            os.path.join(HERE, "fake_upstream.py"),
            "--port",
            str(port),
            "--chunk-interval-ms",
            str(args.chunk_interval_ms),
        ],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    results: dict[str, Any] = {}
    try:
        time.sleep(1.0)  # the fake upstream starts in well under a second
        for conc in [int(c) for c in args.concurrency.split(",")]:
            for mode in MODES:
                samples: dict[str, list[dict[str, float]]] = {"aiohttp": [], "httpx": []}
                for _ in range(args.rounds):
                    for lib in samples:  # alternate, so drift hits both alike
                        cmd = [
                            *_pin(0 if pin else None),
                            sys.executable,
                            os.path.abspath(__file__),
                            "--worker",
                            lib,
                            "--mode",
                            mode,
                            "--url",
                            url,
                            "--conc",
                            str(conc),
                            "--requests",
                            str(args.requests if mode == "json" else args.stream_requests),
                            "--warmup",
                            str(args.warmup),
                        ]
                        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
                        samples[lib].append(orjson.loads(out.stdout))
                row = {
                    lib: {
                        "cpu_ms_per_request": round(statistics.median(s["cpu_ms_per_request"] for s in v), 4),
                        "rps": round(statistics.median(s["rps"] for s in v), 1),
                    }
                    for lib, v in samples.items()
                }
                results[f"{mode}@{conc}"] = row
                a, h = row["aiohttp"]["cpu_ms_per_request"], row["httpx"]["cpu_ms_per_request"]
                print(
                    f"{mode:13s} conc={conc:<3d} aiohttp {a:.3f} ms  httpx {h:.3f} ms  ratio {h / a:.2f}x",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    import aiohttp
    import httpx

    doc = {
        "versions": {"aiohttp": aiohttp.__version__, "httpx": httpx.__version__},
        "requests": args.requests,
        "stream_requests": args.stream_requests,
        "rounds": args.rounds,
        "pinned": pin,
        "chunk_interval_ms": args.chunk_interval_ms,
        "results": results,
    }
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    out = args.out or os.path.join(
        HERE, "results", time.strftime("client-overhead-%Y%m%dT%H%M%SZ.json", time.gmtime())
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
