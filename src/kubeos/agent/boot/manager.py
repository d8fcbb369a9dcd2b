"""The boot manager: which slot is booted, where the slots are, and the grubenv variables of
``docs/boot-contract.md`` (``saved_entry``, ``next_entry``, ``boot_trial``, ``kubeos_rollback``).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeos.agent.boot.dirslots import DISK_DIR, LAYOUT_DIR, LAYOUTS, DirectorySlots
from kubeos.agent.boot.grubenv import GrubEnv, edit_grubenv, read_grubenv
from kubeos.agent.boot.mountinfo import root_mount
from kubeos.agent.boot.mounts import mounted
from kubeos.agent.boot.partitions import BlockDevices, SlotLayout
from kubeos.agent.boot.rootfs import RootInfo, inspect_root
from kubeos.agent.errors import BootError
from kubeos.agent.hostpaths import HostPaths

SAVED_ENTRY = "saved_entry"
NEXT_ENTRY = "next_entry"
BOOT_TRIAL = "boot_trial"
ROLLBACK = "kubeos_rollback"


@dataclass(frozen=True)
class BootState:
    """grubenv as the contract reads it."""

    saved: str  # committed slot; GRUB's default is the first entry, A
    next: str | None
    trial: str | None
    rollback: str | None

    @classmethod
    def of(cls, env: GrubEnv) -> BootState:
        return cls(
            saved=env.get(SAVED_ENTRY) or "A",
            next=env.get(NEXT_ENTRY) or None,
            trial=env.get(BOOT_TRIAL) or None,
            rollback=env.get(ROLLBACK) or None,
        )


class BootManager:
    def __init__(self, paths: HostPaths, layout: str = "partitions") -> None:
        if layout not in LAYOUTS:
            raise BootError(f"unknown slot layout {layout!r} (known: {', '.join(LAYOUTS)})")
        self.paths = paths
        self._devices = BlockDevices(paths.sysfs, paths.devfs)
        self._dirs = DirectorySlots(paths.root / DISK_DIR) if layout == LAYOUT_DIR else None

    def layout(self) -> SlotLayout:
        if self._dirs is not None:
            return self._dirs.layout()
        return self._devices.layout(root_mount(self.paths.mountinfo).devno)

    def state(self) -> BootState:
        return BootState.of(read_grubenv(self.paths.grubenv))

    def edit(self, **values: str | None) -> BootState:
        """Set (or, with None, unset) grubenv variables atomically."""
        return BootState.of(edit_grubenv(self.paths.grubenv, values))

    def inspect(self, layout: SlotLayout, slot: str) -> RootInfo:
        """Check that ``slot`` holds a bootable root; the booted slot is read in place."""
        part = layout.slots[slot]
        if part.directory:  # a directory slot is the root tree itself, booted or not
            return inspect_root(part.device)
        if slot == layout.booted:
            return inspect_root(self.paths.root)
        with mounted(layout.slots[slot].device, self.paths.mount_dir, readonly=True) as root:
            return inspect_root(root)
