"""The portal's static files (CSS, JS, images, vendored libraries), served by Lumen itself.

Every URL carries the file's content hash (`/static/css/portal.css?v=3f2a…`), so a file can be
cached for a year and a new release is fetched at once. The files are read once, on first use,
into memory: the set is small, and serving from a dict cannot be tricked into reading outside
the directory.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
    ".png": "image/png",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    version: str
    """The first 12 hex digits of the SHA-256 of the body."""


class Assets:
    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self._directory = directory
        self._files: dict[str, Asset] | None = None

    def get(self, path: str) -> Asset | None:
        return self._load().get(path)

    def url(self, path: str) -> str:
        """The versioned URL of a static file; a missing file is a bug in a template."""
        asset = self._load().get(path)
        if asset is None:
            raise KeyError(f"no static file {path!r} in {self._directory}")
        return f"/static/{path}?v={asset.version}"

    def _load(self) -> dict[str, Asset]:
        if self._files is None:
            files = {}
            for file in sorted(self._directory.rglob("*")):
                if file.is_file() and not file.name.startswith("."):
                    body = file.read_bytes()
                    files[file.relative_to(self._directory).as_posix()] = Asset(
                        body, media_type(file.name), hashlib.sha256(body).hexdigest()[:12]
                    )
            self._files = files
        return self._files


def media_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
