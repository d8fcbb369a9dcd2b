"""vm-img: the GPT disk (BOOT, ROOT-A, ROOT-B, PERSIST) assembled in a file without mounting.

The reference attaches the image to loop devices, mounts it and detaches *every* loop device
on errors. Here each filesystem is created in place at its partition's offset inside the
image file (``mkfs.ext4 -E offset= -d DIR``, ``mkfs.vfat --offset`` plus mtools
``img@@offset``), so no loop device, mount or root privilege is involved and a killed build
leaves only a file in its own work directory.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubeos.kbimg import grub
from kubeos.kbimg.commands import require, run
from kubeos.kbimg.config import BOOT_MIB, Config
from kubeos.kbimg.content import ESP_IN_ROOT, make_persist_tree
from kubeos.kbimg.inroot import resolve

MIB = 1 << 20
SECTOR = 512
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}


@dataclass(frozen=True)
class Partition:
    number: int
    label: str
    start: int  # bytes
    size: int  # bytes
    type_guid: str
    partuuid: str


@dataclass(frozen=True)
class Layout:
    size: int
    disk_id: str
    boot: Partition
    root_a: Partition
    root_b: Partition
    persist: Partition

    @property
    def partitions(self) -> tuple[Partition, ...]:
        return (self.boot, self.root_a, self.root_b, self.persist)

    def sfdisk_script(self) -> str:
        """Input for ``sfdisk`` (fed on stdin; every value comes from this module)."""
        lines = ["label: gpt", f"label-id: {self.disk_id}", "unit: sectors", "first-lba: 2048",
                 "sector-size: 512", ""]
        for p in self.partitions:
            lines.append(f"start={p.start // SECTOR}, size={p.size // SECTOR}, "
                         f"type={p.type_guid}, uuid={p.partuuid}, name=\"{p.label}\"")
        return "\n".join(lines) + "\n"


def plan(cfg: Config) -> Layout:
    """Reference §6.1 in MiB: BOOT 1-60, ROOT-A 60-60+R, ROOT-B, PERSIST up to the last MiB."""
    size = cfg.disk_partition.img_size_gib * 1024 * MIB
    root = cfg.disk_partition.root_mib * MIB

    def part(n: int, label: str, start: int, length: int, type_guid: str) -> Partition:
        return Partition(n, label, start, length, type_guid, str(uuid.uuid4()))

    boot = part(1, "BOOT", MIB, (BOOT_MIB - 1) * MIB, ESP_TYPE)
    a = part(2, "ROOT-A", BOOT_MIB * MIB, root, LINUX_TYPE)
    b = part(3, "ROOT-B", a.start + root, root, LINUX_TYPE)
    persist_start = b.start + root
    persist = part(4, "PERSIST", persist_start, size - MIB - persist_start, LINUX_TYPE)
    return Layout(size, str(uuid.uuid4()), boot, a, b, persist)


def _stage_esp(root: Path, work: Path, layout: Layout) -> Path:
    """ESP content: whatever the root has under /boot/efi, GRUB, grub.cfg by PARTUUID, grubenv.
    ROOT-A keeps an empty /boot/efi as mount point, as after the reference's mount + untar."""
    esp = work / "esp"
    esp.mkdir()
    in_root = resolve(root, ESP_IN_ROOT)
    if in_root.is_dir():
        for entry in sorted(in_root.iterdir()):
            shutil.move(str(entry), esp / entry.name)
    else:
        in_root.mkdir(parents=True)
    # FAT has no symlinks, and following one from the image would read or write the host.
    for dirpath, dirnames, filenames in os.walk(esp):
        for name in [*dirnames, *filenames]:
            if (Path(dirpath) / name).is_symlink():
                (Path(dirpath) / name).unlink()
    add_grub_efi(esp, work)
    efi_dir = esp / grub.ESP_DIR
    roots = grub.RootRef.by_partuuid(layout.root_a.partuuid, layout.root_b.partuuid)
    (efi_dir / "grub.cfg").write_text(grub.grub_cfg(roots))
    env = efi_dir / "grubenv"
    if not env.exists():
        env.write_bytes(grub.grubenv_block())
    return esp


def add_grub_efi(esp: Path, work: Path) -> None:
    """GRUB's EFI binary (removable-media path and EFI/openEuler) and its module directory."""
    efi_dir = esp / grub.ESP_DIR
    efi_dir.mkdir(parents=True, exist_ok=True)
    binary = grub.build_efi_binary(work)
    (esp / "EFI/BOOT").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(binary, esp / grub.REMOVABLE_EFI)
    shutil.copyfile(binary, esp / grub.EFI_BINARY)
    modules = efi_dir / "x86_64-efi"
    modules.mkdir(exist_ok=True)
    for mod in sorted(grub.EFI_MODULES_SRC.iterdir()):
        if mod.suffix in (".mod", ".lst"):
            shutil.copyfile(mod, modules / mod.name)


def _mkfs_ext4(image: Path, part: Partition, tree: Path | None) -> None:
    argv: list[str | os.PathLike[str]] = [
        "mkfs.ext4", "-F", "-q", "-L", part.label, "-O", "^metadata_csum_seed",
        "-E", f"offset={part.start}"]
    if tree is not None:
        argv += ["-d", tree]
    run([*argv, image, f"{part.size // 1024}k"])


def _mkfs_esp(image: Path, part: Partition, esp: Path) -> None:
    run(["mkfs.vfat", "-F", "32", "-s", "1", "-n", part.label,
         "--offset", str(part.start // SECTOR), image, str(part.size // 1024)])
    target = f"{image}@@{part.start}"
    for entry in sorted(esp.iterdir()):
        run(["mcopy", "-s", "-Q", "-m", "-i", target, entry, "::/"], env=_MTOOLS_ENV)


def build_disk(root: Path, cfg: Config, work: Path, raw: Path,
               step: Callable[[str], None] = lambda _: None) -> Layout:
    """Write the raw GPT disk image ``raw`` from the customized root tree."""
    for program in ("sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy"):
        require(program)
    layout = plan(cfg)
    step("preparing the EFI system partition")
    esp = _stage_esp(root, work, layout)
    persist = work / "persist"
    make_persist_tree(persist, cfg.persist_mkdir)
    step("partitioning the disk (sfdisk)")
    with raw.open("wb") as f:
        f.truncate(layout.size)
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw],
        input=layout.sfdisk_script().encode())
    step("writing BOOT (vfat + GRUB)")
    _mkfs_esp(raw, layout.boot, esp)
    step("writing ROOT-A (mkfs.ext4 -d)")
    _mkfs_ext4(raw, layout.root_a, root)
    step("writing ROOT-B and PERSIST")
    _mkfs_ext4(raw, layout.root_b, None)
    _mkfs_ext4(raw, layout.persist, persist)
    return layout


def to_qcow2(raw: Path, out: Path) -> None:
    require("qemu-img")
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out])
