"""Crash-safe file replacement and an all-or-nothing commit of several files.

A node may lose power at any instant. A configuration file is therefore never truncated and
rewritten in place (what the reference did): the new content goes to a temporary file in the
same directory (same filesystem, so the rename is atomic), is flushed to disk, gets the old
file's mode and owner, and is renamed over the old one; the directory is then synced so the
rename itself survives a crash. :func:`commit` applies several such writes and, if one fails,
puts back the files it already replaced, so a request never leaves half its files changed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubeos.agent.settings.errors import WriteError

DEFAULT_MODE = 0o644

# Seams for failure-injection tests: the atomicity tests replace these to make one write fail.
_replace = os.replace
_fsync = os.fsync


@dataclass(frozen=True)
class PlannedWrite:
    """A write to perform. ``original`` is None when the file does not exist yet.

    ``in_place`` writes (files under /proc/sys) cannot be renamed over; they are written
    directly and undone by writing ``original`` back.
    """

    path: Path
    data: bytes
    original: bytes | None
    in_place: bool = False
    model: str | None = None
    label: str | None = None
    """The node path, for messages (``path`` may be under a ``--root``)."""


def atomic_write(path: Path, data: bytes, *, mode: int = DEFAULT_MODE) -> None:
    """Replace ``path`` with ``data`` atomically, keeping an existing file's mode and owner.

    ``mode`` applies only when the file is new (explicitly, not through the umask).
    """
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".kubeos-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if st is None:
                os.fchmod(f.fileno(), mode)
            else:
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
                tmp_st = os.fstat(f.fileno())
                if (tmp_st.st_uid, tmp_st.st_gid) != (st.st_uid, st.st_gid):
                    os.fchown(f.fileno(), st.st_uid, st.st_gid)
            _fsync(f.fileno())
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_dir(path.parent)


def write_in_place(path: Path, data: bytes) -> None:
    """Write a pseudo-file (e.g. /proc/sys/...) in one ``write`` call, as sysctl(8) does."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
    finally:
        os.close(fd)


def commit(writes: Sequence[PlannedWrite]) -> None:
    """Perform ``writes`` in order; on failure restore those already done and raise WriteError.

    The restore is best effort: if it fails too, the error says which files may be left changed.
    """
    done: list[PlannedWrite] = []
    for write in writes:
        try:
            _perform(write.path, write.data, write.in_place)
        except OSError as exc:
            # The failed write itself may have landed (e.g. the directory sync failed after the
            # rename), so it is restored too; restoring an unchanged file is harmless.
            not_restored = _restore([*done, write])
            detail = f"could not write: {exc.strerror or exc}; "
            if not_restored:
                detail += "could NOT restore: " + ", ".join(not_restored)
            elif done:
                detail += "files already replaced were restored"
            else:
                detail += "nothing was changed"
            raise WriteError(detail, model=write.model, file=write.label or write.path) from exc
        done.append(write)


def _perform(path: Path, data: bytes, in_place: bool) -> None:
    if in_place:
        write_in_place(path, data)
    else:
        atomic_write(path, data)


def _restore(done: Sequence[PlannedWrite]) -> list[str]:
    failed: list[str] = []
    for write in reversed(done):
        if write.in_place and write.original is None:
            continue  # a write-only pseudo-file: its old value was never known
        try:
            if _current(write.path) == write.original:
                continue
            if write.original is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(write.path)
                _sync_dir(write.path.parent)
            else:
                _perform(write.path, write.original, write.in_place)
        except OSError:
            failed.append(write.label or str(write.path))
    return failed


def _current(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


#: Where the models write (their default files' directories; /etc and /boot walked whole).
STALE_TEMP_TREES = ("/etc", "/boot/efi/EFI", "/boot/grub2")
STALE_TEMP_DIRS = ("/var/lib/kubelet",)
TEMP_SUFFIX = ".kubeos-tmp"


def remove_stale_temps(root: Path, extra_trees: Sequence[str] = ()) -> list[Path]:
    """Remove the ``.<name>.*.kubeos-tmp`` files an agent killed mid-write left behind.

    :func:`atomic_write` removes its temp file on every error, but not when the process is
    killed between ``mkstemp`` and the rename. Called once at agent start, before any request.
    Symlinks are not followed (``os.walk`` default), so nothing outside these trees is visited.
    """
    removed: list[Path] = []

    def sweep(directory: Path, names: Sequence[str]) -> None:
        for name in names:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                path = directory / name
                if path.is_symlink() or path.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(path)

    for tree in (*STALE_TEMP_TREES, *extra_trees):
        top = root.joinpath(tree.lstrip("/"))
        for dirpath, _dirs, files in os.walk(top):
            sweep(Path(dirpath), files)
    for single in STALE_TEMP_DIRS:
        top = root.joinpath(single.lstrip("/"))
        with contextlib.suppress(OSError):
            sweep(top, os.listdir(top))
    return removed
