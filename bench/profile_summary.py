"""Summarise a py-spy collapsed-stack file ("--format raw") of a Lumen process under load.

    python bench/profile_summary.py bench/results/<stamp>-profile-stream.collapsed.txt.gz

Start-up samples (imports, migrations, the lifespan) are dropped: the recording starts with
the process, but only serving matters. What is left is split by the package that owns the
innermost Python frame ("self"), and Lumen's own functions (src/lumen) are ranked by the
share of samples that pass through them ("inclusive"), since those are the ones the gateway's
authors can change.

Samples whose innermost Python frame is the event loop itself (uvloop's `run`, or the stdlib
selector's `select`) are counted apart as "event loop": that is epoll and the work uvloop does
in C (reading sockets, running callbacks), and also some waiting that py-spy's non-blocking
sampling cannot tell from work. Every other share is a percentage of the remaining, "busy"
samples, i.e. of the Python-visible work.
"""

from __future__ import annotations

import collections
import gzip
import re
import sys
from typing import Any

import orjson

FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]+?)(?::(?P<line>\d+))?\)$")
STARTUP_MARKERS = ("_find_and_load", "lumen/store/migrate.py", "LifespanOn.startup", "lumen/cli.py:<module>")
LOOP_LEAVES = ("asyncio/runners.py:Runner.run", "uvloop/__init__.py:run", "selectors.py:")


def short(frame: str) -> str:
    """`func (pkg/mod.py:12)` -> `pkg/mod.py:func`: line numbers dropped so one function is one row."""
    m = FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{m.group('func')}"


def package(frame: str) -> str:
    path = frame.split(":", 1)[0]
    if path.startswith("<frozen") or "/" not in path:
        return "stdlib/other"
    return path.split("/", 1)[0]


def summarise(path: str, top: int = 20) -> dict[str, Any]:
    self_frames: collections.Counter[str] = collections.Counter()
    self_pkgs: collections.Counter[str] = collections.Counter()
    lumen_incl: collections.Counter[str] = collections.Counter()
    lumen_innermost: collections.Counter[str] = collections.Counter()
    total = startup = in_loop = 0
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        for line in f:
            stack, _, count_s = line.rstrip("\n").rpartition(" ")
            if not stack or not count_s.isdigit():
                continue
            count = int(count_s)
            frames = [short(fr) for fr in stack.split(";") if fr.strip()]
            if not frames:
                continue
            if any(m in fr for fr in frames for m in STARTUP_MARKERS):
                startup += count
                continue
            leaf = frames[-1]
            if any(leaf.startswith(m) for m in LOOP_LEAVES):
                in_loop += count
                continue
            total += count
            self_pkgs[package(leaf)] += count
            self_frames[leaf] += count
            lumen = [fr for fr in frames if fr.startswith("lumen/")]
            for fr in set(lumen):
                lumen_incl[fr] += count
            if lumen:
                lumen_innermost[lumen[-1]] += count

    def pct(c: collections.Counter[str], n: int = top) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in c.most_common(n)] if total else []

    return {
        "busy_samples": total,
        "event_loop_samples": in_loop,
        "startup_samples_dropped": startup,
        "event_loop_pct": round(100.0 * in_loop / (total + in_loop), 1) if total + in_loop else 0.0,
        "self_by_package_pct": pct(self_pkgs, 12),
        "self_pct": pct(self_frames),
        "lumen_inclusive_pct": pct(lumen_incl),
        "lumen_innermost_pct": pct(lumen_innermost),
    }


def main(argv: list[str] | None = None) -> None:
    paths = (argv if argv is not None else sys.argv[1:]) or []
    if not paths:
        raise SystemExit("usage: profile_summary.py FILE.collapsed.txt ...")
    for p in paths:
        print(orjson.dumps({"file": p, **summarise(p)}, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
