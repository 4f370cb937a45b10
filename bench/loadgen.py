"""Closed-loop load generator for OpenAI-compatible chat completions.

C clients, each with one keep-alive connection, send requests back to back until N requests
(or a duration) are done. Records per-request latency (non-streaming) or time to first token
and total time (streaming) and prints one JSON document on stdout.

It is a raw asyncio protocol with the httptools parser, not an HTTP library, so that one core
can drive 256 clients without becoming the bottleneck and its own cost stays small next to
the gateway's. It runs as its own process; run.py pins it away from the gateway.

    python bench/loadgen.py --url http://127.0.0.1:8000/v1 --key sk_... --model bench \
        --clients 16 --requests 5000 --warmup 500 [--stream] [--cpu-pid lumen=1234]

`--cpu-pid NAME=PID` samples that process's CPU time (user+system, its children included)
right before and right after the measured phase, so warmup is not counted. The whole machine's
busy CPU over the same phase is reported too (`machine_busy_cores`), so that what other
processes took can be told apart from what the measured ones took.

`--think-ms` makes each client pause between its requests (a moderate, not saturating, load for
a soak). `overlap` tells how many requests were in flight at once: with as many clients as
requests, `all_open_s` > 0 shows that every one of them was open at the same time, for that long.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools
import orjson
import psutil

from common import LOOPBACK, percentiles, raise_nofile, run

DEFAULT_PROMPT = "Say hello."


class RequestFailed(Exception):
    pass


@dataclass(slots=True)
class Result:
    status: int = 0
    t_first_token: int = 0  # perf_counter_ns of the first event with non-empty content
    t_last_token: int = 0
    t_end: int = 0
    tokens: int = 0  # content events seen (counted only with count_tokens)
    events: int = 0
    done: bool = False  # `data: [DONE]` seen (streams)
    body: bytes = b""  # kept for error reports only


class Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection carrying one request at a time."""

    def __init__(self, stream: bool, count_tokens: bool) -> None:
        self.stream = stream
        self.count_tokens = count_tokens
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.fut: asyncio.Future[Result] | None = None
        self.res = Result()
        self.buf = bytearray()  # stream: bytes not yet split into events; else: the body
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(RequestFailed(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            if self.fut is not None and not self.fut.done():
                self.fut.set_exception(RequestFailed(f"bad HTTP: {e!r}"))
            if self.transport is not None:
                self.transport.close()

    def send(self, request: bytes) -> asyncio.Future[Result]:
        assert self.transport is not None
        self.res = Result()
        self.buf.clear()
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.fut

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.res.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.buf += body
        if self.stream and self.res.status == 200:
            self._events()

    def on_message_complete(self) -> None:
        res = self.res
        res.t_end = time.perf_counter_ns()
        if self.stream and res.status == 200:
            self._events()
        if res.status != 200 or (self.stream and not res.done):
            res.body = bytes(self.buf[-2000:])
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(res)

    def _events(self) -> None:
        """Split complete SSE events off the buffer. JSON is parsed only until the first token,
        or for every event when tokens are counted: parsing costs client CPU."""
        res = self.res
        buf = self.buf
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            event = bytes(buf[start:end])
            start = end + 2
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue  # comments (keep-alives) and other fields
                data = line[5:].strip()
                if data == b"[DONE]":
                    res.done = True
                    continue
                res.events += 1
                if res.t_first_token == 0 or self.count_tokens:
                    if _has_content(data):
                        now = time.perf_counter_ns()
                        if res.t_first_token == 0:
                            res.t_first_token = now
                        res.t_last_token = now
                        res.tokens += 1
        if start:
            del buf[:start]


def _has_content(data: bytes) -> bool:
    try:
        chunk = orjson.loads(data)
        choices = chunk.get("choices") or []
        return bool(choices and (choices[0].get("delta") or {}).get("content"))
    except (orjson.JSONDecodeError, AttributeError, IndexError):
        return False


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # ms; total time of each request
    starts: list[int] = field(default_factory=list)  # perf_counter_ns at send, for --timeline
    ends: list[int] = field(default_factory=list)  # perf_counter_ns at the end, for `overlap`
    ttfts: list[float] = field(default_factory=list)  # ms; streams only
    tokens: int = 0
    token_seconds: float = 0.0  # sum over requests of total time, for tokens per second
    decode_rates: list[float] = field(default_factory=list)  # tokens/s after the first token
    rates: list[float] = field(default_factory=list)  # tokens/s of each request, first token included
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, msg: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(msg[:500])


def build_request(url: str, key: str | None, body: dict[str, Any]) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    if host not in LOOPBACK:
        raise SystemExit(f"loopback addresses only, got {host!r}")
    port = u.port or 80
    path = u.path.rstrip("/") + "/chat/completions"
    payload = orjson.dumps(body)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream" if body.get("stream") else "Accept: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if key:
        head.append(f"Authorization: Bearer {key}")
    return host, port, ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class CpuProbe:
    """CPU seconds (user+system, children included) of the processes being measured."""

    def __init__(self, specs: list[str]) -> None:
        self.procs: dict[str, Any] = {}
        for spec in specs:
            name, _, pid = spec.rpartition("=")
            self.procs[name or pid] = psutil.Process(int(pid))

    def sample(self) -> dict[str, tuple[float, float]]:
        """(user, system) seconds per process."""
        out = {}
        for name, p in self.procs.items():
            t = p.cpu_times()
            user, system = t.user + t.children_user, t.system + t.children_system
            # Live children (uvicorn workers, a reloader) are not in children_*: add them.
            for c in p.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a child that just exited has no times
                    ct = c.cpu_times()
                    user, system = user + ct.user, system + ct.system
            out[name] = (user, system)
        return out


def machine_busy() -> float:
    """Seconds of CPU the whole machine spent busy (all cores), from /proc/stat. Guest time is
    already inside user time, and steal is time the hypervisor gave to someone else: neither is
    added."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def overlap(starts: list[int], ends: list[int]) -> dict[str, Any]:
    """The most requests in flight at once, and for how long all measured requests were open
    together (0 when they never all were)."""
    if not starts:
        return {"max_in_flight": 0, "all_open_s": 0.0}
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return {"max_in_flight": peak, "all_open_s": round(max(0, min(ends) - max(starts)) / 1e9, 3)}


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": args.model,
        "messages": [{"role": "user", "content": args.prompt}],
        "max_tokens": args.max_tokens,
    }
    if args.temperature is not None:
        body["temperature"] = args.temperature
    if args.stream:
        body["stream"] = True
        if args.include_usage:
            body["stream_options"] = {"include_usage": True}
    host, port, request = build_request(args.url, args.key, body)
    loop = asyncio.get_running_loop()
    probe = CpuProbe(args.cpu_pid) if args.cpu_pid else None

    async def connect() -> Connection:
        _, proto = await loop.create_connection(
            lambda: Connection(args.stream, args.count_tokens), host, port
        )
        return proto

    conns = [await connect() for _ in range(args.clients)]
    stats = Stats()
    # Shared work queue: tickets are taken one at a time so N is exact across C clients.
    remaining = {"n": 0}
    deadline = {"t": math.inf}

    async def one(i: int, record: bool) -> None:
        conn = conns[i]
        while remaining["n"] > 0 and time.perf_counter() < deadline["t"]:
            remaining["n"] -= 1
            if conn.closed or not conn.keep_alive:
                if conn.transport is not None:
                    conn.transport.close()
                conn = conns[i] = await connect()
            if args.think_ms > 0:
                await asyncio.sleep(args.think_ms / 1000.0)
            t0 = time.perf_counter_ns()
            fut = conn.send(request)
            timer = loop.call_later(
                args.timeout, lambda f=fut: f.done() or f.set_exception(RequestFailed("timeout"))
            )
            try:
                res = await fut
            except RequestFailed as e:
                if record:
                    stats.error(str(e))
                if conn.transport is not None:
                    conn.transport.close()
                conn.closed = True
                continue
            finally:
                timer.cancel()
            if not record:
                continue
            if res.status != 200:
                stats.error(f"HTTP {res.status}: {res.body[:300]!r}")
                continue
            if args.stream and not res.done:
                stats.error(f"stream without [DONE]: {res.body[-300:]!r}")
                continue
            total_ms = (res.t_end - t0) / 1e6
            stats.latencies.append(total_ms)
            stats.starts.append(t0)
            stats.ends.append(res.t_end)
            if args.stream:
                if res.t_first_token:
                    stats.ttfts.append((res.t_first_token - t0) / 1e6)
                if args.count_tokens and res.tokens:
                    stats.tokens += res.tokens
                    stats.token_seconds += total_ms / 1000.0
                    stats.rates.append(res.tokens * 1000.0 / total_ms)
                    if res.tokens > 1:
                        span = (res.t_last_token - res.t_first_token) / 1e9
                        stats.decode_rates.append((res.tokens - 1) / span if span > 0 else 0.0)

    async def phase(n: int, duration: float | None, record: bool) -> float:
        remaining["n"] = n if duration is None else sys.maxsize
        deadline["t"] = time.perf_counter() + duration if duration is not None else math.inf
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, record) for i in range(args.clients)))
        return time.perf_counter() - t0

    if args.warmup:
        await phase(args.warmup, None, record=False)
    cpu0 = probe.sample() if probe else {}
    busy0 = machine_busy()
    own0 = time.process_time()
    wall = await phase(args.requests, args.duration, record=True)
    own1 = time.process_time()
    busy1 = machine_busy()
    cpu1 = probe.sample() if probe else {}
    for c in conns:
        if c.transport is not None:
            c.transport.close()

    done = len(stats.latencies) + stats.errors
    if args.timeline and stats.starts:
        base = min(stats.starts)
        with open(args.timeline, "w") as f:
            for t0, lat in sorted(zip(stats.starts, stats.latencies, strict=True)):
                f.write(f"{(t0 - base) / 1e6:.3f} {lat:.3f}\n")
    out: dict[str, Any] = {
        "url": args.url,
        "model": args.model,
        "stream": args.stream,
        "clients": args.clients,
        "requests": done,
        "ok": len(stats.latencies),
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "wall_s": round(wall, 4),
        "throughput_rps": round(done / wall, 2) if wall > 0 else 0.0,
        "latency_ms": percentiles(stats.latencies),
        "loadgen_cpu_ms_per_request": round((own1 - own0) * 1000 / done, 4) if done else None,
        "loadgen_utilisation": round((own1 - own0) / wall, 3) if wall > 0 else None,
        "machine_busy_cores": round((busy1 - busy0) / wall, 3) if wall > 0 else None,
        "overlap": overlap(stats.starts, stats.ends),
    }
    if args.stream:
        out["ttft_ms"] = percentiles(stats.ttfts)
    if args.count_tokens:
        out["tokens"] = stats.tokens
        out["tokens_per_s"] = round(stats.tokens / stats.token_seconds, 3) if stats.token_seconds else 0.0
        out["decode_tokens_per_s"] = percentiles(stats.decode_rates)
        out["tokens_per_s_each"] = [round(r, 3) for r in stats.rates[:1000]]
    if probe:
        out["cpu"] = {}
        for name in cpu0:
            user = cpu1[name][0] - cpu0[name][0]
            system = cpu1[name][1] - cpu0[name][1]
            out["cpu"][name] = {
                "cpu_s": round(user + system, 4),
                "user_s": round(user, 4),
                "system_s": round(system, 4),
                "ms_per_request": round((user + system) * 1000 / done, 4) if done else None,
                "utilisation": round((user + system) / wall, 3) if wall > 0 else None,
            }
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="base URL ending in /v1 (loopback only)")
    ap.add_argument("--key", default=None, help="sent as Authorization: Bearer KEY")
    ap.add_argument("--model", default="bench")
    ap.add_argument("--clients", type=int, default=1, help="concurrent connections, each closed-loop")
    ap.add_argument("--requests", type=int, default=2000, help="measured requests (ignored with --duration)")
    ap.add_argument("--duration", type=float, default=None, help="measure for this many seconds instead")
    ap.add_argument("--warmup", type=int, default=200, help="requests sent and discarded first")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--include-usage", action="store_true", help="ask for the usage chunk (streams)")
    ap.add_argument("--count-tokens", action="store_true", help="parse every event; report tokens/s")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=None)
    ap.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    ap.add_argument("--think-ms", type=float, default=0.0, help="each client's pause between requests")
    ap.add_argument("--cpu-pid", action="append", default=[], metavar="NAME=PID")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument(
        "--timeline", default=None, help="write 'start_ms latency_ms' per request here (to spot stalls)"
    )
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        raise SystemExit("--clients and --requests must be >= 1")
    if args.think_ms < 0:
        raise SystemExit("--think-ms must be >= 0")
    raise_nofile()  # one socket per client: 1,000 clients need more than the usual 1,024 soft limit
    result = run(run_load(args))
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
