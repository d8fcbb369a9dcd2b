"""File-backed A/B slots: ``ROOT-A`` and ``ROOT-B`` are directories, not partitions.

Why: the fleet simulator runs hundreds of agents in one process on one machine, where a loop
device (and a mount) per node is not available; everything above the slot layout (grubenv,
boot check, staging, verification, commit) stays the real code. Selected explicitly
(``os-agent serve --layout dir`` or ``AgentService(layout="dir")``), never guessed.

The "disk" is ``<root>/sim-disk``: ``ROOT-A/`` and ``ROOT-B/`` hold the root trees, and
``cmdline`` holds the kernel command line of this boot, whose ``root=LABEL=ROOT-<slot>`` names
the booted slot (what ``/proc/cmdline`` says on a real machine; the simulated firmware writes it).
"""

from __future__ import annotations

import re
from pathlib import Path

from kubeos.agent.boot.partitions import SLOT_NAMES, Partition, SlotLayout, slot_label
from kubeos.agent.errors import BootError

DISK_DIR = "sim-disk"
CMDLINE = "cmdline"
LAYOUT_PARTITIONS = "partitions"
LAYOUT_DIR = "dir"
LAYOUTS = (LAYOUT_PARTITIONS, LAYOUT_DIR)
# a directory has no fixed size; size checks against it must never refuse an image
UNBOUNDED = 1 << 62
_ROOT_ARG = re.compile(r"(?:^|\s)root=LABEL=ROOT-([AB])(?:\s|$)")


def slot_dir(disk: Path, slot: str) -> Path:
    return disk / slot_label(slot)


class DirectorySlots:
    """The slot layout of a ``sim-disk`` directory."""

    def __init__(self, disk: Path) -> None:
        self.disk = disk

    def booted(self) -> str:
        try:
            text = (self.disk / CMDLINE).read_text()
        except OSError as exc:
            raise BootError(f"cannot read the boot command line: {exc}") from None
        match = _ROOT_ARG.search(text)
        if match is None:
            raise BootError(f"{self.disk / CMDLINE} names no root=LABEL=ROOT-A|B")
        return match.group(1)

    def layout(self) -> SlotLayout:
        slots: dict[str, Partition] = {}
        for number, slot in enumerate(SLOT_NAMES, start=2):
            path = slot_dir(self.disk, slot)
            if not path.is_dir():
                raise BootError(f"slot directory {path} not found")
            label = slot_label(slot)
            slots[slot] = Partition(
                name=label, device=path, devno=f"dir:{label}", number=number,
                start_sector=0, size_bytes=UNBOUNDED, partlabel=label, fslabel=label,
                partuuid=None, directory=True,
            )
        return SlotLayout(disk=str(self.disk), booted=self.booted(), slots=slots)
