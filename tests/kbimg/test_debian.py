"""vm-img from ``[from_debian]``: mmdebstrap of bookworm with the cloud kernel, then the same
structure checks as the tiny root, plus what a real root must have (kernel, initramfs,
systemd, the Python the agent launcher needs).

Downloads a minimal Debian (about 120 MB) from the configured mirror; measured here at about
2 minutes for the whole module, so it stays in the default test tier (marked ``node``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kubeos.kbimg import build, config
from tests.kbimg import support

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="mmdebstrap --mode=root needs root"),
    pytest.mark.skipif(not support.have("mmdebstrap", "sfdisk", "mkfs.ext4", "mkfs.vfat",
                                        "mcopy", "grub-mkimage", "qemu-img", "debugfs"),
                       reason="kbimg tools missing (hack/setup.sh)"),
]


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("debian")
    doc = {
        "from_debian": {"suite": "bookworm", "packages": ["iproute2"], "version": "2.0.0"},
        "users": [{"name": "ops", "passwd": "debian-secret", "groups": ["sudo"]}],
        "systemd_service": {"name": ["systemd-networkd.service"]},
        "disk_partition": {"root": 700, "img_size": 4},
    }
    toml = support.write_toml(base / "kbimg.toml", doc)
    out = base / "out"
    build.build(config.load(toml), "vm-img", out)
    image = out / "system.img"
    table = support.partition_table(image)
    parts = {p["name"]: p for p in table["partitions"]}
    cut = {name: support.cut_partition(image, parts[name], base / f"{name}.part")
           for name in parts}
    return {"out": out, **{k: v for k, v in cut.items()}}


def test_debian_partitions_and_fsck(debian: dict[str, Path]) -> None:
    table = support.partition_table(debian["out"] / "system.img")
    assert [p["name"] for p in table["partitions"]] == ["BOOT", "ROOT-A", "ROOT-B", "PERSIST"]
    subprocess.run(["fsck.vfat", "-n", str(debian["BOOT"])], check=True, capture_output=True)
    for name in ("ROOT-A", "ROOT-B", "PERSIST"):
        subprocess.run(["fsck.ext4", "-fn", str(debian[name])], check=True, capture_output=True)
        info = subprocess.run(["blkid", "-p", "-o", "export", str(debian[name])], check=True,
                              capture_output=True, text=True).stdout
        assert f"LABEL={name}" in info
    cfg = support.mtype(debian["BOOT"], "/EFI/openEuler/grub.cfg")
    uuids = re.findall(r"root=PARTUUID=(\S+)", cfg)
    by_name = {p["name"]: p["uuid"].lower() for p in table["partitions"]}
    assert uuids == [by_name["ROOT-A"], by_name["ROOT-B"]]


def test_debian_root_is_bootable_shape(debian: dict[str, Path], tmp_path: Path) -> None:
    root_a = debian["ROOT-A"]
    kernel = tmp_path / "vmlinuz"
    subprocess.run(["debugfs", "-R", f"dump /boot/vmlinuz {kernel}", str(root_a)], check=True,
                   capture_output=True)
    assert kernel.read_bytes()[0x202:0x206] == b"HdrS"  # a real bzImage
    assert "initramfs.img" in support.debugfs_ls(root_a, "/boot")
    assert 'PRETTY_NAME="KubeOS 2.0.0"' in support.debugfs_cat(root_a, "/usr/lib/os-release")
    assert "os-release" not in support.debugfs_ls(root_a, "/etc")
    assert "systemd" in support.debugfs_ls(root_a, "/usr/lib/systemd")
    assert any(n.startswith("python3") for n in support.debugfs_ls(root_a, "/usr/bin"))
    multi = support.debugfs_ls(root_a, "/etc/systemd/system/multi-user.target.wants")
    assert {"os-agent.service", "systemd-networkd.service"} <= set(multi)
    shadow = support.debugfs_cat(root_a, "/etc/shadow")
    assert re.search(r"^ops:\$6\$", shadow, re.M) and "debian-secret" not in shadow
    assert re.search(r"^sudo:x:27:.*\bops\b", support.debugfs_cat(root_a, "/etc/group"), re.M)


def test_debian_payload_matches_root(debian: dict[str, Path], tmp_path: Path) -> None:
    if not shutil.which("tar"):
        pytest.skip("tar missing")
    listing = subprocess.run(["tar", "-tf", str(debian["out"] / "kubeos.tar")], check=True,
                             capture_output=True, text=True).stdout.splitlines()
    assert "./usr/lib/os-release" in listing and "./boot/vmlinuz" in listing
    assert "./boot/efi/EFI/openEuler/grub.cfg" in listing
