"""In-memory staging of every edit of one request, so nothing is written until all succeeded.

Models read and write files only through a :class:`Stage`. A second config touching a file
already edited by this request (``grub.cmdline.current`` and ``.next`` both edit grub.cfg) sees
the staged text, not the disk. When every config has been applied in memory, the engine turns
the stage into :class:`~kubeos.agent.settings.atomic.PlannedWrite` s for the files whose bytes
changed and commits them together.

Text is decoded as UTF-8 with ``surrogateescape``, so any byte sequence round-trips unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kubeos.agent.settings.atomic import PlannedWrite
from kubeos.agent.settings.errors import ConfigPathError, MissingFileError, SettingsError
from kubeos.agent.settings.paths import real_path, resolve_final_symlink

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def decode(data: bytes) -> str:
    return data.decode(_ENCODING, _ERRORS)


def encode(text: str) -> bytes:
    return text.encode(_ENCODING, _ERRORS)


@dataclass
class _Entry:
    real: Path
    original: bytes | None
    text: str | None
    in_place: bool
    model: str
    node: PurePosixPath


class Stage:
    """Staged file contents of one request, keyed by the real path on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: dict[Path, _Entry] = {}

    def real(self, node: PurePosixPath) -> Path:
        """Where ``node`` lives on disk (symlinks in the last component followed).

        With a ``--root`` other than ``/``, a symlinked directory (``etc -> /etc``) or a
        relative link climbing out could lead outside the root: refused.
        """
        real = resolve_final_symlink(self.root, real_path(self.root, node))
        base = os.path.realpath(self.root)
        where = os.path.realpath(real.parent)
        if where != base and not where.startswith(base.rstrip("/") + "/"):
            raise ConfigPathError("path leads outside the root directory", file=node)
        return real

    def exists(self, node: PurePosixPath) -> bool:
        entry = self._entries.get(self.real(node))
        if entry is not None:
            return entry.text is not None or entry.in_place
        return self.real(node).is_file()

    def read(self, node: PurePosixPath, *, model: str) -> str | None:
        """The current text of ``node``: staged if this request changed it, else from disk."""
        return self._entry(node, model=model, in_place=False).text

    def read_live(self, node: PurePosixPath, *, model: str) -> str | None:
        """Read a pseudo-file such as /proc/sys/...; None if it is write-only (vm.drop_caches).

        Its write cannot be undone then, so a failed request leaves it written.
        """
        real = self.real(node)
        if real not in self._entries and not real.exists():
            raise MissingFileError("file does not exist", model=model, file=node)
        return self._entry(node, model=model, in_place=True).text

    def write(self, node: PurePosixPath, text: str, *, model: str) -> None:
        """Stage new text for a regular file; its parent directory must exist."""
        entry = self._entry(node, model=model, in_place=False)
        if entry.original is None and not entry.real.parent.is_dir():
            raise MissingFileError("parent directory does not exist", model=model, file=node)
        entry.text = text

    def write_live(self, node: PurePosixPath, text: str, *, model: str) -> None:
        self._entry(node, model=model, in_place=True).text = text

    def planned_writes(self) -> list[PlannedWrite]:
        """The writes needed to make the disk match the stage, in first-touched order."""
        writes = []
        for entry in self._entries.values():
            if entry.text is None:
                continue
            data = encode(entry.text)
            if data != entry.original:
                writes.append(PlannedWrite(entry.real, data, entry.original, entry.in_place,
                                           entry.model, str(entry.node)))
        return writes

    def _entry(self, node: PurePosixPath, *, model: str, in_place: bool) -> _Entry:
        real = self.real(node)
        entry = self._entries.get(real)
        if entry is None:
            original = _read_bytes(real, model=model, node=node, in_place=in_place)
            text = decode(original) if original is not None else None
            entry = _Entry(real, original, text, in_place, model, node)
            self._entries[real] = entry
        return entry


def _read_bytes(real: Path, *, model: str, node: PurePosixPath,
                in_place: bool = False) -> bytes | None:
    try:
        return real.read_bytes()
    except FileNotFoundError:
        return None
    except PermissionError:
        if in_place:
            return None
        raise SettingsError("cannot read: permission denied", model=model, file=node) from None
    except IsADirectoryError:
        raise SettingsError("path is a directory, not a file", model=model, file=node) from None
    except OSError as exc:
        raise SettingsError(f"cannot read: {exc.strerror or exc}", model=model,
                            file=node) from exc
