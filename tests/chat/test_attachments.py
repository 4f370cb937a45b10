from __future__ import annotations

import base64
import codecs
import io

import pytest
from pypdf import PdfReader, PdfWriter

from lumen.chat.attachments import AttachmentLimits, clean_name, extract, extract_sync, sniff
from lumen.errors import InvalidRequest, LumenError, PayloadTooLarge
from tests.chat.pdfs import make_pdf

LIMITS = AttachmentLimits()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))


def _error(name: str, data: bytes, limits: AttachmentLimits = LIMITS) -> LumenError:
    with pytest.raises(LumenError) as caught:
        extract_sync(name, data, limits)
    return caught.value


def test_utf8_text_is_kept_whole() -> None:
    text = "Grüße, 世界\nline two\n"
    found = extract_sync("notes.md", codecs.BOM_UTF8 + text.encode(), LIMITS)
    assert found.kind == "text" and found.data_url is None
    assert (found.meta.text, found.meta.text_chars, found.meta.type) == (text, len(text), "text/plain")
    assert found.meta.size == len(codecs.BOM_UTF8 + text.encode())


def test_utf16_with_a_byte_order_mark_is_text() -> None:
    found = extract_sync("w.txt", "Zürich".encode("utf-16"), LIMITS)
    assert found.meta.text == "Zürich"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe\xfa invalid",
        "latin-1 caf\xe9".encode("latin-1"),
        b"PK\x03\x04\x14\x00\x00\x00docx",
        b"ab\x00cd",
    ],
)
def test_anything_else_is_refused_by_its_content(data: bytes) -> None:
    error = _error("report.txt", data)
    assert isinstance(error, InvalidRequest) and error.code == "unsupported_attachment_type"
    assert "UTF-8 text, a PDF" in error.message


def test_type_comes_from_the_bytes_not_the_name() -> None:
    assert extract_sync("photo.png", b"just text", LIMITS).kind == "text"
    assert extract_sync("notes.txt", PNG, LIMITS).kind == "image"
    # SVG is XML text: it is never passed on as an image (it can hold script).
    assert extract_sync("a.svg", b"<svg><script>alert(1)</script></svg>", LIMITS).kind == "text"


def test_size_limits_per_type() -> None:
    small = AttachmentLimits(text_bytes=10, pdf_bytes=100, image_bytes=50, text_chars=5)
    error = _error("a.txt", b"x" * 11, small)
    assert (
        isinstance(error, PayloadTooLarge)
        and error.code == "attachment_too_large"
        and "10 bytes" in error.message
    )
    assert _error("a.png", PNG + b"x" * 50, small).code == "attachment_too_large"
    assert _error("a.pdf", make_pdf(["hello"]) + b" " * 100, small).code == "attachment_too_large"
    error = _error("a.txt", b"x" * 6, small)
    assert error.code == "attachment_text_too_long" and error.status == 413
    assert _error("empty.txt", b"").code == "empty_attachment"
    assert small.max_bytes == 100


def test_names_lose_directories_and_control_characters() -> None:
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\ann\\report.pdf") == "report.pdf"
    assert clean_name("a\x00b\nc.txt") == "abc.txt"
    assert clean_name("..") == clean_name("/") == clean_name(" ") == "attachment"
    assert len(clean_name("x" * 500 + ".txt")) == 255


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(20), "image/jpeg"),
        (b"GIF89a" + bytes(20), "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(20), "image/webp"),
    ],
)
def test_images_become_data_urls(data: bytes, mime: str) -> None:
    assert sniff(data) == mime
    found = extract_sync("pic", data, LIMITS)
    assert found.kind == "image" and found.meta.type == mime and found.meta.text is None
    prefix = f"data:{mime};base64,"
    assert found.data_url is not None and found.data_url.startswith(prefix)
    assert base64.b64decode(found.data_url[len(prefix) :]) == data


async def test_pdf_text_is_extracted_page_by_page() -> None:
    found = await extract("paper.pdf", make_pdf(["Hello from page one", "Second (page) text"]))
    assert found.kind == "pdf" and found.meta.type == "application/pdf"
    assert found.meta.text is not None
    assert "Hello from page one" in found.meta.text and "Second (page) text" in found.meta.text
    assert found.meta.text.index("one") < found.meta.text.index("Second")
    assert found.meta.text_chars == len(found.meta.text)


def test_pdf_limits_on_pages_and_text() -> None:
    pdf = make_pdf(["one", "two", "three"])
    error = _error("long.pdf", pdf, AttachmentLimits(pdf_pages=2))
    assert error.code == "attachment_too_large" and "3 pages" in error.message
    error = _error("wordy.pdf", make_pdf(["a" * 50, "b" * 50]), AttachmentLimits(text_chars=60))
    assert error.code == "attachment_text_too_long"


def test_a_pdf_without_text_or_with_a_password_or_broken_is_refused() -> None:
    error = _error("scan.pdf", make_pdf([None]))
    assert error.code == "unreadable_pdf" and "no text layer" in error.message
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["secret text"]))))
    writer.encrypt(user_password="hunter2", algorithm="RC4-128")
    locked = io.BytesIO()
    writer.write(locked)
    error = _error("locked.pdf", locked.getvalue())
    assert error.code == "unreadable_pdf" and "password" in error.message
    for broken in (b"%PDF-1.4\nthis is not a pdf", make_pdf(["x"])[:60]):
        error = _error("broken.pdf", broken)
        assert isinstance(error, InvalidRequest) and error.code == "unreadable_pdf"
