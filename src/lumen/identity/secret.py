"""The server secret that keys API-key hashes (and, later, session cookies).

Taken from `server.secret_key` / `LUMEN_SECRET_KEY`, or generated once into
`<data_dir>/secret-key` (mode 0600). Every process of one instance must use the same secret:
replicas get it from the environment (docs/configuration.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from lumen.store.engine import prepare_data_dir

SECRET_FILE = "secret-key"


def load_or_create_secret(data_dir: Path) -> bytes:
    path = data_dir / SECRET_FILE
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value.encode()
    prepare_data_dir(data_dir)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process of this instance created it a moment ago: use theirs.
        return path.read_text(encoding="utf-8").strip().encode()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value.encode()
