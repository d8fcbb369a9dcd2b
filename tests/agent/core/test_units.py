"""Pure pieces of the agent: grubenv, mountinfo, partition discovery, cert names, tar safety."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from kubeos.agent.boot.grubenv import GrubEnv, edit_grubenv, read_grubenv
from kubeos.agent.boot.mountinfo import parse_mountinfo, root_mount
from kubeos.agent.boot.partitions import BlockDevices
from kubeos.agent.boot.rootfs import inspect_root, parse_os_release, version_of
from kubeos.agent.errors import (
    BootError,
    CertificateError,
    InvalidRequestError,
    PayloadError,
    SlotNotBootableError,
)
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.rpc.framing import FrameScanner
from kubeos.agent.upgrade.certs import resolve_cert
from kubeos.agent.upgrade.disk import FS_IMAGE, ROOTFS_TAR, detect_payload
from kubeos.agent.upgrade.rootfs_tar import extract_rootfs

from .support import make_root_tree

grub_editenv = pytest.mark.skipif(shutil.which("grub-editenv") is None, reason="grub-common")


# --- grubenv ---------------------------------------------------------------------------------


@grub_editenv
def test_grubenv_is_byte_identical_to_grub_editenv(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    subprocess.run(["grub-editenv", str(ref), "create"], check=True)
    ours = GrubEnv()
    assert ours.to_bytes() == ref.read_bytes()
    ops = [
        ("set", "saved_entry", "A"),
        ("set", "next_entry", "B"),
        ("set", "saved_entry", "B"),
        ("set", "odd", "back\\slash\nnewline"),
        ("unset", "next_entry", ""),
        ("set", "boot_trial", "B"),
        ("set", "kubeos_rollback", ""),
        ("unset", "missing", ""),
    ]
    for op, key, value in ops:
        if op == "set":
            subprocess.run(["grub-editenv", str(ref), "set", f"{key}={value}"], check=True)
            ours.set(key, value)
        else:
            subprocess.run(["grub-editenv", str(ref), "unset", key], check=True)
            ours.unset(key)
        assert ours.to_bytes() == ref.read_bytes(), (op, key)
    assert GrubEnv(ref.read_bytes()).items() == ours.items()


@grub_editenv
def test_grubenv_written_by_agent_reads_back_with_grub_editenv(tmp_path: Path) -> None:
    path = tmp_path / "EFI" / "openEuler" / "grubenv"
    edit_grubenv(path, {"saved_entry": "A", "next_entry": "B", "boot_trial": None})
    edit_grubenv(path, {"boot_trial": "B", "next_entry": None})
    listed = subprocess.run(
        ["grub-editenv", str(path), "list"], capture_output=True, text=True, check=True
    ).stdout
    assert listed == "saved_entry=A\nboot_trial=B\n"
    assert len(path.read_bytes()) == 1024
    assert read_grubenv(path).as_dict() == {"saved_entry": "A", "boot_trial": "B"}


def test_grubenv_rejects_garbage_and_overflow(tmp_path: Path) -> None:
    with pytest.raises(BootError):
        GrubEnv(b"not a grubenv")
    env = GrubEnv()
    with pytest.raises(BootError, match="no space"):
        env.set("big", "x" * 2000)
    assert read_grubenv(tmp_path / "missing").items() == []


# --- mountinfo and partitions ----------------------------------------------------------------


def test_mountinfo_root_is_last_mount_on_slash(tmp_path: Path) -> None:
    text = (
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "36 1 259:2 / / ro,relatime shared:1 - ext4 /dev/nvme2n1p2 ro\n"
        "37 36 0:5 / /my\\040dir rw - tmpfs tmpfs rw\n"
        "garbage line\n"
    )
    (tmp_path / "mi").write_text(text)
    root = root_mount(tmp_path / "mi")
    assert (root.devno, root.source) == ("259:2", "/dev/nvme2n1p2")
    assert parse_mountinfo(text)[2].mount_point == "/my dir"


def _fake_block(sysfs: Path, devfs: Path, disk: str, parts: list[tuple[str, int, str]]) -> None:
    """sysfs for ``disk`` with partitions (name, number, PARTNAME), as the kernel lays it out."""
    ddir = sysfs / "devices" / "pci0000:00" / "nvme" / disk
    (ddir / "queue").mkdir(parents=True)
    (ddir / "queue" / "logical_block_size").write_text("512\n")
    (sysfs / "dev" / "block").mkdir(parents=True, exist_ok=True)
    devfs.mkdir(exist_ok=True)
    (devfs / disk).write_bytes(b"\0" * 4096)  # no GPT readable: labels come from uevent
    for name, number, label in parts:
        pdir = ddir / name
        pdir.mkdir()
        (pdir / "partition").write_text(f"{number}\n")
        (pdir / "start").write_text(f"{2048 * number}\n")
        (pdir / "size").write_text("2048\n")
        (pdir / "dev").write_text(f"259:{number}\n")
        (pdir / "uevent").write_text(
            f"MAJOR=259\nMINOR={number}\nDEVNAME={name}\nPARTNAME={label}\n"
        )
        (sysfs / "dev" / "block" / f"259:{number}").symlink_to(pdir)
        (devfs / name).write_bytes(b"\0" * 4096)


@pytest.mark.parametrize("disk,sep", [("nvme2n1", "p"), ("sda", ""), ("mmcblk0", "p")])
def test_slots_found_by_label_whatever_the_device_name(tmp_path: Path, disk: str, sep: str) -> None:
    """The reference's digit guessing breaks on /dev/nvme2n1p2; labels do not care."""
    sysfs, devfs = tmp_path / "sys", tmp_path / "dev"
    _fake_block(
        sysfs,
        devfs,
        disk,
        [
            (f"{disk}{sep}1", 1, "BOOT"),
            (f"{disk}{sep}2", 2, "ROOT-A"),
            (f"{disk}{sep}3", 3, "ROOT-B"),
            (f"{disk}{sep}12", 12, "PERSIST"),
        ],
    )
    layout = BlockDevices(sysfs, devfs).layout("259:3")
    assert layout.booted == "B" and layout.inactive == "A"
    assert layout.slots["A"].device == devfs / f"{disk}{sep}2"
    assert layout.slots["B"].number == 3


def test_root_outside_the_slots_is_refused(tmp_path: Path) -> None:
    sysfs, devfs = tmp_path / "sys", tmp_path / "dev"
    _fake_block(
        sysfs, devfs, "vda", [("vda2", 2, "ROOT-A"), ("vda3", 3, "ROOT-B"), ("vda4", 4, "PERSIST")]
    )
    with pytest.raises(BootError, match="neither ROOT-A nor ROOT-B"):
        BlockDevices(sysfs, devfs).layout("259:4")
    with pytest.raises(BootError, match="not found"):
        BlockDevices(sysfs, devfs).layout("8:99")


# --- rootfs checks ---------------------------------------------------------------------------


def test_os_release_version() -> None:
    assert version_of(parse_os_release('PRETTY_NAME="KubeOS 1.2.3"\n')) == "1.2.3"
    assert version_of(parse_os_release("PRETTY_NAME='Debian'\nVERSION_ID=12\n")) == "12"


def test_bootable_root_needs_kernel_initrd_and_os_release(tmp_path: Path) -> None:
    root = make_root_tree(tmp_path / "r", "2.0.0")
    assert inspect_root(root).version == "2.0.0"
    (root / "boot" / "initramfs.img").unlink()
    with pytest.raises(SlotNotBootableError, match="initrd"):
        inspect_root(root)


# --- certificates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../etc/shadow", "/etc/shadow", "..", ".hidden", "sub/ca.crt", "", "  "]
)
def test_cert_names_cannot_escape(tmp_path: Path, name: str) -> None:
    certs = tmp_path / "etc" / "KubeOS" / "certs"
    certs.mkdir(parents=True)
    (tmp_path / "etc" / "shadow").write_text("secret")
    with pytest.raises(CertificateError):
        resolve_cert(certs, name, "certs.ca_cert")


def test_cert_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (tmp_path / "shadow").write_text("secret")
    (certs / "ca.crt").symlink_to(tmp_path / "shadow")
    with pytest.raises(CertificateError):
        resolve_cert(certs, "ca.crt", "certs.ca_cert")
    (certs / "ok.crt").write_text("x")
    assert resolve_cert(certs, "ok.crt", "certs.ca_cert") == (certs / "ok.crt").resolve()


# --- tar safety and payload detection --------------------------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


@pytest.mark.parametrize(
    "members",
    [
        [(_info("../outside"), b"x")],
        [(_info("etc", tarfile.SYMTYPE, str(Path("/tmp"))), b""), (_info("etc/escaped"), b"x")],
        [(_info("link", tarfile.LNKTYPE, "../../outside"), b"")],
    ],
    ids=["dotdot", "through-symlink", "hardlink-out"],
)
def test_tar_members_cannot_escape_the_slot(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]
) -> None:
    dest = tmp_path / "slot"
    dest.mkdir()
    with pytest.raises(PayloadError):
        extract_rootfs(_tar(members), dest)
    assert not (tmp_path / "outside").exists()
    assert not Path("/tmp/escaped").exists()


def test_tar_keeps_rootfs_semantics(tmp_path: Path) -> None:
    tree = make_root_tree(tmp_path / "tree", "3.0.0")
    os.symlink("/usr/lib/os-release", tree / "etc" / "os-release")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(tree, arcname=".")
    buf.seek(0)
    dest = tmp_path / "slot"
    dest.mkdir()
    extract_rootfs(buf, dest)
    assert os.readlink(dest / "etc" / "os-release") == "/usr/lib/os-release"  # absolute kept
    assert (dest / "usr" / "bin" / "tool").stat().st_mode & 0o4000  # setuid kept
    assert inspect_root(dest).version == "3.0.0"


def test_payload_detection() -> None:
    tar = _tar([(_info("a"), b"x")]).getvalue()
    assert detect_payload(tar[:4096]) == ROOTFS_TAR
    ext = bytearray(4096)
    struct.pack_into("<H", ext, 1024 + 0x38, 0xEF53)
    assert detect_payload(bytes(ext)) == FS_IMAGE
    with pytest.raises(PayloadError):
        detect_payload(b"<html>not found</html>")


# --- framing and messages --------------------------------------------------------------------


def test_frame_scanner_splits_on_balanced_braces() -> None:
    s = FrameScanner()
    assert s.feed(b' {"a":"}\\"{",') == []
    assert s.feed(b'"b":[1,{}]}{"c"') == [b'{"a":"}\\"{","b":[1,{}]}']
    assert s.feed(b":1}\n") == [b'{"c":1}']


def test_upgrade_request_errors_name_the_field() -> None:
    with pytest.raises(InvalidRequestError, match=r"UpgradeRequest\.flag_safe"):
        UpgradeRequest.from_json({"version": "1", "image_type": "disk", "flag_safe": "yes"})
    with pytest.raises(InvalidRequestError, match=r"UpgradeRequest\.certs\.ca_cert"):
        UpgradeRequest.from_json({"image_type": "disk", "certs": {"ca_cert": 1}})
    req = UpgradeRequest.from_json(
        {
            "version": "v2",
            "check_sum": "ab",
            "image_type": "disk",
            "container_image": "",
            "image_url": "https://x/y",
            "flag_safe": False,
            "mtls": True,
            "certs": {"ca_cert": "ca.crt", "client_cert": "c.crt", "client_key": "c.key"},
        }
    )
    assert UpgradeRequest.from_json(req.to_json()) == req
