"""Node tier: grub.cfg lives on the ESP, a vfat filesystem; the atomic write must work there
(vfat has no owners and few mode bits, and rename is its only atomic operation)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import GRUB_CFG, apply, config, read, reference_grub_cfg, write

pytestmark = pytest.mark.node


@pytest.fixture
def esp_root(tmp_path: Path) -> Iterator[Path]:
    """A root whose /boot/efi is a freshly made vfat filesystem on a loop device."""
    if os.geteuid() != 0 or not shutil.which("mkfs.vfat"):
        pytest.skip("needs root and mkfs.vfat")
    image = tmp_path / "esp.img"
    with image.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.vfat", "-n", "BOOT", str(image)], check=True, capture_output=True)
    root = tmp_path / "root"
    mountpoint = root / "boot/efi"
    mountpoint.mkdir(parents=True)
    done = subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a loop device: {done.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)


def test_grub_edit_on_vfat_is_atomic_and_leaves_no_temp_file(esp_root: Path) -> None:
    original = reference_grub_cfg()
    path = write(esp_root, GRUB_CFG, original)
    mode = path.stat().st_mode
    apply(esp_root, config("grub.cmdline.current", ("panic", "9")),
          config("grub.cmdline.next", ("quiet", "", "delete")))
    text = read(esp_root, GRUB_CFG)
    assert text.count("panic=9") == 1 and text.count(" quiet ") == 1
    assert path.stat().st_mode == mode
    assert sorted(p.name for p in path.parent.iterdir()) == ["grub.cfg"]
