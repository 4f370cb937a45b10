from __future__ import annotations

import pytest

from lumen.errors import UpstreamTooLarge
from lumen.upstream.sse import SSEDecoder


def test_events_split_across_reads() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a"') == []
    assert decoder.pending()
    assert decoder.feed(b":1}\n\ndata: [DONE]\n\n") == [b'{"a":1}', b"[DONE]"]
    assert not decoder.pending()


def test_comments_fields_and_crlf() -> None:
    decoder = SSEDecoder()
    raw = b": keep-alive\r\n\r\nevent: x\r\nid: 3\r\ndata: {}\r\n\r\ndata:no-space\n\n"
    assert decoder.feed(raw) == [b"{}", b"no-space"]


def test_multiline_data_is_joined() -> None:
    assert SSEDecoder().feed(b"data: {\ndata: }\n\n") == [b"{\n}"]


def test_an_event_over_the_cap_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    assert decoder.feed(b"data: " + b"x" * 1000 + b"\n\n") == [b"x" * 1000]
    with pytest.raises(UpstreamTooLarge):
        decoder.feed(b"data: " + b"y" * 600)
        decoder.feed(b"y" * 600)  # still no blank line: the event only grows
