"""Lumen at scale, in one command: bench/results/<timestamp>-scale.json and Markdown tables.

    .venv/bin/python bench/scale.py                            # everything, about 30 minutes
    .venv/bin/python bench/scale.py --quick --soak-seconds 60  # a check of every part, ~6 minutes
    .venv/bin/python bench/scale.py --parts streams            # one part

Parts (docs/performance.md, "At scale", explains each):

  sqlite   direct upstream vs Lumen on SQLite, 1 process (pinned as run.py pins it): added latency
           p50/p99 at 1, 16, 64, 256 clients, non-streaming and paced streams; CPU per request
  pg2      the same with PostgreSQL + Redis and `lumen serve --workers 2` (unpinned: the two
           workers need both cores); CPU per request summed over the supervisor and its workers
  scaling  throughput at saturating client counts, 1 vs 2 workers on PostgreSQL + Redis (and 2
           workers with a socket each, reuseport_lumen.py), all unpinned, taking turns round by
           round so that drift of a shared machine hits every variant alike
  soak     a steady moderate mixed load through 2 workers on PostgreSQL + Redis for --soak-seconds;
           RSS of every Lumen process every 10 s; start/end/max, the slope of a least-squares fit
           after the warm-up, and errors
  streams  N (1,000) clients each open one stream paced slowly enough that all N are open at once
           for seconds; completed streams, errors, TTFT, Lumen's RSS and open fds at the peak; for
           both set-ups, straight at the fake upstream first

Every Lumen gets its own throwaway PostgreSQL database and Redis key prefix (see backing.py). The
1-minute load average before and after every run is recorded: other work on the machine shows
there, and in `machine_busy_cores` minus what the measured processes used.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psutil

import run
from common import load1, raise_nofile
from procstat import MIB, TreeSampler, linear_fit, peak, snapshot, totals
from scale_report import markdown

PARTS = ("sqlite", "pg2", "scaling", "soak", "streams")
# "No growth" over the soak: the least-squares line through a process's RSS after the warm-up rises
# by less than this over the measured window. 2 MiB is ~1-2% of a worker's RSS and, spread over the
# soak's requests, a few bytes per request: a leak of one small object per request would be MiBs.
NO_GROWTH_MIB = 2.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Bench:
    """Shared state of one scale run: options, scratch dir, the key Lumen is started with."""

    def __init__(self, opts: argparse.Namespace, tmp: str) -> None:
        self.opts = opts
        self.tmp = tmp
        self.key = "sk_bench_" + secrets.token_hex(24)  # keys need 40+ characters after sk_

    def run_args(
        self, *extra: str, workers: int = 1, backing: bool = False, lumen: str | None = None
    ) -> argparse.Namespace:
        """A run.py argument set, so Lumen starts exactly as `bench/run.py` would start it."""
        o = self.opts
        argv = [
            "--lumen",
            lumen or o.lumen,
            "--workers",
            str(workers),
            "--chunk-interval-ms",
            str(o.chunk_interval_ms),
        ]
        if backing:
            argv += ["--postgres-url", o.postgres_url, "--redis-url", o.redis_url]
        for e in o.lumen_env:
            argv += ["--lumen-env", e]
        return run.parse_args([*argv, *extra])


def timed(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs one part; records wall time and the load average around it."""
    log(f"\n=== {name} (load average {load1()}) ===")
    before, t0 = load1(), time.monotonic()
    result = fn()
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    result["load1"] = {"before": before, "after": load1()}
    log(f"=== {name}: {result['elapsed_s']} s ===")
    return result


# ---------------------------------------------------------------- 1. side by side


def side_by_side(b: Bench, backing: bool) -> dict[str, Any]:
    o = b.opts
    extra = [
        "--clients",
        o.clients,
        "--scenarios",
        "nonstream,stream",
        "--requests",
        str(o.requests),
        "--stream-requests",
        str(o.stream_requests),
        "--warmup",
        str(o.warmup),
        "--min-per-client",
        str(o.min_per_client),
    ]
    args = b.run_args(*extra, workers=2 if backing else 1, backing=backing)
    cores = run.core_plan(args)
    result = run.bench_fake(args, b.tmp, b.key, cores)
    result["settings"] = run.backing_settings(args)
    result["pinning"] = {"lumen": cores[0], "others": cores[1]} if cores[0] is not None else None
    return result


# ---------------------------------------------------------------- 2. scaling


REUSEPORT_LUMEN = f"{sys.executable} {os.path.join(run.HERE, 'reuseport_lumen.py')}"
# label -> (workers, the command serving in Lumen's place or None for `lumen` itself)
SCALING_VARIANTS: dict[str, tuple[int, str | None]] = {
    "1": (1, None),
    "2": (2, None),
    "2-reuseport": (2, REUSEPORT_LUMEN),  # one socket per worker, see reuseport_lumen.py
}


def scaling(b: Bench) -> dict[str, Any]:
    o = b.opts
    runs: list[dict[str, Any]] = []
    for rnd in range(o.scaling_rounds):
        for variant in o.scaling_variants:
            workers, lumen = SCALING_VARIANTS[variant]
            args = b.run_args("--no-pin", workers=workers, backing=True, lumen=lumen)
            with (
                run.fake_upstream(args, b.tmp, None) as fake,
                run.lumen_server(args, b.tmp, b.key, None, fake.config, f"scale-{variant}-{rnd}") as (
                    pid,
                    url,
                ),
            ):
                for clients in o.scaling_clients:
                    for name in ("nonstream", "stream"):
                        sc = run.SCENARIOS[name]
                        res = run.loadgen(
                            None,
                            url,
                            b.key,
                            sc.model,
                            clients=clients,
                            requests=10**9,
                            warmup=max(o.warmup, clients * 4),
                            stream=sc.stream,
                            cpu_pids=run.lumen_cpu_pids(args, pid, fake.pid),
                            duration=o.scaling_seconds,
                        )
                        row = {"round": rnd, "workers": variant, "clients": clients, "scenario": name}
                        runs.append({**row, "lumen": res})
                        log(
                            f"round {rnd} workers {variant} clients {clients:<4d} {name:9s} "
                            f"{res['throughput_rps']} req/s, cpu {res['cpu']['lumen']['ms_per_request']} "
                            f"ms/req, errors {res['errors']}, load {res['load1']}"
                        )
    return {"runs": runs, "summary": scaling_summary(runs)}


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def cpu_split(res: dict[str, Any]) -> dict[str, Any]:
    """Cores used during the measured phase: Lumen, the rest of the bench (fake upstream, load
    generator, PostgreSQL, Redis) and everything else on the machine (other people's work)."""
    cpu = res.get("cpu", {})

    def util(name: str) -> float:
        return float(cpu.get(name, {}).get("utilisation") or 0.0)

    lumen = util("lumen")
    rest = util("fake") + util("postgres") + util("redis") + float(res.get("loadgen_utilisation") or 0.0)
    busy = float(res.get("machine_busy_cores") or 0.0)
    workers = [util(k) for k in sorted(cpu) if k.startswith("lumen-w")]
    return {
        "lumen": round(lumen, 3),
        "bench_rest": round(rest, 3),
        "other": round(max(0.0, busy - lumen - rest), 3),
        "machine_busy": round(busy, 3),
        "workers": [round(w, 3) for w in workers],
    }


def scaling_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["clients"], r["scenario"], r["workers"]) for r in runs})  # "1" < "2" < "2-reuseport"
    for clients, scenario, workers in keys:
        rs = [
            r["lumen"]
            for r in runs
            if (r["clients"], r["scenario"], r["workers"]) == (clients, scenario, workers)
        ]
        splits = [cpu_split(r) for r in rs]
        out.append(
            {
                "clients": clients,
                "scenario": scenario,
                "workers": workers,
                "throughput_rps": _median([r["throughput_rps"] for r in rs]),
                "throughput_rps_each": [r["throughput_rps"] for r in rs],
                "lumen_cpu_ms_per_request": _median([r["cpu"]["lumen"]["ms_per_request"] for r in rs]),
                "lumen_cores": _median([s["lumen"] for s in splits]),
                "bench_rest_cores": _median([s["bench_rest"] for s in splits]),
                "other_cores": _median([s["other"] for s in splits]),
                "worker_cores_each": [s["workers"] for s in splits],
                "errors": sum(r["errors"] for r in rs),
                "load1": [r["load1"] for r in rs],
            }
        )
    for row in out:
        if row["workers"] != "1":
            one = next(
                (
                    r
                    for r in out
                    if r["workers"] == "1"
                    and (r["clients"], r["scenario"]) == (row["clients"], row["scenario"])
                ),
                None,
            )
            if one and one["throughput_rps"] and row["throughput_rps"]:
                row["speedup_vs_1"] = round(row["throughput_rps"] / one["throughput_rps"], 3)
    return out


# ---------------------------------------------------------------- 3. soak


def soak(b: Bench) -> dict[str, Any]:
    o = b.opts
    args = b.run_args("--no-pin", workers=2, backing=True)
    nonstream_clients = o.soak_clients // 2
    stream_clients = o.soak_clients - nonstream_clients
    with (
        run.fake_upstream(args, b.tmp, None) as fake,
        run.lumen_server(args, b.tmp, b.key, None, fake.config, "soak") as (pid, url),
    ):
        run.check_once(url, b.key, "bench", False)
        sampler = TreeSampler(pid, o.soak_interval)
        sampler.start()
        time.sleep(min(o.soak_interval, 5.0))  # at least one sample of the idle processes first
        load_start = round(time.monotonic() - sampler.t0, 3)

        def drive(stream: bool, clients: int, cpu: bool) -> dict[str, Any]:
            return run.loadgen(
                None,
                url,
                b.key,
                "bench",
                clients=clients,
                requests=10**9,
                warmup=100,
                stream=stream,
                cpu_pids=run.lumen_cpu_pids(args, pid, fake.pid) if cpu else {},
                extra=["--think-ms", str(o.soak_think_ms)],
                duration=o.soak_seconds,
                timeout=o.soak_seconds + 600,
            )

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            f_non = pool.submit(drive, False, nonstream_clients, True)
            f_str = pool.submit(drive, True, stream_clients, False)
            nonstream, stream = f_non.result(), f_str.result()
        load_end = round(time.monotonic() - sampler.t0, 3)
        samples = sampler.stop()
    result = {
        "settings": {
            **run.backing_settings(args),
            "seconds": o.soak_seconds,
            "warmup_seconds": o.soak_warmup,
            "sample_interval_s": o.soak_interval,
            "nonstream_clients": nonstream_clients,
            "stream_clients": stream_clients,
            "think_ms": o.soak_think_ms,
            "no_growth_mib": NO_GROWTH_MIB,
        },
        "load_start_s": load_start,
        "load_end_s": load_end,
        "nonstream": nonstream,
        "stream": stream,
        "requests": nonstream["requests"] + stream["requests"],
        "errors": nonstream["errors"] + stream["errors"],
        "samples": [
            {
                "t": s["t"],
                "rss_mib": {str(pid): round(p["rss"] / MIB, 2) for pid, p in s["procs"].items()},
                "pss_mib": {str(pid): round(p["pss"] / MIB, 2) for pid, p in s["procs"].items()},
                "fds": {str(pid): p["fds"] for pid, p in s["procs"].items()},
            }
            for s in samples
        ],
        "memory": soak_memory(samples, pid, load_start + o.soak_warmup, load_end),
    }
    # The CPU probe rode on the non-streaming load generator but saw both loads: per request of both.
    lumen_cpu = nonstream.get("cpu", {}).get("lumen", {})
    if lumen_cpu and result["requests"]:
        result["lumen_cores"] = lumen_cpu.get("utilisation")
        result["lumen_cpu_ms_per_request_mixed"] = round(lumen_cpu["cpu_s"] * 1000 / result["requests"], 4)
    result["cpu_split"] = cpu_split(nonstream)
    mem = result["memory"]
    log(
        f"soak: {result['requests']} requests, {result['errors']} errors; total RSS "
        f"{mem['total']['start_mib']} -> {mem['total']['end_mib']} MiB (max {mem['total']['max_mib']}), "
        f"slope {mem['total']['slope_mib_per_hour']} MiB/h; no growth: {mem['no_growth']}"
    )
    return result


def _series_stats(points: list[tuple[float, int]], fit_from: float, fit_to: float) -> dict[str, Any]:
    fit_pts = [(t, float(v)) for t, v in points if fit_from <= t <= fit_to]
    fit = linear_fit(fit_pts)
    out: dict[str, Any] = {
        "start_mib": round(points[0][1] / MIB, 2),
        "end_mib": round(points[-1][1] / MIB, 2),
        "max_mib": round(max(v for _, v in points) / MIB, 2),
        "fit_points": len(fit_pts),
    }
    if fit is not None:
        window = fit_pts[-1][0] - fit_pts[0][0]
        growth = fit["slope"] * window / MIB
        out.update(
            {
                "slope_mib_per_hour": round(fit["slope"] * 3600 / MIB, 3),
                "slope_stderr_mib_per_hour": round(fit["slope_stderr"] * 3600 / MIB, 3),
                "fitted_growth_mib": round(growth, 3),
                "fit_window_s": round(window, 1),
                "no_growth": growth < NO_GROWTH_MIB,
            }
        )
    return out


def soak_memory(samples: list[dict[str, Any]], parent: int, fit_from: float, fit_to: float) -> dict[str, Any]:
    """Per process (supervisor, workers) and the total: RSS at the first sample (idle, before the
    load), at the last, the maximum, and the least-squares slope after the warm-up."""
    per: dict[str, Any] = {}
    pids = sorted({pid for s in samples for pid in s["procs"]})
    for pid in pids:
        points = [(s["t"], s["procs"][pid]["rss"]) for s in samples if pid in s["procs"]]
        role = "supervisor" if pid == parent else "worker"
        per[str(pid)] = {"role": role, **_series_stats(points, fit_from, fit_to)}
    total = _series_stats(totals(samples, "rss"), fit_from, fit_to)
    total_pss = _series_stats(totals(samples, "pss"), fit_from, fit_to)
    verdicts = [p.get("no_growth") for p in per.values() if p.get("fit_points", 0) >= 3]
    return {
        "processes": per,
        "total": total,
        "total_pss": total_pss,
        "no_growth": bool(verdicts) and all(verdicts),
        "pids_seen": len(pids),  # more than 1 + workers: a worker was replaced during the soak
    }


# ---------------------------------------------------------------- 4. open streams


def open_streams(b: Bench) -> dict[str, Any]:
    o = b.opts
    setups: list[tuple[str, int, bool, list[str]]] = [
        ("sqlite-1proc", 1, False, []),
        ("pg-redis-2workers", 2, True, []),
    ]
    if o.streams_lumen_nofile:  # what a common default soft limit does to one process
        setups.append(
            (
                f"sqlite-1proc-nofile-{o.streams_lumen_nofile}",
                1,
                False,
                ["--lumen-nofile", str(o.streams_lumen_nofile)],
            )
        )
    n = o.streams
    out: dict[str, Any] = {
        "settings": {"streams": n, "interval_ms": o.streams_interval_ms, "events_per_stream": 18},
        "runs": [],
    }
    for name, workers, backing, extra in setups:
        args = b.run_args("--no-pin", *extra, workers=workers, backing=backing)
        with run.fake_upstream(args, b.tmp, None, slow_interval_ms=o.streams_interval_ms) as fake:
            common = {"clients": n, "requests": n, "warmup": 0, "stream": True, "extra": ["--timeout", "300"]}
            direct_url = f"http://127.0.0.1:{fake.port}/interval/{o.streams_interval_ms:g}/v1"
            direct = run.loadgen(
                None, direct_url, b.key, run.SLOW_MODEL, cpu_pids={"fake": fake.pid}, **common
            )
            log(f"{name}: direct {direct['ok']}/{n} ok, all open {direct['overlap']['all_open_s']} s")
            with run.lumen_server(args, b.tmp, b.key, None, fake.config, f"streams-{name}") as (pid, url):
                run.check_once(url, b.key, "bench", True)
                idle = snapshot(pid)
                limits = _nofile_limits(pid)
                with TreeSampler(pid, 0.25) as sampler:
                    through = run.loadgen(
                        None,
                        url,
                        b.key,
                        run.SLOW_MODEL,
                        cpu_pids=run.lumen_cpu_pids(args, pid, fake.pid),
                        **common,
                    )
                fake_fds = _fds(fake.pid)
        row = {
            "setup": name,
            "settings": run.backing_settings(args),
            "direct": direct,
            "lumen": through,
            "lumen_idle_rss_mib": round(sum(p["rss"] for p in idle.values()) / MIB, 1),
            "lumen_idle_pss_mib": round(sum(p["pss"] for p in idle.values()) / MIB, 1),
            "lumen_idle_fds": sum(p["fds"] for p in idle.values()),
            "lumen_peak": peak(sampler.samples),
            # (s, open fds, RSS MiB) of all Lumen processes every 0.25 s: the streams opening and closing
            "lumen_timeline": [
                (
                    x["t"],
                    sum(p["fds"] for p in x["procs"].values()),
                    round(sum(p["rss"] for p in x["procs"].values()) / MIB, 1),
                )
                for x in sampler.samples
            ],
            "lumen_nofile_limits": limits,
            "fake_fds_after": fake_fds,
        }
        out["runs"].append(row)
        log(
            f"{name}: {through['ok']}/{n} completed, {through['errors']} errors, all open together "
            f"{through['overlap']['all_open_s']} s, TTFT p50 {through.get('ttft_ms', {}).get('p50')} "
            f"p99 {through.get('ttft_ms', {}).get('p99')} ms, peak fds {row['lumen_peak'].get('fds')}, "
            f"peak RSS {row['lumen_peak'].get('rss_mib')} MiB"
        )
    return out


def _fds(pid: int) -> int | None:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).num_fds()
    return None


def _nofile_limits(pid: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            out[str(p.pid)] = list(p.rlimit(psutil.RLIMIT_NOFILE))
    return out


# ---------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help="subset of " + ",".join(PARTS))
    ap.add_argument(
        "--quick", action="store_true", help="fewer requests and shorter runs, to check the set-up"
    )
    ap.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--clients", default="1,16,64,256", help="side by side: client counts")
    ap.add_argument("--requests", type=int, default=5000, help="side by side: non-streaming requests per run")
    ap.add_argument("--stream-requests", type=int, default=1500, help="side by side: streams per run")
    ap.add_argument("--min-per-client", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--chunk-interval-ms", type=float, default=1.0, help="pacing of the 'stream' scenario")
    ap.add_argument("--scaling-clients", default="64,256")
    ap.add_argument("--scaling-seconds", type=float, default=15.0, help="measured seconds per scaling run")
    ap.add_argument("--scaling-rounds", type=int, default=3, help="rounds; each runs every variant in turn")
    ap.add_argument(
        "--scaling-variants",
        default=",".join(SCALING_VARIANTS),
        help="worker set-ups to compare: " + ", ".join(SCALING_VARIANTS),
    )
    ap.add_argument("--soak-seconds", type=float, default=600.0)
    ap.add_argument(
        "--soak-warmup", type=float, default=None, help="seconds left out of the fit (default 60)"
    )
    ap.add_argument("--soak-interval", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--soak-clients", type=int, default=16, help="half non-streaming, half streaming")
    ap.add_argument(
        "--soak-think-ms", type=float, default=20.0, help="each soak client's pause between requests"
    )
    ap.add_argument("--streams", type=int, default=1000, help="concurrent open streams")
    ap.add_argument(
        "--streams-interval-ms", type=float, default=500.0, help="pause between a stream's events"
    )
    ap.add_argument(
        "--streams-lumen-nofile",
        type=int,
        default=None,
        help="also hold the streams with one Lumen process under this soft fd limit (e.g. 1024)",
    )
    ap.add_argument("--lumen", default=os.path.join(os.path.dirname(sys.executable), "lumen"))
    ap.add_argument("--lumen-env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--out", default=None, help="default bench/results/<timestamp>-scale.json")
    return ap


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = parser()
    o = ap.parse_args(argv)
    o.parts = [p for p in o.parts.split(",") if p]
    unknown = set(o.parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts: {sorted(unknown)}")
    o.scaling_clients = [int(c) for c in o.scaling_clients.split(",") if c]
    o.scaling_variants = [v for v in o.scaling_variants.split(",") if v]
    if set(o.scaling_variants) - set(SCALING_VARIANTS):
        ap.error(f"unknown scaling variants; choose from {', '.join(SCALING_VARIANTS)}")
    if o.quick:  # every part still runs its real code path, on fewer requests
        o.requests, o.stream_requests, o.warmup, o.min_per_client = 1000, 300, 100, 4
        o.scaling_seconds, o.scaling_rounds = 4.0, 1
    if o.soak_warmup is None:
        o.soak_warmup = min(60.0, o.soak_seconds / 5)
    if o.soak_seconds <= o.soak_warmup + 3 * o.soak_interval:
        ap.error("--soak-seconds must leave at least 3 samples after --soak-warmup")
    if o.streams < 1:
        ap.error("--streams must be >= 1")
    return o


@contextlib.contextmanager
def scratch() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="lumen-scale-") as tmp:
        yield tmp


def main(argv: list[str] | None = None) -> None:
    o = parse(argv)
    soft, hard = raise_nofile()  # inherited by the load generator, the fake upstream and Lumen
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    t0 = time.monotonic()
    doc: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": run.machine(),
        "options": {k: v for k, v in vars(o).items() if k not in ("postgres_url", "redis_url")},
        "nofile": {"soft": soft, "hard": hard},
        "load1_start": load1(),
    }
    with scratch() as tmp:
        b = Bench(o, tmp)
        parts: dict[str, Callable[[], dict[str, Any]]] = {
            "sqlite": lambda: side_by_side(b, backing=False),
            "pg2": lambda: side_by_side(b, backing=True),
            "scaling": lambda: scaling(b),
            "soak": lambda: soak(b),
            "streams": lambda: open_streams(b),
        }
        for name in o.parts:
            doc[name] = timed(name, parts[name])
    doc["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    doc["load1_end"] = load1()
    out = o.out or os.path.join(run.HERE, "results", f"{stamp}-scale.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    print(markdown(doc))
    minutes, seconds = divmod(int(doc["elapsed_s"]), 60)
    log(f"\nwrote {out}; the whole run took {minutes} min {seconds} s")


if __name__ == "__main__":
    main()
