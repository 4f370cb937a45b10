"""One endpoint of one model: its backend, its load and its health.

Health is both passive (a connection error, timeout or 5xx marks the endpoint down for a backoff
that doubles with each consecutive failure) and active (the health checker probes it and a
success brings it back). While down, the balancer skips it; when its backoff has run out it is
tried again by the next request (half-open), and one success clears the failure count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lumen.settings import EndpointSettings
from lumen.upstream.base import Backend


@dataclass(eq=False, slots=True)
class Endpoint:
    settings: EndpointSettings
    backend: Backend
    upstream_model: str
    in_flight: int = 0
    consecutive_failures: int = 0
    down_until: float = 0.0
    last_error: str | None = None
    last_checked: float | None = None
    served: int = field(default=0)

    @property
    def label(self) -> str:
        return self.settings.label()

    @property
    def weight(self) -> int:
        return self.settings.weight

    def is_up(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.down_until

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.down_until = 0.0
        self.last_error = None

    def record_failure(self, reason: str, *, backoff: float, max_backoff: float) -> None:
        self.consecutive_failures += 1
        delay = min(backoff * 2 ** (self.consecutive_failures - 1), max_backoff)
        self.down_until = time.monotonic() + delay
        self.last_error = reason
