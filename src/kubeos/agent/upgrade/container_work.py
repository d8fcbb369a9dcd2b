"""What the container sources share: the record of what they create, and filling the slot.

**The work journal.** A crash between pulling an image and removing it again would leave an
image, a container, a snapshot or a mount behind for good, and a later run could not tell them
from the node's own (kubelet's images must never be touched). So each thing is recorded in a
small JSON file in the agent's state directory *before* it is created and forgotten only after
it is gone; the next start (or the next ``stage``) removes exactly what the file names.

**The slot.** Both layouts end the same way as the disk source's tar path: ``mkfs.ext4`` with
the slot's label, mount, fill, check the root is bootable and holds the requested version,
unmount. ``begin_write`` is called only after every check that can be made before the first
write (digest, layout, size), so those failures leave the slot usable for a rollback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubeos.agent.boot.mountinfo import parse_mountinfo
from kubeos.agent.boot.mounts import mount_points_of, mounted, unmount
from kubeos.agent.boot.partitions import slot_label
from kubeos.agent.boot.rootfs import inspect_root
from kubeos.agent.commands import run_tool
from kubeos.agent.errors import AgentError, PayloadError, SpaceError, UpgradeError
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.settings.atomic import atomic_write
from kubeos.agent.upgrade.runtime import Tool, ToolFailed
from kubeos.agent.upgrade.target import StagingTarget

Entry = dict[str, str]
log = logging.getLogger(__name__)


def state_dir_of(target: StagingTarget) -> Path:
    """The agent's state directory: ``StagingTarget.mount_dir`` is ``<state dir>/mnt``."""
    return target.mount_dir.parent


class WorkJournal:
    """``<state dir>/<name>.json``: a list of ``{"kind": ..., "name": ...}`` entries."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[Entry]:
        try:
            data: Any = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(data, list):
            return []
        return [
            {"kind": str(e["kind"]), "name": str(e["name"])}
            for e in data
            if isinstance(e, dict) and "kind" in e and "name" in e
        ]

    def _save(self, entries: list[Entry]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(entries, indent=1).encode(), mode=0o600)

    def add(self, kind: str, name: str) -> None:
        """Record ``kind``/``name`` durably; call this before creating it."""
        entries = self.entries()
        entry = {"kind": kind, "name": name}
        if entry not in entries:
            self._save([*entries, entry])

    def discard(self, kind: str, name: str) -> None:
        """Forget an entry once the thing is gone."""
        self._save([e for e in self.entries() if e != {"kind": kind, "name": name}])

    def remove(self, kind: str, name: str, action: Callable[[], None]) -> bool:
        """Run one removal; forget the entry only when it worked (else the next start retries)."""
        try:
            action()
        except (ToolFailed, OSError, AgentError) as exc:
            log.error("cannot remove %s %s (retried at the next start): %s", kind, name, exc)
            return False
        self.discard(kind, name)
        return True

    def undo(self, remove: Callable[[str, str], None], *, first: str) -> list[str]:
        """Remove everything recorded, entries of kind ``first`` before the others (a mount or
        a container holds the image it uses); returns what went."""
        done = []
        for entry in sorted(self.entries(), key=lambda e: e["kind"] != first):
            kind, name = entry["kind"], entry["name"]
            if self.remove(kind, name, functools.partial(remove, kind, name)):
                done.append(f"{kind} {name}")
        return done


def is_mount_point(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> bool:
    """Whether ``path`` is a mount point. ``os.path.ismount`` cannot tell: containerd mounts a
    one-layer image as a bind mount of a directory on the same filesystem (same st_dev)."""
    try:
        text = mountinfo.read_text()
    except OSError:
        return False
    real = os.path.realpath(path)
    return any(e.mount_point == real for e in parse_mountinfo(text))


def refuse_mounted(target: StagingTarget) -> None:
    """The inactive partition must not be in use (checked before pulling anything)."""
    part = target.partition
    users = mount_points_of(part.devno, target.mountinfo)
    if users:
        raise UpgradeError(f"{part.device} is mounted at {', '.join(users)}; not writing it")


def check_fits(size: int, target: StagingTarget, what: str) -> None:
    """Refuse before the first write when the image's root cannot fit the partition."""
    part = target.partition
    if size > part.size_bytes:
        raise SpaceError(
            f"{what} ({size} bytes) is larger than {part.device} ({part.size_bytes} bytes)"
        )


def tree_size(root: Path) -> int:
    """Bytes the tree under ``root`` occupies (allocated blocks, links not followed)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


def copy_tree(src: Path, dest: Path) -> None:
    """Copy a mounted image root into the slot with owners, modes, links, xattrs and device
    nodes (``cp -a``); the image content was verified by digest, so no containment checks."""
    cp = Tool(("cp",), timeout=3600.0)
    try:
        cp.run("-a", "--", f"{src}/.", f"{dest}/")
    except ToolFailed as exc:
        if "No space left" in exc.detail or "Disk quota" in exc.detail:
            raise SpaceError(
                f"the image root does not fit the target partition: {exc.detail}"
            ) from None
        raise PayloadError(f"copying the image root failed: {exc.detail}") from None


def fill_slot(
    target: StagingTarget, request: UpgradeRequest, fill: Callable[[Path], None]
) -> str:
    """Format the slot, mount it, ``fill`` it, check the root; returns the KubeOS version."""
    part = target.partition
    target.begin_write()
    unmount(target.mount_dir)
    run_tool(
        ["mkfs.ext4", "-q", "-F", "-L", slot_label(target.slot), str(part.device)],
        error=UpgradeError,
    )
    with mounted(part.device, target.mount_dir, readonly=False) as root:
        fill(root)
        info = inspect_root(root)
        if request.version and info.version != request.version:
            raise PayloadError(
                f"the image holds KubeOS {info.version}, "
                f"but version {request.version} was requested"
            )
    return info.version
