"""Paths inside an image root tree, resolved as if the tree were ``/``.

The root tree is full of absolute symlinks (``/etc/resolv.conf -> /run/...``). Following them
on the build host would write to the host. Every path that kbimg writes inside the root goes
through :func:`resolve`, which follows symlinks the way a chroot would and never leaves the tree.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubeos.kbimg.errors import BuildError

_MAX_LINKS = 40


def resolve(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """The host path of image path ``path`` (absolute or relative to ``/``) under ``root``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, part)
        if candidate.is_symlink() and (parts or follow_last):
            links += 1
            if links > _MAX_LINKS:
                raise BuildError(f"too many symlinks resolving {path!r} in the image")
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        done.append(part)
    return root.joinpath(*done)


def makedirs(root: Path, path: str, mode: int = 0o755) -> Path:
    """``mkdir -p`` of an image path, creating each level inside the tree only."""
    target = resolve(root, path)
    if not target.is_dir():
        parent = "/".join(path.rstrip("/").split("/")[:-1]) or "/"
        if parent != path:
            makedirs(root, parent, mode)
        target = resolve(root, path)
        target.mkdir(mode=mode, exist_ok=True)
    return target


def _replaceable(target: Path) -> None:
    """Make way for a new file at ``target`` without ever following a symlink there."""
    if target.is_symlink():
        target.unlink()
    elif target.is_dir():
        raise BuildError(f"{target} is a directory in the image, cannot write a file there")


def write_file(root: Path, path: str, data: bytes | str, mode: int = 0o644) -> Path:
    """Write image file ``path``: parents resolved inside the tree, an existing symlink at the
    last component is replaced (O_NOFOLLOW), never followed onto the build host."""
    parent, _, name = path.rstrip("/").rpartition("/")
    target = makedirs(root, parent or "/") / name
    _replaceable(target)
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.chmod(target, mode)
    return target


def copy_into(root: Path, src: Path, path: str) -> None:
    """``cp -r src <root>path`` with chroot semantics: directories are created through
    :func:`makedirs`, files replace whatever is there, symlinks are copied as symlinks."""
    if src.is_symlink():
        parent, _, name = path.rstrip("/").rpartition("/")
        target = makedirs(root, parent or "/") / name
        _replaceable(target)
        target.symlink_to(os.readlink(src))
    elif src.is_dir():
        makedirs(root, path, src.stat().st_mode & 0o7777)
        for child in sorted(src.iterdir()):
            copy_into(root, child, f"{path.rstrip('/')}/{child.name}")
    else:
        st = src.stat()
        target = write_file(root, path, src.read_bytes(), st.st_mode & 0o7777)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
