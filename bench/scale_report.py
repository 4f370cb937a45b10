"""Markdown tables for a bench/scale.py result (also: `python bench/scale_report.py RESULT.json`)."""

from __future__ import annotations

import sys
from typing import Any

import orjson


def _f(v: Any, digits: int | None = None) -> str:
    """Floats with about three significant digits unless `digits` is given."""
    if v is None:
        return "-"
    if isinstance(v, float):
        if digits is None:
            a = abs(v)
            digits = 3 if a < 1 else 2 if a < 10 else 1 if a < 100 else 0
        return f"{v:.{digits}f}"
    return str(v)


def _table(head: list[str], rows: list[list[Any]], align: str | None = None) -> list[str]:
    align = align or "|" + "---:|" * len(head)
    return [
        "| " + " | ".join(head) + " |",
        align,
        *("| " + " | ".join(_f(c) for c in r) + " |" for r in rows),
    ]


def _load(d: dict[str, Any] | None) -> str:
    return f"{d['before']}→{d['after']}" if d else "-"


def _runs(part: dict[str, Any] | None) -> dict[tuple[int, str], dict[str, Any]]:
    return {(r["clients"], r["scenario"]): r for r in (part or {}).get("runs", [])}


def side_by_side(doc: dict[str, Any]) -> list[str]:
    a, b = _runs(doc.get("sqlite")), _runs(doc.get("pg2"))
    if not a and not b:
        return []
    lines = [
        "Added latency (ms): (a) SQLite, 1 process, pinned; (b) PostgreSQL + Redis, 2 workers. "
        "Direct = the same load straight at the fake upstream, measured in each part just before "
        "the run through Lumen.",
        "",
    ]
    rows = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key), b.get(key)
        stream = (ra or rb or {}).get("scenario") == "stream"
        for m, label in [("ttft", "TTFT"), ("latency", "total")] if stream else [("latency", "latency")]:

            def cell(r: dict[str, Any] | None, side: str, pct: str, m: str = m) -> Any:
                return (r or {}).get(side, {}).get(m + "_ms", {}).get(pct)

            rows.append(
                [
                    key[0],
                    key[1],
                    label,
                    cell(ra, "direct", "p50"),
                    cell(ra, "lumen", "p50"),
                    (ra or {}).get(f"added_{m}_p50_ms"),
                    (ra or {}).get(f"added_{m}_p99_ms"),
                    cell(rb, "direct", "p50"),
                    cell(rb, "lumen", "p50"),
                    (rb or {}).get(f"added_{m}_p50_ms"),
                    (rb or {}).get(f"added_{m}_p99_ms"),
                ]
            )
    head = [
        "clients",
        "scenario",
        "metric",
        "(a) direct p50",
        "(a) Lumen p50",
        "(a) added p50",
        "(a) added p99",
        "(b) direct p50",
        "(b) Lumen p50",
        "(b) added p50",
        "(b) added p99",
    ]
    lines += _table(head, rows, "|---:|---|---|" + "---:|" * 8)
    lines += ["", "CPU per request (ms; Lumen = all its processes) and throughput:", ""]
    rows = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key) or {}, b.get(key) or {}
        split = _worker_split(rb.get("lumen", {}))
        rows.append(
            [
                key[0],
                key[1],
                ra.get("lumen_cpu_ms_per_request"),
                ra.get("lumen", {}).get("throughput_rps"),
                _load_pair(ra),
                rb.get("lumen_cpu_ms_per_request"),
                rb.get("lumen", {}).get("throughput_rps"),
                split,
                _load_pair(rb),
                (ra.get("lumen", {}).get("errors") or 0) + (rb.get("lumen", {}).get("errors") or 0),
            ]
        )
    head = [
        "clients",
        "scenario",
        "(a) CPU/req",
        "(a) req/s",
        "(a) load 1m",
        "(b) CPU/req",
        "(b) req/s",
        "(b) worker shares",
        "(b) load 1m",
        "errors",
    ]
    return lines + _table(head, rows, "|---:|---|" + "---:|" * 8)


def _load_pair(row: dict[str, Any]) -> str:
    before = row.get("direct", {}).get("load1", {}).get("before")
    after = row.get("lumen", {}).get("load1", {}).get("after")
    return f"{before}→{after}" if before is not None else "-"


def _worker_split(res: dict[str, Any]) -> str:
    cpu = res.get("cpu", {})
    ws = [cpu[k]["cpu_s"] for k in sorted(cpu) if k.startswith("lumen-w")]
    total = sum(ws)
    return " / ".join(f"{w / total:.0%}" for w in ws) if total > 0 else "-"


def scaling(doc: dict[str, Any]) -> list[str]:
    part = doc.get("scaling")
    if not part:
        return []
    rows = []
    for r in part["summary"]:
        shares = "; ".join(" / ".join(f"{w:.2f}" for w in each) for each in r["worker_cores_each"] if each)
        rows.append(
            [
                r["clients"],
                r["scenario"],
                r["workers"],
                r["throughput_rps"],
                ", ".join(_f(x, 0) for x in r["throughput_rps_each"]),
                r.get("speedup_vs_1"),
                r["lumen_cpu_ms_per_request"],
                r["lumen_cores"],
                shares or "-",
                r["bench_rest_cores"],
                r["other_cores"],
                r["errors"],
                ", ".join(_load(x) for x in r["load1"]),
            ]
        )
    head = [
        "clients",
        "scenario",
        "workers",
        "req/s (median)",
        "req/s each round",
        "2 ÷ 1",
        "Lumen CPU/req (ms)",
        "Lumen cores",
        "cores per worker",
        "bench rest cores",
        "other cores",
        "errors",
        "load 1m",
    ]
    return _table(head, rows, "|---:|---|" + "---:|" * 11)


def soak(doc: dict[str, Any]) -> list[str]:
    part = doc.get("soak")
    if not part:
        return []
    st = part["settings"]
    mem = part["memory"]
    secs = part["load_end_s"] - part["load_start_s"]
    lines = [
        f"{st['seconds']:g} s of load: {st['nonstream_clients']} non-streaming + {st['stream_clients']} "
        f"streaming clients, {st['think_ms']:g} ms pause between a client's requests; "
        f"{part['requests']} requests ({part['requests'] / secs:.0f}/s), **{part['errors']} errors**; "
        f"Lumen used {_f(part.get('lumen_cores'), 2)} cores "
        f"({_f(part.get('lumen_cpu_ms_per_request_mixed'))} ms per request); "
        f"RSS sampled every {st['sample_interval_s']:g} s, fit after {st['warmup_seconds']:g} s of warm-up; "
        f"load average {_load(part.get('load1'))}.",
        "",
    ]
    rows = []
    for pid, p in mem["processes"].items():
        rows.append(_mem_row(f"{p['role']} {pid}", p))
    rows.append(_mem_row("**all Lumen processes (RSS)**", mem["total"]))
    if mem.get("total_pss"):
        rows.append(_mem_row("all Lumen processes (PSS)", mem["total_pss"]))
    head = [
        "process",
        "start (MiB)",
        "end (MiB)",
        "max (MiB)",
        "slope (MiB/h)",
        "± s.e.",
        "fitted growth (MiB)",
        f"< {st['no_growth_mib']:g} MiB",
    ]
    return lines + _table(head, rows, "|---|" + "---:|" * 7)


def _mem_row(name: str, p: dict[str, Any]) -> list[Any]:
    verdict = p.get("no_growth")
    return [
        name,
        p["start_mib"],
        p["end_mib"],
        p["max_mib"],
        p.get("slope_mib_per_hour"),
        p.get("slope_stderr_mib_per_hour"),
        p.get("fitted_growth_mib"),
        "-" if verdict is None else ("yes" if verdict else "**no**"),
    ]


def streams(doc: dict[str, Any]) -> list[str]:
    part = doc.get("streams")
    if not part:
        return []
    rows = []
    for r in part["runs"]:
        lu, d, pk = r["lumen"], r["direct"], r["lumen_peak"]
        soft = sorted({lim[0] for lim in r["lumen_nofile_limits"].values()})
        rows.append(
            [
                r["setup"],
                f"{lu['ok']}/{lu['requests']}",
                lu["errors"],
                lu["overlap"]["all_open_s"],
                d.get("ttft_ms", {}).get("p50"),
                d.get("ttft_ms", {}).get("p99"),
                lu.get("ttft_ms", {}).get("p50"),
                lu.get("ttft_ms", {}).get("p99"),
                f"{r['lumen_idle_rss_mib']} / {r.get('lumen_idle_pss_mib')}",
                f"{pk.get('rss_mib')} / {pk.get('pss_mib')}",
                f"{pk.get('fds')} ({' + '.join(str(v) for v in pk.get('fds_per_process', {}).values())})",
                "/".join(str(s) for s in soft),
                _load(lu.get("load1")),
            ]
        )
    head = [
        "set-up",
        "completed",
        "errors",
        "all open together (s)",
        "direct TTFT p50",
        "direct TTFT p99",
        "Lumen TTFT p50",
        "Lumen TTFT p99",
        "Lumen RSS / PSS idle (MiB)",
        "Lumen RSS / PSS peak (MiB)",
        "Lumen fds peak (per process)",
        "fd soft limit",
        "load 1m",
    ]
    return _table(head, rows, "|---|" + "---:|" * 12)


def markdown(doc: dict[str, Any]) -> str:
    out: list[str] = []
    for title, fn in [
        ("Side by side", side_by_side),
        ("Scaling, 1 vs 2 workers (PostgreSQL + Redis)", scaling),
        ("Soak", soak),
        ("Open streams", streams),
    ]:
        lines = fn(doc)
        if lines:
            out += [f"### {title}", "", *lines, ""]
    if doc.get("elapsed_s") is not None:
        out.append(
            f"Whole run: {doc['elapsed_s']} s; load average {doc.get('load1_start')}→{doc.get('load1_end')}."
        )
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        print(markdown(orjson.loads(f.read())))
