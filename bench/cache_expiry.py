"""Latency tails while cached keys expire, without Redis: Lumen's p50 and p99 at 16 and 64
clients, on SQLite and on PostgreSQL, each with the cache expiry at 1 s (as short as it was before
the change log: every expiry a test of the spread and the refresh-ahead) and at the default 60 s.

Target (docs/performance.md): p99 at most 3 x p50. A short run (the machine is shared): 5,000
non-streaming requests per point by default; the 1-minute load average is printed next to each.

    .venv/bin/python bench/cache_expiry.py
    .venv/bin/python bench/cache_expiry.py --backings sqlite --requests 3000 --no-pin
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import tempfile
from typing import Any

import orjson

import run
from common import load1, raise_nofile

TARGET_RATIO = 3.0


def measure(opts: argparse.Namespace, backing: str, cache_seconds: float, tmp: str) -> list[dict[str, Any]]:
    argv = [
        "--clients",
        opts.clients,
        "--scenarios",
        "nonstream",
        "--requests",
        str(opts.requests),
        "--warmup",
        str(opts.warmup),
        "--lumen-env",
        f"LUMEN_SERVER__REDIS_CACHE_SECONDS={cache_seconds:g}",
    ]
    if backing == "postgresql":
        argv += ["--postgres-url", opts.postgres_url]
    if opts.no_pin:
        argv.append("--no-pin")
    args = run.parse_args(argv)
    key = "sk_bench_" + secrets.token_hex(24)  # keys need 40+ characters after sk_
    result = run.bench_fake(args, tmp, key, run.core_plan(args))
    rows = []
    for point in result["runs"]:
        latency = point["lumen"]["latency_ms"]
        p50, p99 = latency.get("p50"), latency.get("p99")
        rows.append(
            {
                "backing": backing,
                "cache_seconds": cache_seconds,
                "clients": point["clients"],
                "p50_ms": p50,
                "p99_ms": p99,
                "ratio": round(p99 / p50, 2) if p50 and p99 else None,
                "errors": point["lumen"].get("errors"),
                "load1": load1(),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backing | cache (s) | clients | Lumen p50 (ms) | Lumen p99 (ms) | p99 / p50 | ≤ 3 | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "pass" if r["ratio"] is not None and r["ratio"] <= TARGET_RATIO else "MISS"
        lines.append(
            f"| {r['backing']} | {r['cache_seconds']:g} | {r['clients']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['ratio']} | {ok} | {r['load1']} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backings", default="sqlite,postgresql")
    ap.add_argument("--cache-seconds", default="1,60", help="server.redis_cache_seconds values to run")
    ap.add_argument("--clients", default="16,64")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--out", default=None)
    opts = ap.parse_args()
    raise_nofile()
    started = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lumen-cache-bench-") as tmp:
        for backing in opts.backings.split(","):
            for seconds in (float(s) for s in opts.cache_seconds.split(",")):
                rows += measure(opts, backing, seconds, tmp)
    out = opts.out or os.path.join(run.HERE, "results", started.strftime("%Y%m%dT%H%M%SZ") + "-cache.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    doc = {"started": started.isoformat(timespec="seconds"), "machine": run.machine(), "rows": rows}
    with open(out, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    print(markdown(rows))
    run.log(f"\nwrote {out}")


if __name__ == "__main__":
    main()
