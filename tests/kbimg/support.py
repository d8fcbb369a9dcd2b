"""Helpers for kbimg tests: a tiny root tree, kbimg.toml writing, and disk inspection without
mounting (sfdisk --json, blkid -p on offsets, partition images cut out with dd-like copies)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import tomlkit

MIB = 1 << 20


def make_tiny_root(root: Path) -> Path:
    """Enough of a root for structure checks: accounts, a fake kernel + initramfs, /var data."""
    for d in ("etc/skel", "boot", "var/lib/demo", "var/log", "usr/lib/systemd/system", "bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/group").write_text("root:x:0:\nwheel:x:10:\n")
    (root / "etc/gshadow").write_text("root:*::\nwheel:*::\n")
    os.chmod(root / "etc/shadow", 0o640)
    os.chmod(root / "etc/gshadow", 0o640)
    (root / "etc/os-release").write_text('PRETTY_NAME="Tiny"\n')
    (root / "etc/skel/.profile").write_text("export TINY=1\n")
    (root / "boot/vmlinuz-6.1.0-tiny").write_bytes(b"\x00fake kernel" * 100)
    (root / "boot/initramfs-6.1.0-tiny.img").write_bytes(b"\x00fake initramfs" * 100)
    (root / "var/lib/demo/state").write_text("hello\n")
    (root / "usr/lib/systemd/system/demo.service").write_text(
        "[Unit]\nDescription=demo\n[Service]\nExecStart=/bin/true\n"
        "[Install]\nWantedBy=multi-user.target\n")
    return root


def write_toml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(tomlkit.dumps(doc))
    return path


def tiny_doc(root: Path, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "from_rootfs": {"path": str(root), "version": "1.0.0",
                        "upgrade_img": "kubeos/os:1.0.0"},
        "disk_partition": {"root": 128, "img_size": 3},
    }
    doc.update(extra)
    return doc


def partition_table(image: Path) -> dict[str, Any]:
    out = subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True,
                         text=True).stdout
    table: dict[str, Any] = json.loads(out)["partitiontable"]
    return table


def cut_partition(image: Path, part: dict[str, Any], dest: Path) -> Path:
    """Copy one partition out of the disk image (sparse-aware enough for small test disks)."""
    start, size = part["start"] * 512, part["size"] * 512
    with image.open("rb") as src, dest.open("wb") as out:
        src.seek(start)
        remaining = size
        while remaining:
            chunk = src.read(min(remaining, 4 * MIB))
            if not chunk:
                break
            if chunk.count(0) == len(chunk):
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
            remaining -= len(chunk)
        out.truncate(size)
    return dest


def blkid(image: Path, offset: int) -> dict[str, str]:
    out = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(offset), str(image)],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def debugfs_cat(fs_image: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(fs_image)], check=True,
                          capture_output=True, text=True).stdout


def debugfs_ls(fs_image: Path, path: str) -> list[str]:
    out = subprocess.run(["debugfs", "-R", f"ls -p {path}", str(fs_image)], check=True,
                         capture_output=True, text=True).stdout
    names = []
    for line in out.splitlines():
        fields = line.strip("/").split("/")
        if len(fields) >= 5 and fields[4] not in (".", ".."):
            names.append(fields[4])
    return names


def debugfs_stat(fs_image: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"stat {path}", str(fs_image)], check=True,
                          capture_output=True, text=True).stdout


def mtype(esp_image: Path, path: str) -> str:
    return subprocess.run(["mtype", "-i", str(esp_image), f"::{path}"], check=True,
                          capture_output=True, text=True,
                          env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout


def mdir_names(esp_image: Path, path: str) -> list[str]:
    out = subprocess.run(["mdir", "-b", "-i", str(esp_image), f"::{path}"], check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    return [line.rstrip("/").rsplit("/", 1)[-1] for line in out.splitlines() if line.strip()]


def have(*programs: str) -> bool:
    return all(shutil.which(p) for p in programs)


def mounts_and_loops(under: Path) -> tuple[list[str], list[str]]:
    """Mounts and loop devices that involve ``under`` (other tests on the machine may mount
    and attach loops of their own at the same time, so global lists are not comparable)."""
    key = str(under)
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if key in line]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return mounts, [line for line in loops.splitlines() if key in line]
