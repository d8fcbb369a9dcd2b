"""Mounting a slot's filesystem for writing or inspection, and finding who mounts a device."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from kubeos.agent.boot.mountinfo import parse_mountinfo
from kubeos.agent.commands import run_tool
from kubeos.agent.errors import BootError


def mount_points_of(devno: str, mountinfo: Path) -> list[str]:
    """Every mount point of the device ``major:minor`` (empty when it is not mounted)."""
    try:
        text = mountinfo.read_text()
    except OSError:
        return []
    return [e.mount_point for e in parse_mountinfo(text) if e.devno == devno]


def unmount(target: Path) -> None:
    if os.path.ismount(target):
        run_tool(["umount", str(target)], error=BootError)


@contextlib.contextmanager
def mounted(device: Path, target: Path, *, readonly: bool) -> Iterator[Path]:
    """Mount an ext4 ``device`` on ``target`` (created 0700) for the duration of the block."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    options = "ro" if readonly else "rw"
    run_tool(["mount", "-t", "ext4", "-o", options, str(device), str(target)], error=BootError)
    try:
        yield target
    finally:
        unmount(target)
