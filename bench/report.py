"""The tables bench/run.py prints: its measurements as Markdown and the issues' targets with
pass/MISS. Kept apart from run.py, which starts processes and measures."""

from __future__ import annotations

from typing import Any

# Limits from the issues (ms, or a ratio for the local model).
TARGETS = {
    "added_p50_ms_1_client": 0.5,
    "cpu_ms_per_request": 0.7,
    "cpu_ms_per_stream": 1.0,
    "local_tokens_per_s_ratio": 0.95,
}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _load(row: dict[str, Any]) -> str:
    """The 1-minute load average before the direct run and after the run through Lumen."""
    before = row["direct"].get("load1", {}).get("before")
    after = row["lumen"].get("load1", {}).get("after")
    return f"{before}→{after}" if before is not None else "-"


def markdown(doc: dict[str, Any]) -> str:
    head = [
        "clients",
        "scenario",
        "metric",
        "direct p50",
        "direct p99",
        "Lumen p50",
        "Lumen p99",
        "added p50",
        "added p99",
        "Lumen CPU ms/req",
        "Lumen req/s",
        "errors",
        "load 1m",
    ]
    lines = []
    for r in (doc.get("fake") or {}).get("runs", []):
        if not lines:
            lines = ["| " + " | ".join(head) + " |", "|---:|---|---|" + "---:|" * (len(head) - 3)]
        metrics = (
            [("ttft", "TTFT"), ("latency", "total")] if r["lumen"]["stream"] else [("latency", "latency")]
        )
        for m, label in metrics:
            d, lu = r["direct"].get(m + "_ms", {}), r["lumen"].get(m + "_ms", {})
            cells = [
                r["clients"],
                r["scenario"],
                label + " (ms)",
                d.get("p50"),
                d.get("p99"),
                lu.get("p50"),
                lu.get("p99"),
                r.get(f"added_{m}_p50_ms"),
                r.get(f"added_{m}_p99_ms"),
                r["lumen_cpu_ms_per_request"],
                r["lumen"]["throughput_rps"],
                r["lumen"]["errors"],
                _load(r),
            ]
            lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    lines.append("")
    lines += ["| target | limit | measured | result |", "|---|---:|---:|---|"]
    for t in doc.get("targets", []):
        lines.append(f"| {t['target']} | {t['limit']} | {_fmt(t['measured'])} | {t['result']} |")
    return "\n".join(lines)


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(name: str, limit: float, measured: float | None, higher_is_better: bool = False) -> None:
        if measured is None:
            result = "not measured"
        elif higher_is_better:
            result = "pass" if measured >= limit else "MISS"
        else:
            result = "pass" if measured <= limit else "MISS"
        out.append({"target": name, "limit": limit, "measured": measured, "result": result})

    runs = (doc.get("fake") or {}).get("runs", [])
    for r in runs:
        c, sc = r["clients"], r["scenario"]
        if c == 1 and sc == "nonstream":
            add(
                "added latency p50, 1 client, non-stream (ms)",
                TARGETS["added_p50_ms_1_client"],
                r.get("added_latency_p50_ms"),
            )
        if c == 1 and sc == "stream":
            add(
                "added TTFT p50, 1 client, stream (ms)",
                TARGETS["added_p50_ms_1_client"],
                r.get("added_ttft_p50_ms"),
            )
        if sc == "nonstream":
            add(
                f"Lumen CPU per non-stream request, {c} client(s) (ms)",
                TARGETS["cpu_ms_per_request"],
                r["lumen_cpu_ms_per_request"],
            )
        else:
            pacing = "paced" if sc == "stream" else "burst"
            add(
                f"Lumen CPU per 16-chunk stream ({pacing}), {c} client(s) (ms)",
                TARGETS["cpu_ms_per_stream"],
                r["lumen_cpu_ms_per_request"],
            )
    local = doc.get("local")
    if local:
        add(
            "local model tokens/s through Lumen / direct",
            TARGETS["local_tokens_per_s_ratio"],
            local["ratio"],
            True,
        )
    return out
