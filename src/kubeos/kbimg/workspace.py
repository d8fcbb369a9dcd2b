"""The output directory: one build at a time per directory, outputs appear only when complete.

The reference deletes ``./scripts-auto`` (with earlier artifacts) at every start and guards it
with a lock *file* that outlives a crash. Here the lock is ``flock`` on an open descriptor,
which the kernel releases when the process dies, so it is never stale. A build writes only into
its own ``.kbimg-work-*`` directory inside the output directory (same filesystem) and moves
each finished artifact into place with ``rename``, so a file under its final name is always
complete and earlier artifacts are untouched until replaced by a complete new one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubeos.kbimg.errors import BuildError

LOCK_NAME = ".kbimg.lock"
WORK_PREFIX = ".kbimg-work-"


@contextmanager
def locked_output(output: Path) -> Iterator[int]:
    """Hold the output directory's lock; fails at once if another build holds it."""
    output.mkdir(parents=True, exist_ok=True)
    fd = os.open(output / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise BuildError(f"another kbimg build is using {output}") from None
            raise
        yield fd
    finally:
        os.close(fd)


def remove_stale_work(output: Path) -> None:
    """Work dirs of killed builds (only ever called while holding the lock, so none is live)."""
    for entry in output.glob(WORK_PREFIX + "*"):
        shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def work_dir(output: Path) -> Iterator[Path]:
    """A private scratch directory inside ``output``; removed however the build ends (a
    SIGKILL leaves it for the next build under the lock to remove)."""
    path = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir=output))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(work: Path, output: Path, names: list[str]) -> list[Path]:
    """Move finished artifacts from the work dir to their final names, each atomically.

    Earlier artifacts of the same names are removed first, so an interruption here leaves a
    subset of this build's artifacts, never a mix of two builds (a kubeos.tar next to the
    checksum of another one). Artifacts of other names are not touched.
    """
    for name in names:
        src = work / name
        if not src.exists():
            raise BuildError(f"internal error: artifact {name} was not produced")
        os.chmod(src, 0o640 if src.is_file() else 0o750)
        with open(src, "rb") as f:
            os.fsync(f.fileno())
    for name in names:
        (output / name).unlink(missing_ok=True)
    published = []
    for name in names:
        dest = output / name
        os.replace(work / name, dest)
        published.append(dest)
    dir_fd = os.open(output, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return published
