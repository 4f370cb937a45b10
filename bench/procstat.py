"""Memory and file descriptors of a process tree over time, and a least-squares line through them.

`TreeSampler(pid, interval)` is a thread that records, every `interval` seconds, the RSS and the
number of open file descriptors of `pid` and of all its descendants (for `lumen serve --workers
N`: the supervisor and its workers; a worker that is replaced shows up under its new pid).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Any

import psutil

MIB = 1024 * 1024


def snapshot(pid: int) -> dict[int, dict[str, int]]:
    """{pid: {"rss", "pss", "uss": bytes, "fds": count}} for pid and every descendant still alive.
    RSS counts pages a forked worker still shares with its parent in both; PSS splits shared pages
    between their sharers, so the PSS of a tree adds up to what it really occupies."""
    root = psutil.Process(pid)
    out: dict[int, dict[str, int]] = {}
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error), p.oneshot():
            m = p.memory_full_info()  # /proc/<pid>/smaps_rollup: well under 1 ms
            out[p.pid] = {"rss": m.rss, "pss": m.pss, "uss": m.uss, "fds": p.num_fds()}
    return out


class TreeSampler(threading.Thread):
    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[dict[str, Any]] = []  # {"t": s since start, "procs": snapshot}
        self._stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        # Fixed-rate ticks (not sleep(interval) after the work), so samples stay evenly spaced.
        tick = 0
        while True:
            with contextlib.suppress(psutil.Error):
                self.samples.append({"t": round(time.monotonic() - self.t0, 3), "procs": snapshot(self.pid)})
            tick += 1
            delay = self.t0 + tick * self.interval - time.monotonic()
            if self._stop_event.wait(max(0.0, delay)):
                return

    def stop(self) -> list[dict[str, Any]]:
        self._stop_event.set()
        self.join(timeout=10)
        return self.samples

    def __enter__(self) -> TreeSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def totals(samples: list[dict[str, Any]], field: str) -> list[tuple[float, int]]:
    """(t, sum over the tree) of one field ("rss", "pss", "uss" or "fds")."""
    return [(s["t"], sum(p[field] for p in s["procs"].values())) for s in samples]


def peak(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest tree-wide RSS and fd count seen, and the per-process values of those samples."""
    if not samples:
        return {}
    by_fds = max(samples, key=lambda s: sum(p["fds"] for p in s["procs"].values()))
    by_rss = max(samples, key=lambda s: sum(p["rss"] for p in s["procs"].values()))
    by_pss = max(samples, key=lambda s: sum(p["pss"] for p in s["procs"].values()))
    return {
        "fds": sum(p["fds"] for p in by_fds["procs"].values()),
        "fds_per_process": {str(pid): p["fds"] for pid, p in by_fds["procs"].items()},
        "fds_at_s": by_fds["t"],
        "rss_mib": round(sum(p["rss"] for p in by_rss["procs"].values()) / MIB, 1),
        "rss_mib_per_process": {str(pid): round(p["rss"] / MIB, 1) for pid, p in by_rss["procs"].items()},
        "rss_at_s": by_rss["t"],
        "pss_mib": round(sum(p["pss"] for p in by_pss["procs"].values()) / MIB, 1),
    }


def linear_fit(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """Ordinary least squares y = a + b·t; returns slope b, intercept a and the standard error of b
    (None with fewer than 3 points or no spread in t)."""
    n = len(points)
    if n < 3:
        return None
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((t - mt) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    slope = sum((t - mt) * (y - my) for t, y in points) / sxx
    intercept = my - slope * mt
    residual = sum((y - intercept - slope * t) ** 2 for t, y in points)
    stderr = math.sqrt(residual / (n - 2) / sxx)
    return {"slope": slope, "intercept": intercept, "slope_stderr": stderr}
