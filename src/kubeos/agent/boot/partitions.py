"""Find the A/B root partitions on the booted disk by label, through sysfs.

A partition is a slot when its GPT partition name (partlabel) or, failing that, its filesystem
label is ``ROOT-A`` or ``ROOT-B``. Only partitions of the disk that holds the booted root are
considered: a second disk (a USB stick, or another image attached for tests) with the same
labels is never written. Labels are read directly — the GPT entry array from the disk and the
ext4 superblock from the partition — so no udev, blkid or ``/dev/disk/by-*`` links are needed.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from kubeos.agent.errors import BootError

SLOT_NAMES = ("A", "B")
EXT_MAGIC = 0xEF53


def slot_label(slot: str) -> str:
    return f"ROOT-{slot}"


def other_slot(slot: str) -> str:
    return "B" if slot == "A" else "A"


@dataclass(frozen=True)
class Partition:
    """A partition as the kernel sees it, with its labels."""

    name: str
    device: Path
    devno: str
    number: int
    start_sector: int  # 512-byte units, as sysfs reports them
    size_bytes: int
    partlabel: str | None
    fslabel: str | None
    partuuid: str | None
    directory: bool = False  # a file-backed slot (``boot.dirslots``): ``device`` is a directory


@dataclass(frozen=True)
class SlotLayout:
    """The booted disk's root slots, keyed by ``A``/``B``, and which one is booted."""

    disk: str
    booted: str
    slots: dict[str, Partition]

    @property
    def inactive(self) -> str:
        return other_slot(self.booted)


def _read(path: Path) -> str:
    return path.read_text().strip()


def _gpt_entries(disk_dev: Path, sector: int) -> dict[int, tuple[str, str]]:
    """Map first-LBA -> (name, unique GUID) from the disk's primary GPT."""
    try:
        with open(disk_dev, "rb") as f:
            f.seek(sector)
            header = f.read(92)
            if header[:8] != b"EFI PART":
                return {}
            entries_lba, count, size = struct.unpack_from("<QII", header, 72)
            if not (0 < count <= 1024 and 128 <= size <= 4096):
                return {}
            f.seek(entries_lba * sector)
            raw = f.read(count * size)
    except OSError:
        return {}
    result = {}
    for i in range(count):
        entry = raw[i * size : (i + 1) * size]
        if len(entry) < 128 or entry[:16] == b"\0" * 16:
            continue
        first_lba = struct.unpack_from("<Q", entry, 32)[0]
        name = entry[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        result[first_lba] = (name, str(uuid.UUID(bytes_le=entry[16:32])))
    return result


def ext_label(device: Path) -> str | None:
    """The ext2/3/4 volume label, or None when the partition holds no ext filesystem."""
    try:
        with open(device, "rb") as f:
            f.seek(1024)
            sb = f.read(136)
    except OSError:
        return None
    if len(sb) < 136 or struct.unpack_from("<H", sb, 0x38)[0] != EXT_MAGIC:
        return None
    return sb[0x78:0x88].split(b"\0", 1)[0].decode(errors="replace") or None


class BlockDevices:
    """sysfs/devfs view, with both roots configurable for tests."""

    def __init__(self, sysfs: Path = Path("/sys"), devfs: Path = Path("/dev")) -> None:
        self.sysfs = sysfs
        self.devfs = devfs

    def _node(self, devno: str) -> Path:
        node = self.sysfs / "dev" / "block" / devno
        if not node.exists():
            raise BootError(f"block device {devno} not found in {self.sysfs}")
        real = node.resolve()
        # dm/md devices (verity, LVM): follow a single underlying device
        slaves = real / "slaves"
        if slaves.is_dir():
            under = sorted(os.listdir(slaves))
            if len(under) == 1:
                return self._node(_read(slaves / under[0] / "dev"))
        return real

    def partition(self, sysdir: Path, gpt: dict[int, tuple[str, str]], sector: int) -> Partition:
        name = sysdir.name
        device = self.devfs / name
        start = int(_read(sysdir / "start"))
        partlabel = partuuid = None
        uevent = {}
        for line in (sysdir / "uevent").read_text().splitlines():
            key, _, value = line.partition("=")
            uevent[key] = value
        partlabel = uevent.get("PARTNAME") or None
        entry = gpt.get(start * 512 // sector)
        if entry is not None:
            partlabel = partlabel or entry[0] or None
            partuuid = entry[1]
        return Partition(
            name=name,
            device=device,
            devno=_read(sysdir / "dev"),
            number=int(_read(sysdir / "partition")),
            start_sector=start,
            size_bytes=int(_read(sysdir / "size")) * 512,
            partlabel=partlabel,
            fslabel=ext_label(device),
            partuuid=partuuid,
        )

    def layout(self, root_devno: str) -> SlotLayout:
        """The slots on the disk that holds ``root_devno``, and which slot is booted."""
        node = self._node(root_devno)
        if not (node / "partition").exists():
            raise BootError(f"the root device {node.name} is not a partition")
        disk = node.parent
        sector = int(_read(disk / "queue" / "logical_block_size"))
        gpt = _gpt_entries(self.devfs / disk.name, sector)
        parts = [
            self.partition(child, gpt, sector)
            for child in sorted(disk.iterdir())
            if (child / "partition").exists()
        ]
        slots: dict[str, Partition] = {}
        for slot in SLOT_NAMES:
            label = slot_label(slot)
            by_part = [p for p in parts if p.partlabel == label]
            by_fs = [p for p in parts if p.fslabel == label and not p.partlabel]
            found = by_part or by_fs
            if len(found) > 1:
                names = ", ".join(p.name for p in found)
                raise BootError(f"{label} is ambiguous on {disk.name}: {names}")
            if found:
                slots[slot] = found[0]
        booted = [s for s, p in slots.items() if p.name == node.name]
        if not booted:
            raise BootError(
                f"the root partition {node.name} is neither ROOT-A nor ROOT-B on {disk.name}"
            )
        if len(slots) != 2:
            missing = [slot_label(s) for s in SLOT_NAMES if s not in slots]
            raise BootError(f"partition {', '.join(missing)} not found on {disk.name}")
        return SlotLayout(disk=disk.name, booted=booted[0], slots=slots)
