from __future__ import annotations

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
