"""Node paths (what the user writes) and where they live on disk (under ``--root``).

Every path a model touches is an absolute *node path*; :func:`real_path` maps it under the
root directory, so the whole engine can run on a copy of a node's files. ``configpath`` comes
from users through the cluster, so it is checked before it is used: it must be absolute and may
not contain ``..``, which would let a CR reach outside the root it was mapped under.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from kubeos.agent.settings.errors import ConfigPathError

#: How many symbolic links :func:`resolve_final_symlink` follows before giving up (as Linux).
_MAX_LINKS = 40


def node_path(model: str, configpath: str, default: str) -> PurePosixPath:
    """Validate ``configpath`` (or take ``default`` when it is empty) as an absolute node path."""
    raw = configpath or default
    if "\0" in raw:
        raise ConfigPathError("configpath contains a NUL byte", model=model, file=repr(raw))
    path = PurePosixPath(raw)
    if not path.is_absolute():
        raise ConfigPathError("configpath must be an absolute path", model=model, file=raw)
    if ".." in path.parts:
        raise ConfigPathError("configpath must not contain '..'", model=model, file=raw)
    if raw.endswith("/") or path == PurePosixPath("/"):
        raise ConfigPathError("configpath must name a file, not a directory", model=model,
                              file=raw)
    return path


def real_path(root: Path, path: PurePosixPath) -> Path:
    """Map an absolute node path under ``root``."""
    return root.joinpath(*path.parts[1:])


def resolve_final_symlink(root: Path, real: Path) -> Path:
    """Follow symlinks in the last component, mapping absolute targets under ``root``.

    Replacing a file by rename would otherwise turn a link such as
    ``/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf`` into a separate regular file.
    """
    for _ in range(_MAX_LINKS):
        if not real.is_symlink():
            return real
        target = os.readlink(real)
        if os.path.isabs(target):
            real = real_path(root, PurePosixPath(os.path.normpath(target)))
        else:
            real = Path(os.path.normpath(real.parent / target))
    raise ConfigPathError("too many levels of symbolic links", file=real)
