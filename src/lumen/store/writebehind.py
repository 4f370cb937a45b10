"""`FlushLoop`: when a write-behind writer writes, shared by the usage recorder, the coin ledger
writer and the ledger outbox drainer.

The owner keeps its data and decides what a flush writes, keeps or drops; the loop only decides
when: every ``interval`` seconds, or at once after `wake` (a full batch waits). While flushes fail
it waits with exponential backoff (``retry_initial`` doubling up to ``retry_max``), which `aclose`
cuts short. `aclose` never cancels a flush in progress (a write cut off mid-commit might be
written twice): it waits for it, then flushes until that succeeds or ``close_timeout`` passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class FlushLoop:
    """Lifecycle: ``await start()``, `wake()` when a batch is full, ``await aclose()`` at shutdown.

    `flush` must raise when it could not write (the loop backs off) and log its own failures.
    `final` (default: `flush`) is the flush at close, for an owner whose periodic flush may
    leave work for later that the last one must not.
    """

    def __init__(
        self,
        flush: Callable[[], Awaitable[None]],
        *,
        name: str,
        interval: float,
        retry_initial: float = 0.1,
        retry_max: float = 10.0,
        close_timeout: float = 30.0,
        final: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if interval <= 0 or retry_initial <= 0 or retry_max < retry_initial or close_timeout < 0:
            raise ValueError("need interval > 0, 0 < retry_initial <= retry_max, close_timeout >= 0")
        self._flush = flush
        self._final = final or flush
        self._name = name
        self._interval = interval
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._close_timeout = close_timeout
        self.failures = 0
        """Consecutive failed flushes of the loop (0 after a success); sets the backoff."""
        self._wakeup = asyncio.Event()  # a full batch waits, or closing
        self._stop = asyncio.Event()  # closing: cut any backoff short
        self._task: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The background task, once started."""
        return self._task

    def wake(self) -> None:
        """Flush now rather than at the end of the interval. O(1); never awaits."""
        self._wakeup.set()

    def start(self) -> None:
        """Launch the background task (idempotent; nothing once closing)."""
        if self._task is None and not self.closing:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def aclose(self) -> bool:
        """Stop, and flush a last time; False if no flush succeeded within ``close_timeout``."""
        self.closing = True
        self._stop.set()
        self._wakeup.set()
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._stop_task()  # lets a flush in progress finish
                while True:
                    try:
                        await self._final()
                        self.failures = 0
                        return True
                    except Exception:  # noqa: BLE001 - the owner logs its failures
                        self.failures += 1
                        await asyncio.sleep(self.delay())
        except TimeoutError:
            return False

    def delay(self) -> float:
        """The backoff after the current run of failures."""
        exponent = min(max(self.failures - 1, 0), 30)
        return float(min(self._retry_max, self._retry_initial * 2**exponent))

    async def _stop_task(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        try:
            await task
        except asyncio.CancelledError:
            # Someone else cancelled the task: the owner kept its unwritten data, and the final
            # flush writes it. If *we* are being cancelled (the close timeout), go on cancelling.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise

    async def _run(self) -> None:
        while not self.closing:
            try:
                async with asyncio.timeout(self._interval):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
            self._wakeup.clear()
            if self.closing:
                return  # aclose() does the final flush
            try:
                await self._flush()
                self.failures = 0
            except Exception:  # noqa: BLE001 - the owner logs its failures
                self.failures += 1
                try:
                    async with asyncio.timeout(self.delay()):
                        await self._stop.wait()
                except TimeoutError:
                    pass
