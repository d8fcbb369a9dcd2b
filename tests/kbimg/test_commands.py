"""upgrade-img, vm-img from that upgrade image (``[from_dockerimg]``), pxe-img, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from kubeos.kbimg import build, config, oci
from kubeos.kbimg.cli import main
from tests.kbimg import support

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds root-owned trees (needs root)"),
    pytest.mark.skipif(not support.have("sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy",
                                        "grub-mkimage", "qemu-img", "debugfs", "cpio"),
                       reason="kbimg tools missing (hack/setup.sh)"),
]


def test_upgrade_img_then_vm_img_from_it(tmp_path: Path) -> None:
    root = support.make_tiny_root(tmp_path / "root")
    doc = support.tiny_doc(root)
    doc["from_rootfs"]["version"] = "3.1.4"
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "u.toml", doc)), "upgrade-img", out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "kubeos.tar", "kubeos.tar.sha256", "upgrade-img.tar"]
    os_tar = tmp_path / "os.tar"
    oci.extract_file(out / "upgrade-img.tar", "os.tar", os_tar)
    assert os_tar.read_bytes() == (out / "kubeos.tar").read_bytes()
    with tarfile.open(os_tar) as t:
        names = t.getnames()
        assert "./usr/lib/os-release" in names and "./usr/bin/os-agent" in names
        text = t.extractfile("./usr/lib/os-release").read().decode()  # type: ignore[union-attr]
        assert 'PRETTY_NAME="KubeOS 3.1.4"' in text

    doc2 = {"from_dockerimg": {"upgrade_img": str(out / "upgrade-img.tar"),
                               "legacy_bios": False},
            "disk_partition": {"root": 128, "img_size": 3}}
    out2 = tmp_path / "out2"
    build.build(config.load(support.write_toml(tmp_path / "v.toml", doc2)), "vm-img", out2)
    table = support.partition_table(out2 / "system.img")
    root_a = support.cut_partition(out2 / "system.img", table["partitions"][1], tmp_path / "a")
    assert 'PRETTY_NAME="KubeOS 3.1.4"' in support.debugfs_cat(root_a, "/usr/lib/os-release")
    subprocess.run(["fsck.ext4", "-fn", str(root_a)], check=True, capture_output=True)


def test_from_rootfs_tarball(tmp_path: Path) -> None:
    root = support.make_tiny_root(tmp_path / "root")
    tarball = tmp_path / "root.tar.gz"
    subprocess.run(["tar", "--numeric-owner", "-czf", str(tarball), "-C", str(root), "."],
                   check=True)
    doc = support.tiny_doc(tarball)
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "t.toml", doc)), "upgrade-img", out)
    with tarfile.open(out / "kubeos.tar") as t:
        names = t.getnames()
        assert "./var/lib/demo/state" in names and "./boot/vmlinuz" in names
        assert t.getmember("./etc/shadow").uid == 0


def test_pxe_img(tmp_path: Path) -> None:
    root = support.make_tiny_root(tmp_path / "root")
    doc = support.tiny_doc(root, pxe_config={
        "rootfs_name": "kubeos.tar", "disk": "/dev/nvme0n1", "server_ip": "192.168.1.50",
        "route_ip": "192.168.1.1", "dhcp": True})
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "p.toml", doc)), "pxe-img", out)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert names == ["initramfs.img", "kubeos-install.conf", "kubeos.tar", "kubeos.tar.sha256",
                     "vmlinuz"]
    conf = (out / "kubeos-install.conf").read_text()
    digest = (out / "kubeos.tar.sha256").read_text().split()[0]
    assert f"rootfs_sha256={digest}\n" in conf
    assert "rootfs_url=https://192.168.1.50/kubeos.tar\n" in conf
    # the original initramfs followed by a cpio archive with the installer and its config
    initramfs = (out / "initramfs.img").read_bytes()
    original = (root / "boot/initramfs-6.1.0-tiny.img").read_bytes()
    assert initramfs.startswith(original)
    listing = subprocess.run(["cpio", "-it"], input=initramfs[len(original):],
                             capture_output=True, check=True).stdout.decode().split()
    assert "etc/kubeos-install.conf" in listing
    assert "usr/lib/dracut/hooks/mount/00-kubeos-install.sh" in listing
    with tarfile.open(out / "kubeos.tar") as t:
        assert "./boot/efi/EFI/BOOT/BOOTX64.EFI" in t.getnames()


def test_cli_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    toml = support.write_toml(tmp_path / "k.toml", {"users": [{"name": "$(id)", "passwd": "x"}]})
    result = CliRunner().invoke(main, ["create", "-f", str(toml), "vm-img",
                                       "--output", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "users[0].name: '$(id)' is not a valid user name" in result.output
    assert "[red]" not in result.output and "[/]" not in result.output
    assert result.output.startswith("error: ")
    result = CliRunner().invoke(main, ["create", "-f", str(tmp_path / "k.toml"), "bogus"])
    assert result.exit_code == 2


def test_cli_builds_vm_img(tmp_path: Path) -> None:
    root = support.make_tiny_root(tmp_path / "root")
    toml = support.write_toml(tmp_path / "k.toml", support.tiny_doc(root))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "kubeos.kbimg.cli", "create", "-f", str(toml),
                           "vm-img", "--output", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(out / n) for n in build.VM_ARTIFACTS]
    assert "done vm-img" in proc.stderr


def test_absolute_symlinks_in_the_image_never_reach_the_host(tmp_path: Path) -> None:
    """Every file kbimg writes into the root is resolved like in a chroot: hostile or just
    absolute symlinks in the image cannot make it write on the build host."""
    host = tmp_path / "host"
    host.mkdir()
    victims = {name: host / name for name in ("resolv", "osrel", "unit", "grubcfg", "skel")}
    for victim in victims.values():
        victim.write_text("host content\n")
    root = support.make_tiny_root(tmp_path / "root")
    (root / "etc/resolv.conf").symlink_to(victims["resolv"])
    (root / "usr/lib/os-release").symlink_to(victims["osrel"])
    (root / "usr/lib/systemd/system/etc.mount").symlink_to(victims["unit"])
    (root / "boot/efi/EFI/openEuler").mkdir(parents=True)
    (root / "boot/efi/EFI/openEuler/grub.cfg").symlink_to(victims["grubcfg"])
    (root / "home/bob").mkdir(parents=True)
    (root / "home/bob/.profile").symlink_to(victims["skel"])
    src = tmp_path / "resolv.conf"
    src.write_text("nameserver 192.0.2.1\n")
    doc = support.tiny_doc(root, copy_files=[{"src": str(src), "dst": "/etc/resolv.conf"}],
                           users=[{"name": "bob", "passwd": "pw"}])
    out = tmp_path / "out"
    build.build(config.load(support.write_toml(tmp_path / "k.toml", doc)), "vm-img", out)
    for victim in victims.values():
        assert victim.read_text() == "host content\n", victim
    table = support.partition_table(out / "system.img")
    root_a = support.cut_partition(out / "system.img", table["partitions"][1], tmp_path / "a")
    assert support.debugfs_cat(root_a, "/etc/resolv.conf") == "nameserver 192.0.2.1\n"
    assert "KubeOS 1.0.0" in support.debugfs_cat(root_a, "/usr/lib/os-release")
