"""Streaming extraction of a root filesystem tar that cannot write outside the target slot.

A rootfs needs what Python's ``data``/``tar`` filters strip (setuid bits, device nodes,
absolute symlinks, numeric ownership), so ``tarfile.extractall`` would have to run fully
trusted. It is not used: the checksum is only known at the end of the single pass, so until
then every byte is hostile, and ``extractall`` applies owner, mode and times *through paths*
after the fact — a symlink ``esc -> /etc`` followed by a directory member ``esc`` used to make
the host's ``/etc`` world-writable.

Here every member is created by hand, relative to directory descriptors opened from the slot
root one component at a time with ``O_NOFOLLOW`` (docs/security.md, "Node agent threat
model"):

* a name is split into components; ``..`` anywhere is refused, a leading ``/`` is dropped;
* a parent component that is a symlink (or anything but a directory) is refused — a real
  rootfs tar never lists a member beneath a symlink, since tar does not follow them;
* the last component is created fresh: an earlier file, link or device of the same name is
  unlinked first (a later member replaces a link, never writes through it); replacing a
  directory by a non-directory is refused;
* owner, mode and times are applied to the object itself: ``fchown``/``fchmod``/``futimens``
  on the descriptor of the file or directory we created, ``lchown``/``lutimes`` semantics
  (``follow_symlinks=False``) for links and devices;
* a hard link's target is resolved the same way and linked with ``follow_symlinks=False``.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Protocol

from kubeos.agent.errors import PayloadError, SpaceError

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CACHED_DIRS = 64


class ByteReader(Protocol):
    def read(self, size: int = -1) -> bytes: ...


def split_member_name(name: str, what: str = "member name") -> tuple[str, ...]:
    """The components of a tar member name beneath the slot root; ``()`` is the root itself.

    Raises :class:`PayloadError` for ``..`` anywhere and for NUL bytes. Empty and ``.``
    components are dropped, as is a leading ``/`` (tar strips it too).
    """
    if "\0" in name:
        raise PayloadError(f"unsafe {what} in the rootfs tar: {name!r}")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise PayloadError(f"unsafe {what} in the rootfs tar: {name!r}")
    return parts


class _Slot:
    """Directory descriptors beneath one slot root, never through a symlink."""

    def __init__(self, root: Path) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self._dirs: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self.as_root = os.geteuid() == 0
        self.dir_times: dict[tuple[str, ...], tarfile.TarInfo] = {}

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        os.close(self.root_fd)

    def dir_fd(self, parts: tuple[str, ...], member: str, create: bool = True) -> int:
        """The descriptor of directory ``parts``; missing components are created (0755)."""
        if not parts:
            return self.root_fd
        cached = self._dirs.get(parts)
        if cached is not None:
            self._dirs.move_to_end(parts)
            return cached
        parent = self.dir_fd(parts[:-1], member, create)
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise PayloadError(
                    f"rootfs tar member {member!r} refers to a missing directory"
                ) from None
            os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise PayloadError(
                    f"rootfs tar member {member!r} lies beneath {'/'.join(parts)!r}, "
                    "which is not a directory (a symlink is never followed)"
                ) from None
            raise
        self._dirs[parts] = fd
        if len(self._dirs) > _CACHED_DIRS:
            _, old = self._dirs.popitem(last=False)
            if old != fd:
                os.close(old)
        return fd

    def clear(self, parent: int, name: str, member: str) -> None:
        """Remove an earlier non-directory ``name`` so a new object takes its place."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise PayloadError(f"rootfs tar member {member!r} would replace a directory")
        os.unlink(name, dir_fd=parent)

    def owner(self, member: tarfile.TarInfo, fd: int | None, parent: int, name: str) -> None:
        if not self.as_root:
            return
        if fd is not None:
            os.fchown(fd, member.uid, member.gid)
        else:
            os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)


def _times(member: tarfile.TarInfo) -> tuple[int, int]:
    ns = int(member.mtime * 1_000_000_000)
    return ns, ns


def _file(slot: _Slot, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int,
          name: str) -> None:
    slot.clear(parent, name, member.name)
    fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
    try:
        source: IO[bytes] | None = tar.extractfile(member)
        if source is not None:
            with os.fdopen(os.dup(fd), "wb", buffering=0, closefd=True) as out:
                while chunk := source.read(_CHUNK):
                    out.write(chunk)
        slot.owner(member, fd, parent, name)
        os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears setuid bits
        os.utime(fd, ns=_times(member))
    finally:
        os.close(fd)


def _directory(slot: _Slot, parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
    if parts:
        parent = slot.dir_fd(parts[:-1], member.name)
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(parts[-1], dir_fd=parent)  # a directory replaces a file or a link
        except FileNotFoundError:
            pass
    fd = slot.dir_fd(parts, member.name)
    slot.owner(member, fd, slot.root_fd, "")
    os.fchmod(fd, member.mode & 0o7777)
    slot.dir_times[parts] = member  # times last: writing children changes them


def _symlink(slot: _Slot, member: tarfile.TarInfo, parent: int, name: str) -> None:
    slot.clear(parent, name, member.name)
    os.symlink(member.linkname, name, dir_fd=parent)
    slot.owner(member, None, parent, name)
    os.utime(name, ns=_times(member), dir_fd=parent, follow_symlinks=False)


def _hardlink(slot: _Slot, member: tarfile.TarInfo, parent: int, name: str) -> None:
    target = split_member_name(member.linkname, "hard link")
    if not target:
        raise PayloadError(f"hard link {member.name!r} points at the slot root")
    src_parent = slot.dir_fd(target[:-1], member.name, create=False)
    slot.clear(parent, name, member.name)
    try:
        os.link(target[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent,
                follow_symlinks=False)
    except FileNotFoundError:
        raise PayloadError(
            f"hard link {member.name!r} points at {member.linkname!r}, not in the tar before it"
        ) from None


def _device(slot: _Slot, member: tarfile.TarInfo, parent: int, name: str) -> None:
    slot.clear(parent, name, member.name)
    kind = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK}.get(
        member.type, stat.S_IFIFO
    )
    device = os.makedev(member.devmajor, member.devminor) if kind != stat.S_IFIFO else 0
    os.mknod(name, kind | 0o600, device, dir_fd=parent)
    slot.owner(member, None, parent, name)
    # the node was just made by us in a directory opened without following links
    os.chmod(name, member.mode & 0o7777, dir_fd=parent)
    os.utime(name, ns=_times(member), dir_fd=parent, follow_symlinks=False)


def _extract(slot: _Slot, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    parts = split_member_name(member.name)
    if member.isdir():
        _directory(slot, parts, member)
        return
    if not parts:
        raise PayloadError(f"rootfs tar member {member.name!r} would replace the slot root")
    parent = slot.dir_fd(parts[:-1], member.name)
    name = parts[-1]
    if member.issym():
        _symlink(slot, member, parent, name)
    elif member.islnk():
        _hardlink(slot, member, parent, name)
    elif member.ischr() or member.isblk() or member.isfifo():
        _device(slot, member, parent, name)
    else:  # regular, contiguous, GNU sparse: tarfile hands out the data
        _file(slot, tar, member, parent, name)


def _finish_dirs(slot: _Slot) -> None:
    for parts, member in sorted(slot.dir_times.items(), key=lambda kv: -len(kv[0])):
        try:
            fd = slot.dir_fd(parts, member.name, create=False)
        except PayloadError:
            continue  # replaced by a later member; nothing to date
        os.utime(fd, ns=_times(member))


def extract_rootfs(stream: ByteReader, dest: Path) -> int:
    """Extract the tar read from ``stream`` into ``dest``; returns the number of members.

    One streaming pass; each member is created as it is read, so a symlink extracted earlier
    is seen (and never followed) by the members after it.
    """
    count = 0
    slot = _Slot(dest)
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=stream, mode="r|*", bufsize=_CHUNK
        ) as tar:
            for member in tar:
                count += 1
                _extract(slot, tar, member)
        _finish_dirs(slot)
    except tarfile.TarError as exc:
        raise PayloadError(f"the payload is not a valid rootfs tar: {exc}") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SpaceError(
                f"the rootfs does not fit the target partition: {exc.strerror}"
            ) from None
        raise PayloadError(f"extracting the rootfs tar failed: {exc}") from None
    finally:
        slot.close()
    return count
