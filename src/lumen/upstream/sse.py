"""Decoding an upstream's Server-Sent Events into `data:` payloads.

Only what OpenAI-compatible servers send is supported: events separated by a blank line, `data:`
lines (several are joined with newlines), comments (`:`) and other fields ignored. Both `\\n` and
`\\r\\n` line ends are accepted.

One event may be at most `max_event_bytes` long: a backend that never ends an event cannot make
Lumen buffer without bound.
"""

from __future__ import annotations

from lumen.errors import UpstreamTooLarge

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024


class SSEDecoder:
    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = buffer.split(b"\n\n")
        self._buffer = events.pop()
        # Only when the whole read is over the cap can one of its events be.
        if len(buffer) > self._max and max([len(self._buffer), *map(len, events)]) > self._max:
            raise UpstreamTooLarge(
                f"The model backend sent a stream event larger than this server accepts "
                f"({self._max:,} bytes)."
            )
        payloads = []
        for event in events:
            payload = _data_of(event)
            if payload is not None:
                payloads.append(payload)
        return payloads

    def pending(self) -> bool:
        """Whether an event was started but not finished (ignoring blank lines and comments)."""
        return _data_of(self._buffer) is not None


def _data_of(event: bytes) -> bytes | None:
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]  # the common case, one line
    parts = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(parts) if parts else None
