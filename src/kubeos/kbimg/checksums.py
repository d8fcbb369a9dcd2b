"""sha256 of artifacts, and ``<file>.sha256`` files in sha256sum format for the agent and the
PXE installer, which refuse images whose checksum does not match."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_sha256(path: Path) -> Path:
    out = path.with_name(path.name + ".sha256")
    out.write_text(f"{sha256_file(path)}  {path.name}\n")
    return out
