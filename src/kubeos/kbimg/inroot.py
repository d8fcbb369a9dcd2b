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
