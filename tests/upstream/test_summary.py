"""What callers may see of a backend's own error message."""

from __future__ import annotations

import pytest

from lumen.upstream.summary import event_error, summarise


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        ("connect to http://user:pw@10.0.0.3:8000/v1?key=1 failed", "connect to [address] failed"),
        ("upstream gpu-3.cluster.internal is busy", "upstream [address] is busy"),
        ("try vllm-0:8000 or localhost", "try [address] or [address]"),
        ("bound to 192.168.1.20:9000", "bound to [address]"),
        ("peer [fd00::17]:8000 and fe80::1 gone", "peer [address] and [address] gone"),
        ("served from api.example.com.", "served from [address]."),
        ("<p>Bad <b>input</b></p>", "Bad input"),
        ("line one\nline two\x00", "line one line two"),
    ],
)
def test_addresses_and_markup_are_taken_out(said: str, shown: str) -> None:
    assert summarise(said) == shown


@pytest.mark.parametrize(
    "kept",
    [
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
        "torch.cuda.OutOfMemoryError: CUDA out of memory",
        "model llama-3.1 (Qwen2.5-7B) e.g. takes at most 2 images",
    ],
)
def test_ordinary_messages_are_kept(kept: str) -> None:
    assert summarise(kept) == kept


def test_a_page_is_dropped_and_a_long_message_cut() -> None:
    assert summarise("<!DOCTYPE html><html><title>502</title></html>") is None
    assert summarise("http://10.0.0.1/") is None
    long = summarise("word " * 200)
    assert long is not None and len(long) == 300 and long.endswith("…")


def test_an_error_event_is_summarised() -> None:
    error = event_error({"message": "worker at 10.2.3.4 died"})
    assert error.message == "The model backend failed while answering: worker at [address] died"
    assert "10.2.3.4" in error.detail
