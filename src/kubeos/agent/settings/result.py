"""What applying a request did, in a form the CLI prints and the RPC returns.

Effects are strings so they travel through JSON unchanged:

``live``
    in force already (``kernel.sysctl``);
``restart:<service>``
    the service must be restarted to read its changed file (kubelet, containerd); the engine
    reports it and the caller's restart hook does it;
``next-boot``
    read at the next boot (``grub.cmdline.*``, ``kernel.sysctl.persist``);
``next-login``
    read by PAM when the next session opens (``pam.limits``).

A config that changed nothing has no effect, so nothing is restarted for it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

LIVE = "live"
NEXT_BOOT = "next-boot"
NEXT_LOGIN = "next-login"
RESTART_PREFIX = "restart:"


def restart(service: str) -> str:
    return f"{RESTART_PREFIX}{service}"


@dataclass(frozen=True)
class SettingsWarning:
    """A key that was skipped or only partly applied, as the reference warned (now returned)."""

    model: str
    key: str
    message: str
    file: PurePosixPath | None = None

    def __str__(self) -> str:
        where = f", file {self.file}" if self.file is not None else ""
        return f"{self.model}: {self.message} (key {self.key!r}{where})"


@dataclass(frozen=True)
class FileChange:
    """One file's text before and after one config (``before`` is None for a new file)."""

    path: PurePosixPath
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        """Unified diff, with the node path in the headers (``/dev/null`` for a new file)."""
        if not self.changed:
            return ""
        old = "/dev/null" if self.before is None else f"a{self.path}"
        lines = difflib.unified_diff(
            _lines(self.before or ""), _lines(self.after), fromfile=old, tofile=f"b{self.path}"
        )
        return "".join(lines)


@dataclass(frozen=True)
class ConfigResult:
    """The outcome of one entry of ``configs``."""

    model: str
    files: tuple[FileChange, ...]
    effect: str | None
    warnings: tuple[SettingsWarning, ...] = ()

    @property
    def changed(self) -> bool:
        return any(f.changed for f in self.files)

    def diff(self) -> str:
        return "".join(f.diff() for f in self.files)


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of a whole request. ``applied`` is False in dry-run mode."""

    configs: tuple[ConfigResult, ...]
    applied: bool
    restarted: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.configs)

    @property
    def warnings(self) -> tuple[SettingsWarning, ...]:
        return tuple(w for c in self.configs for w in c.warnings)

    @property
    def effects(self) -> tuple[str, ...]:
        """Distinct effects, in request order."""
        return tuple(dict.fromkeys(c.effect for c in self.configs if c.effect))

    @property
    def restarts(self) -> tuple[str, ...]:
        """Services whose configuration changed, in request order, each once."""
        return tuple(e[len(RESTART_PREFIX):] for e in self.effects if e.startswith(RESTART_PREFIX))

    def diff(self) -> str:
        return "".join(c.diff() for c in self.configs)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary for the RPC and ``--json`` output."""
        return {
            "applied": self.applied,
            "changed": self.changed,
            "effects": list(self.effects),
            "restarted": list(self.restarted),
            "configs": [
                {
                    "model": c.model,
                    "changed": c.changed,
                    "effect": c.effect,
                    "files": [str(f.path) for f in c.files if f.changed],
                    "warnings": [str(w) for w in c.warnings],
                    "diff": c.diff(),
                }
                for c in self.configs
            ],
        }


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines
