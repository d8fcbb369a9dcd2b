"""Streaming, path-safe extraction of a root filesystem tar into the mounted target slot.

A rootfs needs what Python's ``data``/``tar`` filters strip (setuid bits, device nodes,
absolute symlinks, numeric ownership), so extraction runs with ``fully_trusted`` semantics plus
our own containment checks. They matter because the checksum is only known at the end of the
single pass: until then the bytes are untrusted, and no member may be written outside the
target — not by ``..``, not by an absolute name, not through a symlink extracted earlier, and
not by a hard link to a file outside.
"""

from __future__ import annotations

import copy
import errno
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from kubeos.agent.errors import PayloadError, SpaceError


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base + os.sep)


def _safe_name(name: str, what: str) -> str:
    norm = os.path.normpath(name.lstrip("/")) if name.strip("/") else "."
    if norm == ".." or norm.startswith("../"):
        raise PayloadError(f"unsafe {what} in the rootfs tar: {name!r}")
    return norm


def _member_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    base = os.path.realpath(dest_path)
    name = _safe_name(member.name, "member name")
    parent = os.path.realpath(os.path.join(base, os.path.dirname(name)))
    if not _inside(parent, base):
        raise PayloadError(f"rootfs tar member {member.name!r} would be written outside the slot")
    target = os.path.join(parent, os.path.basename(name))
    if not member.isdir() and name != "." and os.path.islink(target):
        # a later member replaces an earlier symlink; never write through it
        os.unlink(target)
    changes: dict[str, str] = {}
    if name != member.name:
        changes["name"] = name
    if member.islnk():
        link = _safe_name(member.linkname, "hard link")
        real = os.path.realpath(os.path.join(base, link))
        if not _inside(real, base):
            raise PayloadError(f"hard link {member.name!r} points outside the slot")
        changes["linkname"] = link
    if not changes:
        return member
    # what TarInfo.replace(deep=False) does; replace() only exists from Python 3.11.4, and the
    # image's python3 (Debian 12) is 3.11.2
    clone = copy.copy(member)
    for key, value in changes.items():
        setattr(clone, key, value)
    return clone


class ByteReader(Protocol):
    def read(self, size: int = -1) -> bytes: ...


def extract_rootfs(stream: ByteReader, dest: Path) -> int:
    """Extract the tar read from ``stream`` into ``dest``; returns the number of members.

    Each member is checked just before it is extracted (members are pulled one by one), so a
    symlink extracted earlier is seen by the checks of the members after it.
    """
    count = 0
    base = str(dest)

    def checked(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        nonlocal count
        for member in tar:
            count += 1
            yield _member_filter(member, base)

    try:
        # copybufsize is a TarFile argument typeshed does not list; 1 MiB copies, not 16 KiB
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=stream, mode="r|*", bufsize=1 << 20, copybufsize=1 << 20
        ) as tar:
            if hasattr(tarfile, "fully_trusted_filter"):
                # explicit: newer Pythons default to the "data" filter, which breaks a rootfs
                tar.extractall(
                    dest, members=checked(tar), numeric_owner=True, filter="fully_trusted"
                )
            else:  # Python < 3.11.4 has no filters; the checks above are all there is
                tar.extractall(dest, members=checked(tar), numeric_owner=True)
    except tarfile.TarError as exc:
        raise PayloadError(f"the payload is not a valid rootfs tar: {exc}") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SpaceError(
                f"the rootfs does not fit the target partition: {exc.strerror}"
            ) from None
        raise PayloadError(f"extracting the rootfs tar failed: {exc}") from None
    return count
