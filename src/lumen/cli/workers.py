"""`lumen serve --workers N`: N worker processes on one port (pre-fork).

The parent reserves the port, forks the workers and supervises them: a worker that dies is
replaced, SIGTERM or SIGINT is passed on to every worker, and the parent exits when they have
all stopped (each finishes its requests first: uvicorn's graceful shutdown). Each worker listens
on its own SO_REUSEPORT socket (see `lumen.cli.serve`), so the kernel spreads new connections
evenly over them. Everything that must hold across workers — limits, budgets,
cache invalidation — goes through Redis, as it does across replicas, so N > 1 needs it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)
RESTART_PAUSE_SECONDS = 1.0


def supervise(count: int, run_worker: Callable[[int], None]) -> int:
    """Runs `run_worker(index)` in `count` forked processes until asked to stop; returns the exit
    status for the parent (0 when every worker stopped cleanly on request)."""
    workers: dict[int, int] = {}  # pid -> index
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            status = 0
            try:
                run_worker(index)
            except BaseException:
                log.exception("worker %d failed", index)
                status = 1
            finally:
                os._exit(status)  # never return into the parent's code
        workers[pid] = index

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(count):
        spawn(index)
    failed = False
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
        if pid not in workers:
            continue
        index = workers.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            failed = failed or code not in (0, -signal.SIGTERM)
            continue
        log.error("worker %d (pid %d) exited with %d; starting a new one", index, pid, code)
        time.sleep(RESTART_PAUSE_SECONDS)  # a worker that cannot start must not spin the CPU
        if not stopping:
            spawn(index)
    return 1 if failed else 0
