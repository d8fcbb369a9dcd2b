"""A tiny writer for the cpio "newc" format, enough to append files to an initramfs.

The kernel unpacks concatenated cpio archives in order, so adding the PXE installer and its
config to an existing initramfs needs no unpacking, no chroot and no dracut run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    path: str
    data: bytes = b""
    mode: int = 0o100644  # include the file type bits: 0o040755 for a directory


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def _record(ino: int, entry: Entry) -> bytes:
    name = entry.path.lstrip("/").encode() + b"\0"
    fields = (ino, entry.mode, 0, 0, 2 if entry.mode & 0o040000 else 1, 0, len(entry.data),
              0, 0, 0, 0, len(name), 0)
    header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
    return header + name + _pad(len(header) + len(name)) + entry.data + _pad(len(entry.data))


def newc(entries: Iterable[Entry]) -> bytes:
    """A complete newc archive (with trailer), padded to 512 bytes."""
    out = b"".join(_record(i + 1, e) for i, e in enumerate(entries))
    out += _record(0, Entry("TRAILER!!!", mode=0))
    return out + b"\0" * ((512 - len(out) % 512) % 512)
