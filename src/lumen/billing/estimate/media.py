"""Token costs of the non-text content parts of a chat message: images, audio and files.

Images follow OpenAI's documented rule for its vision models (GPT-4o and GPT-4.1 family):
`detail: low` costs 85 tokens; `high` and `auto` scale the image to fit in 2048x2048, then its
shortest side down to 768, and cost 170 tokens per 512-pixel tile plus 85. The size comes from the
image's own header when the image is inline (a base64 `data:` URL in PNG, JPEG, GIF or WebP); a
remote URL, or an image whose header cannot be read, costs the most the rule allows (8 tiles,
1,445 tokens). `auto` is counted as `high`, the dearer of OpenAI's two choices.

Headers are read straight from the base64 text: only the few bytes a header needs are decoded, so
a large image costs microseconds. Four formats, read by hand rather than with Pillow: Lumen never
decodes images, and adding an image library for four fixed header layouts would add a large
binary dependency to every install for some forty lines.

Audio (`input_audio`) costs 10 tokens per second, OpenAI's rate for audio input. A WAV file's
length comes from its header; for other formats (MP3) the length is taken as if the data were
8 kbit/s, the lowest MP3 bitrate, so no MP3 is counted short. Files (`file`, PDF) cost per page:
a page's text (up to 1,000 tokens) plus the image OpenAI makes of it (worst case, 1,445); pages
are counted from the PDF's page objects, or one per started 32 KiB when none can be found. A
`file_id` refers to an upload the gateway cannot see and counts as one page.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

IMAGE_LOW_TOKENS = 85
IMAGE_BASE_TOKENS = 85
IMAGE_TILE_TOKENS = 170
IMAGE_FIT = 2048
IMAGE_SHORT_SIDE = 768
IMAGE_TILE = 512
IMAGE_WORST_TOKENS = IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * 4 * 2
"""High detail at its largest: 2048x768 after scaling, 4 by 2 tiles."""

AUDIO_TOKENS_PER_SECOND = 10
AUDIO_FLOOR_BYTES_PER_SECOND = 1000
"""8 kbit/s: the length assumed for compressed audio whose duration is not read."""

PAGE_TOKENS = 1000 + IMAGE_WORST_TOKENS
BYTES_PER_UNCOUNTED_PAGE = 32 * 1024
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")

Reader = Callable[[int, int], bytes]
"""`read(offset, length)`: bytes of the decoded data; fewer at its end."""


def image_tokens(width: int, height: int, detail: str = "high") -> int:
    """OpenAI's documented cost of one image of `width` x `height` pixels."""
    if detail == "low":
        return IMAGE_LOW_TOKENS
    if width <= 0 or height <= 0:
        return IMAGE_WORST_TOKENS
    if max(width, height) > IMAGE_FIT:
        scale_to = max(width, height)
        width, height = width * IMAGE_FIT // scale_to, height * IMAGE_FIT // scale_to
    if min(width, height) > IMAGE_SHORT_SIDE:
        scale_to = min(width, height)
        width, height = width * IMAGE_SHORT_SIDE // scale_to, height * IMAGE_SHORT_SIDE // scale_to
    tiles = -(-width // IMAGE_TILE) * -(-height // IMAGE_TILE)
    return IMAGE_BASE_TOKENS + IMAGE_TILE_TOKENS * tiles


def image_part_tokens(part: Mapping[str, Any]) -> int:
    """An `image_url` content part; `image_url` may also be the bare URL string."""
    spec = part.get("image_url")
    url, detail = (spec.get("url"), spec.get("detail")) if isinstance(spec, Mapping) else (spec, None)
    if detail == "low":
        return IMAGE_LOW_TOKENS
    size = _image_size(url) if isinstance(url, str) else None
    return IMAGE_WORST_TOKENS if size is None else image_tokens(*size)


def audio_part_tokens(part: Mapping[str, Any]) -> int:
    spec = part.get("input_audio")
    data = spec.get("data") if isinstance(spec, Mapping) else None
    if not isinstance(data, str):
        return 0
    size = _decoded_size(data)
    seconds = size / AUDIO_FLOOR_BYTES_PER_SECOND
    byte_rate = _wav_byte_rate(_base64_reader(data))
    if byte_rate:
        seconds = size / byte_rate
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)


def file_part_tokens(part: Mapping[str, Any]) -> int:
    spec = part.get("file")
    data = spec.get("file_data") if isinstance(spec, Mapping) else None
    if not isinstance(data, str):
        return PAGE_TOKENS  # a file_id: contents unknown here
    _, _, payload = data.rpartition(",")  # file_data may be a data: URL or bare base64
    try:
        raw = binascii.a2b_base64(payload)
    except binascii.Error:
        return PAGE_TOKENS * max(1, math.ceil(len(payload) * 3 / 4 / BYTES_PER_UNCOUNTED_PAGE))
    pages = len(_PDF_PAGE.findall(raw)) or math.ceil(len(raw) / BYTES_PER_UNCOUNTED_PAGE)
    return PAGE_TOKENS * max(1, pages)


# --- reading sizes from headers ---------------------------------------------------------------


def _image_size(url: str) -> tuple[int, int] | None:
    if not url.startswith("data:"):
        return None  # remote: unknown without fetching it
    comma = url.find(",", 0, 256)
    if comma < 0 or not url.endswith(";base64", 0, comma):
        return None
    return image_size(_base64_reader(url, comma + 1))


def image_size(read: Reader) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, WebP or JPEG header; None for anything else."""
    try:
        head = read(0, 30)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(read)
    except (binascii.Error, ValueError):
        return None
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


# Start-of-frame markers carry the size; C4 (Huffman tables), C8 and CC (arithmetic coding) do not.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_MAX_SEGMENTS = 256


def _jpeg_size(read: Reader) -> tuple[int, int] | None:
    """Walks the segments, reading only each one's 4-byte head, until a start-of-frame."""
    offset = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        head = read(offset, 9)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker in _JPEG_FRAMES:
            if len(head) < 9:
                return None
            return int.from_bytes(head[7:9], "big"), int.from_bytes(head[5:7], "big")
        if marker == 0xD9 or marker == 0xDA:  # end of image, start of scan: no frame header before
            return None
        offset += 2 + int.from_bytes(head[2:4], "big")
    return None


def _wav_byte_rate(read: Reader) -> int:
    """The byte rate of a RIFF/WAVE `fmt ` chunk at its usual place; 0 when not found."""
    try:
        head = read(0, 32)
    except binascii.Error:
        return 0
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE" or head[12:16] != b"fmt ":
        return 0
    return int.from_bytes(head[28:32], "little")


def _decoded_size(payload: str) -> int:
    return len(payload) * 3 // 4 - payload[-2:].count("=")


def _base64_reader(text: str, start: int = 0) -> Reader:
    """Random access to the bytes of the base64 in `text` from `start` on, decoding only the
    4-character groups needed (and never copying the rest of a large text). Strict: stray
    characters (line breaks) would shift every offset, so they fail the read, and the caller
    falls back to its worst case."""

    def read(offset: int, length: int) -> bytes:
        first = offset // 3
        last = -(-(offset + length) // 3)
        chunk = binascii.a2b_base64(text[start + first * 4 : start + last * 4], strict_mode=True)
        skip = offset - first * 3
        return chunk[skip : skip + length]

    return read
