"""Which block device holds the booted root, from ``/proc/self/mountinfo``.

The reference asks ``findmnt`` and then guesses the slot from digits in the device name, which
breaks on ``/dev/nvme2n1p2`` or ``/dev/sda12``. mountinfo gives the device number (major:minor)
of the root mount directly; the partition is then identified through sysfs by that number, so
the device's name never matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubeos.agent.errors import BootError


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class MountEntry:
    """One mountinfo line, with the fields the agent uses."""

    major: int
    minor: int
    root: str
    mount_point: str
    fstype: str
    source: str

    @property
    def devno(self) -> str:
        return f"{self.major}:{self.minor}"


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        major, _, minor = fields[2].partition(":")
        try:
            entries.append(
                MountEntry(
                    major=int(major),
                    minor=int(minor),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    fstype=fields[sep + 1],
                    source=_unescape(fields[sep + 2]) if len(fields) > sep + 2 else "",
                )
            )
        except ValueError:
            continue
    return entries


def root_mount(mountinfo: Path) -> MountEntry:
    """The mount visible at ``/``: the last entry for it (later mounts stack on earlier ones)."""
    try:
        text = mountinfo.read_text()
    except OSError as exc:
        raise BootError(f"cannot read {mountinfo}: {exc}") from None
    roots = [e for e in parse_mountinfo(text) if e.mount_point == "/"]
    if not roots:
        raise BootError(f"no root mount in {mountinfo}")
    return roots[-1]
