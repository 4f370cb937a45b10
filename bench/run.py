"""One command for the whole Lumen benchmark; writes bench/results/<timestamp>.json.

    .venv/bin/python bench/run.py                      # 1 client, fake upstream
    .venv/bin/python bench/run.py --clients 1,16,64,256
    .venv/bin/python bench/run.py --profile            # also py-spy profiles of Lumen
    .venv/bin/python bench/run.py --local              # local model vs llama-cpp-python
    .venv/bin/python bench/run.py --workers 2 --postgres-url postgresql://postgres@127.0.0.1:5432/postgres \
        --redis-url redis://127.0.0.1:6379/0            # 2 workers on PostgreSQL + Redis

Fake-upstream mode starts bench/fake_upstream.py and `lumen serve` (its config generated,
a throwaway data dir, a bootstrap key from the environment), then for every client count
and scenario runs bench/loadgen.py twice with the same body: straight at the fake upstream
and through Lumen. Added latency = Lumen p50 - direct p50. Lumen CPU per request = the Lumen
process's user+system time over the measured phase / requests.

Scenarios: non-streaming; 16-chunk stream paced 1 ms per event (each event reaches Lumen on
its own, as tokens from a model do); the same stream in a burst (all events back to back).

On 2+ cores, Lumen gets core 0 to itself and everything else shares core 1 (see
docs/performance.md for why); --no-pin turns that off, and so does --workers N > 1 (the
workers need every core, so the scheduler places all processes).

With --postgres-url every Lumen gets a throwaway database on that server (dropped afterwards);
with --redis-url a unique key prefix (its keys deleted afterwards). Lumen's CPU is the sum over
its processes (the supervising parent and every worker). bench/scale.py runs the whole
published set (both set-ups, 1 vs 2 workers, the soak, 1,000 open streams) in one command.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import os
import platform
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from backing import lumen_backing, server_pids
from common import free_port, load1, raise_nofile
from profile_summary import summarise
from report import markdown, targets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = sys.executable
LOCAL_MODEL = "smollm2-135m-instruct"
LOCAL_PROMPT = "Write a short story about a lighthouse keeper."


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    model: str  # model name at Lumen
    fake_prefix: str  # path prefix at the fake upstream, chooses pacing


SCENARIOS = {
    "nonstream": Scenario("nonstream", False, "bench", ""),
    "stream": Scenario("stream", True, "bench", ""),  # paced, the fake's --chunk-interval-ms
    "stream-burst": Scenario("stream-burst", True, "bench-burst", "/interval/0"),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pin(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("lumen", "uvicorn", "starlette", "fastapi", "aiohttp", "uvloop", "httptools", "orjson"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[pkg] = version(pkg)
    commit = subprocess.run(
        ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit.stdout.strip() or None,
    }


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Polls until GET url answers 200; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = repr(e)
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s ({last})")


def _nofile(soft: int) -> Any:
    def set_limit() -> None:  # runs in the child between fork and exec
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    return set_limit


def wait_workers(pid: int, count: int, timeout: float) -> None:
    """Waits until `count` workers exist and have gone quiet. /healthz answers as soon as one
    worker serves; a load generator connecting before the others are up would put every
    keep-alive connection on that one for the whole run. A worker still starting burns CPU
    (imports, migrations check, pools, caches), a ready one idles."""
    import psutil

    deadline = time.monotonic() + timeout
    parent = psutil.Process(pid)
    while time.monotonic() < deadline:
        kids = parent.children()
        if len(kids) >= count:
            before = [k.cpu_times() for k in kids]
            time.sleep(0.5)
            after = [k.cpu_times() for k in kids]
            busy = [a.user + a.system - b.user - b.system for a, b in zip(after, before, strict=True)]
            if max(busy) < 0.02:  # < 4% of a core each
                return
        else:
            time.sleep(0.2)
    raise RuntimeError(f"{count} Lumen workers did not settle within {timeout}s")


def worker_pids(pid: int) -> list[int]:
    import psutil

    return [k.pid for k in psutil.Process(pid).children()]


@contextlib.contextmanager
def process(
    cmd: list[str], log_path: str, env: dict[str, str] | None = None, nofile: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs cmd for the duration of the block; `nofile` sets the child's soft fd limit (as
    `ulimit -n` would), otherwise it inherits the bench's (raised to the hard limit)."""
    with open(log_path, "wb") as out:
        p = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_nofile(nofile) if nofile else None,
        )
    try:
        yield p
    finally:
        if p.poll() is None:
            import psutil

            with contextlib.suppress(psutil.Error):
                kids = psutil.Process(p.pid).children(recursive=True)  # `lumen serve --workers` forks
            p.terminate()
            try:
                p.wait(timeout=40)  # Lumen lets open requests finish first (up to 30 s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
                for k in kids:  # a killed supervisor cannot stop its workers
                    with contextlib.suppress(psutil.Error):
                        k.kill()


def loadgen(
    core: int | None,
    url: str,
    key: str,
    model: str,
    *,
    clients: int,
    requests: int,
    warmup: int,
    stream: bool,
    cpu_pids: dict[str, int],
    extra: list[str] | None = None,
    duration: float | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    cmd = [
        *pin(core),
        PY,
        os.path.join(HERE, "loadgen.py"),
        "--url",
        url,
        "--key",
        key,
        "--model",
        model,
        "--clients",
        str(clients),
        "--requests",
        str(requests),
        "--warmup",
        str(warmup),
    ]
    if stream:
        cmd.append("--stream")
    if duration is not None:
        cmd += ["--duration", str(duration)]
    for name, pid in cpu_pids.items():
        cmd += ["--cpu-pid", f"{name}={pid}"]
    cmd += extra or []
    before = load1()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr[-2000:]}")
    result: dict[str, Any] = orjson.loads(out.stdout)
    result["load1"] = {"before": before, "after": load1()}
    return result


def lumen_env(key: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["LUMEN_BOOTSTRAP_KEY"] = key
    env.update(extra or {})
    return env


def lumen_cmd(lumen: str, port: int, data_dir: str, config: str | None, workers: int = 1) -> list[str]:
    cmd = [*shlex.split(lumen), "serve"]
    if config:
        cmd += ["--config", config]
    if workers != 1:  # only then: bare_proxy.py, run in Lumen's place, has no --workers
        cmd += ["--workers", str(workers)]
    return [*cmd, "--host", "127.0.0.1", "--port", str(port), "--data-dir", data_dir]


SLOW_MODEL = "bench-slow"


def write_config(path: str, fake_port: int, slow_interval_ms: float = 500.0) -> None:
    # Three models on one fake upstream; the URL prefix picks the pacing (see fake_upstream.py):
    # Lumen does not pass unknown request headers upstream, so the path is what reaches it.
    # `bench-slow` holds streams open (17 events, slow_interval_ms apart) for the open-streams run.
    text = f"""server:
  log_level: warning
models:
  - name: bench
    endpoints:
      - type: openai
        url: http://127.0.0.1:{fake_port}/v1
        upstream_model: fake
  - name: bench-burst
    endpoints:
      - type: openai
        url: http://127.0.0.1:{fake_port}/interval/0/v1
        upstream_model: fake
  - name: {SLOW_MODEL}
    endpoints:
      - type: openai
        url: http://127.0.0.1:{fake_port}/interval/{slow_interval_ms:g}/v1
        upstream_model: fake
"""
    with open(path, "w") as f:
        f.write(text)


def check_once(url: str, key: str, model: str, stream: bool) -> None:
    """One request through Lumen before measuring, so a broken setup fails loudly, not as N errors."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say hello."}]}
    if stream:
        body["stream"] = True
    req = urllib.request.Request(
        url + "/chat/completions",
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            data = r.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{model} stream={stream}: HTTP {e.code}: {e.read()[:500]!r}") from e
    if stream and b"data: [DONE]" not in data:
        raise RuntimeError(f"{model}: stream without [DONE]: {data[-500:]!r}")


def _metric(result: dict[str, Any], key: str, pct: str) -> float | None:
    value = result.get(key, {}).get(pct)
    return float(value) if value is not None else None


def compare(direct: dict[str, Any], lumen: dict[str, Any], stream: bool) -> dict[str, Any]:
    metrics = ["ttft_ms", "latency_ms"] if stream else ["latency_ms"]
    out: dict[str, Any] = {}
    for m in metrics:
        for pct in ("p50", "p99"):
            d, lu = _metric(direct, m, pct), _metric(lumen, m, pct)
            if d is not None and lu is not None:
                out[f"added_{m[:-3]}_{pct}_ms"] = round(lu - d, 4)
    cpu = lumen.get("cpu", {}).get("lumen", {})
    out["lumen_cpu_ms_per_request"] = cpu.get("ms_per_request")
    out["lumen_cpu_utilisation"] = cpu.get("utilisation")
    return out


@contextlib.contextmanager
def lumen_server(
    args: argparse.Namespace,
    tmp: str,
    key: str,
    core: int | None,
    config: str | None,
    name: str,
    profile_raw: str | None = None,
    spy_core: int | None = None,
) -> Iterator[tuple[int, str]]:
    """A fresh `lumen serve` (own port, own data dir, and with --postgres-url / --redis-url its
    own database and key prefix); yields (pid, base URL), the pid of the process `lumen serve`
    started as (with --workers, the supervisor; the workers are its children). With profile_raw
    it runs under `py-spy record` (launched, not attached: attaching is refused on this kind of
    container), py-spy on the other core, and the stacks are written when Lumen stops."""
    with lumen_backing(args.postgres_url, args.redis_url) as backing:
        with _lumen_process(args, tmp, key, core, config, name, backing, profile_raw, spy_core) as served:
            yield served


@contextlib.contextmanager
def _lumen_process(
    args: argparse.Namespace,
    tmp: str,
    key: str,
    core: int | None,
    config: str | None,
    name: str,
    backing: dict[str, str],
    profile_raw: str | None,
    spy_core: int | None,
) -> Iterator[tuple[int, str]]:
    port = free_port()
    data_dir = os.path.join(tmp, f"data-{name}")
    os.makedirs(data_dir, exist_ok=True)
    log_path = os.path.join(tmp, f"lumen-{name}.log")
    cmd = [*pin(core), *lumen_cmd(args.lumen, port, data_dir, config, args.workers)]
    if profile_raw:
        # --native shows the C/Cython frames (uvloop, httptools, orjson) but must pause the
        # process for each sample; without it sampling is non-blocking.
        mode = ["--native"] if args.profile_native else ["--nonblocking"]
        spy = [
            *pin(spy_core),
            pyspy_path(),
            "record",
            *mode,
            "--rate",
            str(args.profile_rate),
            "--format",
            "raw",
        ]
        cmd = [*spy, "-o", profile_raw, "--", *cmd]
    env = lumen_env(key, {**backing, **dict(e.split("=", 1) for e in args.lumen_env)})
    with process(cmd, log_path, env, args.lumen_nofile) as p:
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", args.start_timeout, p)
            if args.workers > 1:
                wait_workers(p.pid, args.workers, args.start_timeout)
        except Exception:
            log(f"--- tail of {log_path} ---")
            with open(log_path, errors="replace") as f:
                log(f.read()[-4000:])
            raise
        pid = p.pid
        if profile_raw:  # the Lumen process is py-spy's child
            import psutil

            pid = psutil.Process(p.pid).children()[0].pid
        yield pid, f"http://127.0.0.1:{port}/v1"
        if profile_raw and p.poll() is None:
            os.kill(pid, signal.SIGTERM)  # py-spy writes its file once its child has exited
            p.wait(timeout=120)


@dataclass(frozen=True)
class Fake:
    pid: int
    port: int
    config: str  # a generated Lumen config routing the bench models to this fake upstream


@contextlib.contextmanager
def fake_upstream(
    args: argparse.Namespace, tmp: str, core: int | None, slow_interval_ms: float = 500.0
) -> Iterator[Fake]:
    port = free_port()
    config = os.path.join(tmp, f"lumen-{port}.yaml")
    write_config(config, port, slow_interval_ms)
    cmd = [
        *pin(core),
        PY,
        os.path.join(HERE, "fake_upstream.py"),
        "--port",
        str(port),
        "--chunks",
        str(args.chunks),
        "--chunk-interval-ms",
        str(args.chunk_interval_ms),
    ]
    with process(cmd, os.path.join(tmp, f"fake-{port}.log")) as p:
        wait_http(f"http://127.0.0.1:{port}/healthz", 15, p)
        yield Fake(p.pid, port, config)


def lumen_cpu_pids(args: argparse.Namespace, lumen_pid: int, fake_pid: int) -> dict[str, int]:
    """What a run through Lumen charges CPU to: Lumen (supervisor and workers together), each
    worker on its own (to show how evenly the kernel spread the connections), the fake upstream,
    and the PostgreSQL and Redis servers when used (they serve other clients too)."""
    pids = {"lumen": lumen_pid, "fake": fake_pid}
    pids.update(server_pids(bool(args.postgres_url), bool(args.redis_url)))
    if args.workers > 1:
        pids.update({f"lumen-w{i}": w for i, w in enumerate(worker_pids(lumen_pid))})
    return pids


def bench_fake(
    args: argparse.Namespace, tmp: str, key: str, cores: tuple[int | None, int | None]
) -> dict[str, Any]:
    lumen_core, other_core = cores
    results: dict[str, Any] = {"runs": []}
    with fake_upstream(args, tmp, other_core) as fake:
        fake_port, config = fake.port, fake.config
        with lumen_server(args, tmp, key, lumen_core, config, "fake") as (lumen_pid, lumen_url):
            for sc in SCENARIOS.values():
                check_once(lumen_url, key, sc.model, sc.stream)
            log(f"fake upstream pid {fake.pid} port {fake_port}; lumen pid {lumen_pid} at {lumen_url}")
            for clients in args.clients:
                for name in args.scenarios:
                    sc = SCENARIOS[name]
                    n = args.stream_requests if sc.stream else args.requests
                    n = max(n, clients * args.min_per_client)  # every client gets a fair sample
                    warm = max(args.warmup, clients * 2)
                    direct_url = f"http://127.0.0.1:{fake_port}{sc.fake_prefix}/v1"
                    common = {"clients": clients, "requests": n, "warmup": warm, "stream": sc.stream}
                    direct = loadgen(
                        other_core, direct_url, key, sc.model, cpu_pids={"fake": fake.pid}, **common
                    )
                    pids = lumen_cpu_pids(args, lumen_pid, fake.pid)
                    through = loadgen(other_core, lumen_url, key, sc.model, cpu_pids=pids, **common)
                    row = {"clients": clients, "scenario": name, "direct": direct, "lumen": through}
                    row.update(compare(direct, through, sc.stream))
                    results["runs"].append(row)
                    log(
                        f"clients={clients:<4d} {name:13s} direct p50 {direct['latency_ms'].get('p50')} ms, "
                        f"lumen p50 {through['latency_ms'].get('p50')} ms, "
                        f"cpu {row['lumen_cpu_ms_per_request']} ms/req, errors {through['errors']}"
                    )
        if args.profile:
            results["profiles"] = profile_lumen(args, tmp, key, config, cores)
    return results


# ---------------------------------------------------------------- profiling (py-spy)


def pyspy_path() -> str:
    return shutil.which("py-spy") or os.path.join(os.path.dirname(PY), "py-spy")


def profile_lumen(
    args: argparse.Namespace, tmp: str, key: str, config: str, cores: tuple[int | None, int | None]
) -> dict[str, Any]:
    """One Lumen per scenario under py-spy, driven for --profile-seconds; after the measured
    runs, so sampling never disturbs them. Non-blocking sampling: the process is not paused."""
    if not os.path.exists(pyspy_path()):
        log("py-spy not found: pip install py-spy==0.4.3; skipping profiles")
        return {}
    lumen_core, other_core = cores
    out: dict[str, Any] = {}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    for name in args.scenarios:
        sc = SCENARIOS[name]
        raw = os.path.join(tmp, f"profile-{name}.txt")
        with lumen_server(args, tmp, key, lumen_core, config, f"profile-{name}", raw, other_core) as (
            pid,
            url,
        ):
            load = loadgen(
                other_core,
                url,
                key,
                sc.model,
                clients=args.profile_clients,
                requests=10**9,
                warmup=100,
                stream=sc.stream,
                cpu_pids={"lumen": pid},
                duration=args.profile_seconds,
            )
        if not os.path.exists(raw):
            log(f"py-spy wrote nothing for {name}; see {tmp}/lumen-profile-{name}.log")
            continue
        out[name] = summarise(raw)
        out[name]["lumen_cpu_ms_per_request_under_profiler"] = (
            load.get("cpu", {}).get("lumen", {}).get("ms_per_request")
        )
        # Keep the stacks: flamegraph.pl, inferno or speedscope draw them (after gunzip).
        kept = os.path.join(HERE, "results", f"{args.stamp}-profile-{name}.collapsed.txt.gz")
        with open(raw, "rb") as src, gzip.open(kept, "wb") as dst:  # ~1 MB raw, ~10x smaller
            shutil.copyfileobj(src, dst)
        out[name]["collapsed"] = os.path.relpath(kept, ROOT)
        summary = out[name]
        log(
            f"profile {name}: {summary['busy_samples']} busy samples "
            f"(+{summary['event_loop_pct']}% in the event loop); shares of the busy ones:"
        )
        for fr, p in summary["self_by_package_pct"][:8]:
            log(f"  self {p:5.1f}%  {fr}")
        for fr, p in summary["lumen_inclusive_pct"][:12]:
            log(f"  incl {p:5.1f}%  {fr}")
    return out


# ---------------------------------------------------------------- local model


def bench_local(
    args: argparse.Namespace, tmp: str, key: str, cores: tuple[int | None, int | None]
) -> dict[str, Any]:
    """Tokens/s a client sees streaming from the built-in local model through Lumen, against
    llama-cpp-python called directly in its own process on the same core. Rounds alternate
    the two sides so drift on a shared VM hits both alike."""
    lumen_core, other_core = cores
    rounds: list[dict[str, Any]] = []
    with lumen_server(args, tmp, key, lumen_core, None, "local") as (lumen_pid, url):
        extra = [
            "--count-tokens",
            "--max-tokens",
            str(args.max_tokens),
            "--temperature",
            "0",
            "--prompt",
            LOCAL_PROMPT,
            "--timeout",
            "600",
        ]
        for i in range(args.local_rounds):
            direct_cmd = [
                *pin(lumen_core),
                PY,
                os.path.join(HERE, "llama_direct.py"),
                "--runs",
                str(args.local_runs),
                "--max-tokens",
                str(args.max_tokens),
                "--prompt",
                LOCAL_PROMPT,
            ]
            d = subprocess.run(direct_cmd, capture_output=True, text=True, timeout=1800)
            if d.returncode != 0:
                raise RuntimeError(f"llama_direct failed: {d.stderr[-2000:]}")
            direct = orjson.loads(d.stdout)
            through = loadgen(
                other_core,
                url,
                key,
                LOCAL_MODEL,
                clients=1,
                requests=args.local_runs,
                warmup=1,
                stream=True,
                cpu_pids={"lumen": lumen_pid},
                extra=extra,
            )
            ratio = through["tokens_per_s"] / direct["tokens_per_s"] if direct["tokens_per_s"] else 0.0
            rounds.append({"direct": direct, "lumen": through, "ratio": round(ratio, 4)})
            log(
                f"local round {i + 1}: direct {direct['tokens_per_s']:.1f} tok/s "
                f"({direct['tokens']} tokens), lumen {through['tokens_per_s']:.1f} tok/s "
                f"({through['tokens']} tokens, errors {through['errors']}), ratio {ratio:.3f}"
            )
    # Medians over every generation, not sums: one hiccup of the shared VM (a run 15% slow,
    # on either side) would otherwise decide the ratio.
    direct_each = [run["tokens_per_s"] for r in rounds for run in r["direct"]["runs"]]
    lumen_each = [x for r in rounds for x in r["lumen"].get("tokens_per_s_each", [])]
    direct_med = statistics.median(direct_each)
    lumen_med = statistics.median(lumen_each) if lumen_each else 0.0
    return {
        "model": LOCAL_MODEL,
        "max_tokens": args.max_tokens,
        "prompt": LOCAL_PROMPT,
        "rounds": rounds,
        "direct_tokens_per_s": round(direct_med, 3),
        "lumen_tokens_per_s": round(lumen_med, 3),
        "direct_tokens_per_s_each": [round(x, 3) for x in direct_each],
        "lumen_tokens_per_s_each": lumen_each,
        "ratio": round(lumen_med / direct_med, 4) if direct_med else 0.0,
        "ratio_per_round": [r["ratio"] for r in rounds],
    }


# ---------------------------------------------------------------- report


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1", help="comma-separated client counts, e.g. 1,16,64,256")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="subset of " + ",".join(SCENARIOS))
    ap.add_argument("--requests", type=int, default=5000, help="measured non-streaming requests per run")
    ap.add_argument("--stream-requests", type=int, default=1500, help="measured streams per run")
    ap.add_argument("--min-per-client", type=int, default=20, help="at least this many requests per client")
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--chunk-interval-ms", type=float, default=1.0, help="pacing of the 'stream' scenario")
    ap.add_argument("--no-fake", action="store_true", help="skip the fake-upstream runs (e.g. with --local)")
    ap.add_argument("--local", action="store_true", help="also compare the local model with llama.cpp direct")
    ap.add_argument("--local-rounds", type=int, default=3)
    ap.add_argument("--local-runs", type=int, default=5, help="generations per side per round")
    ap.add_argument("--max-tokens", type=int, default=128, help="local mode")
    ap.add_argument("--profile", action="store_true", help="py-spy profiles of Lumen after the runs")
    ap.add_argument("--profile-seconds", type=float, default=15.0)
    ap.add_argument("--profile-clients", type=int, default=1)
    ap.add_argument("--profile-rate", type=int, default=500, help="py-spy samples per second")
    ap.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument(
        "--workers", type=int, default=1, help="`lumen serve --workers N` (N > 1 needs --redis-url)"
    )
    ap.add_argument(
        "--postgres-url",
        default=None,
        help="a PostgreSQL server (a role that may create databases), e.g. "
        "postgresql://postgres@127.0.0.1:5432/postgres: each Lumen gets a throwaway database on it",
    )
    ap.add_argument(
        "--redis-url",
        default=None,
        help="e.g. redis://127.0.0.1:6379/0: each Lumen gets a unique key prefix, its keys deleted after",
    )
    ap.add_argument(
        "--lumen-nofile",
        type=int,
        default=None,
        help="Lumen's soft fd limit, as `ulimit -n` (default: the bench's, raised to the hard limit)",
    )
    ap.add_argument(
        "--lumen-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for Lumen, e.g. UV_TCP_SINGLE_ACCEPT=1 (libuv: accept one connection per "
        "wake-up, so that workers sharing the socket take turns)",
    )
    ap.add_argument(
        "--lumen",
        default=os.path.join(os.path.dirname(PY), "lumen"),
        help="the command that serves like `lumen serve` (default: the venv's lumen); "
        'e.g. "python bench/bare_proxy.py" measures the bare stack',
    )
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--out", default=None, help="result file (default bench/results/<timestamp>.json)")
    return ap


def parse_args(
    argv: list[str] | None = None, ap: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    ap = ap or parser()
    args = ap.parse_args(argv)
    args.clients = [int(c) for c in args.clients.split(",") if c]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios: {sorted(unknown)}")
    exe = shlex.split(args.lumen)[0] if args.lumen.strip() else ""
    if not (os.path.exists(exe) or shutil.which(exe)):
        ap.error(f"{exe!r} not found")
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    if any("=" not in e for e in args.lumen_env):
        ap.error("--lumen-env takes NAME=VALUE")
    if args.workers > 1 and not (args.redis_url or os.environ.get("LUMEN_REDIS_URL")):
        ap.error("--workers > 1 needs --redis-url (Lumen shares limits and budgets through Redis)")
    if args.profile and args.workers > 1:
        ap.error("--profile runs one Lumen process under py-spy; use --workers 1")
    started = dt.datetime.now(dt.UTC)
    args.started = started
    args.stamp = started.strftime("%Y%m%dT%H%M%SZ")
    return args


def core_plan(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """(Lumen's core, the core of everything else), or no pinning. Several workers need every
    core, so pinning them all to one would measure nothing; then the scheduler places everyone."""
    pinned = (
        (os.cpu_count() or 1) >= 2 and not args.no_pin and args.workers == 1 and bool(shutil.which("taskset"))
    )
    return (0, 1) if pinned else (None, None)


def backing_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "workers": args.workers,
        "database": "postgresql (a throwaway database per Lumen)"
        if args.postgres_url
        else ("LUMEN_DATABASE_URL" if os.environ.get("LUMEN_DATABASE_URL") else "sqlite"),
        "redis": "a unique key prefix per Lumen"
        if args.redis_url
        else ("LUMEN_REDIS_URL" if os.environ.get("LUMEN_REDIS_URL") else None),
        "lumen_nofile": args.lumen_nofile,
        "lumen_env": args.lumen_env,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_nofile()  # inherited by every child; see common.raise_nofile
    cores = core_plan(args)
    pinned = cores[0] is not None
    key = "sk_bench_" + secrets.token_hex(24)  # keys need 40+ characters after sk_
    doc: dict[str, Any] = {
        "started": args.started.isoformat(timespec="seconds"),
        "machine": machine(),
        "pinning": {"lumen": cores[0], "fake_upstream_and_loadgen": cores[1]} if pinned else None,
        "settings": {
            "clients": args.clients,
            "scenarios": args.scenarios,
            "requests": args.requests,
            "stream_requests": args.stream_requests,
            "warmup": args.warmup,
            "chunks": args.chunks,
            "chunk_interval_ms": args.chunk_interval_ms,
            **backing_settings(args),
        },
    }
    with tempfile.TemporaryDirectory(prefix="lumen-bench-") as tmp:
        if not args.no_fake:
            doc["fake"] = bench_fake(args, tmp, key, cores)
        if args.local:
            doc["local"] = bench_local(args, tmp, key, cores)
    doc["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    doc["targets"] = targets(doc)
    out = args.out or os.path.join(HERE, "results", args.stamp + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    print(markdown(doc))
    if doc.get("local"):
        lo = doc["local"]
        print(
            f"\nlocal model: direct {lo['direct_tokens_per_s']} tok/s, through Lumen "
            f"{lo['lumen_tokens_per_s']} tok/s, ratio {lo['ratio']}"
        )
    log(f"\nwrote {out}")


if __name__ == "__main__":
    main()
