"""vm-img from a tiny ``from_rootfs`` tree, checked without booting or mounting: partition
table, labels, PARTUUIDs in grub.cfg, ESP content, os-release, units, users and fsck."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubeos.kbimg import build, config, content, grub
from tests.kbimg import support

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="builds root-owned trees (needs root)"),
    pytest.mark.skipif(not support.have("sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy",
                                        "grub-mkimage", "qemu-img", "debugfs"),
                       reason="kbimg tools missing (hack/setup.sh)"),
]


@dataclass
class Built:
    out: Path
    table: dict[str, Any]
    parts: dict[str, dict[str, Any]]
    esp: Path
    root_a: Path
    root_b: Path
    persist: Path
    extra_src: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("vmimg")
    root = support.make_tiny_root(base / "root")
    extra = base / "extra.conf"
    extra.write_text("copied literally\n")
    doc = support.tiny_doc(
        root,
        users=[{"name": "alice", "passwd": "s3cret pass", "groups": ["wheel"]}],
        copy_files=[{"src": str(extra), "dst": "/opt/extra/extra.conf",
                     "create_dir": "/opt/extra"}],
        grub={"passwd": "grub-secret"},
        systemd_service={"name": ["demo.service"]},
        persist_mkdir={"name": ["data", "k8s/etcd"]},
    )
    toml = support.write_toml(base / "kbimg.toml", doc)
    out = base / "out"
    build.build(config.load(toml), "vm-img", out)
    image = out / "system.img"
    table = support.partition_table(image)
    parts = {p["name"]: p for p in table["partitions"]}
    cut = {name: support.cut_partition(image, parts[name], base / f"{name}.part")
           for name in ("BOOT", "ROOT-A", "ROOT-B", "PERSIST")}
    return Built(out, table, parts, cut["BOOT"], cut["ROOT-A"], cut["ROOT-B"], cut["PERSIST"],
                 extra)


def test_artifacts_and_no_leftovers(built: Built) -> None:
    names = sorted(p.name for p in built.out.iterdir())
    assert names == [".kbimg.lock", "kubeos.tar", "kubeos.tar.sha256", "system.img",
                     "system.qcow2"]
    digest = hashlib.sha256((built.out / "kubeos.tar").read_bytes()).hexdigest()
    assert (built.out / "kubeos.tar.sha256").read_text() == f"{digest}  kubeos.tar\n"
    info = subprocess.run(["qemu-img", "info", "--output=json", str(built.out / "system.qcow2")],
                          check=True, capture_output=True, text=True).stdout
    assert '"format": "qcow2"' in info and '"virtual-size": 3221225472' in info


def test_partition_table(built: Built) -> None:
    t = built.table
    assert t["label"] == "gpt"
    assert [p["name"] for p in t["partitions"]] == ["BOOT", "ROOT-A", "ROOT-B", "PERSIST"]
    sizes_mib = [p["size"] * 512 // support.MIB for p in t["partitions"]]
    starts_mib = [p["start"] * 512 // support.MIB for p in t["partitions"]]
    assert starts_mib[:3] == [1, 60, 60 + 128]
    assert sizes_mib[:3] == [59, 128, 128]
    assert starts_mib[3] == 60 + 2 * 128 and sizes_mib[3] >= 2100
    assert t["partitions"][0]["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert os.path.getsize(built.out / "system.img") == 3 << 30


def test_filesystem_labels(built: Built) -> None:
    image = built.out / "system.img"
    expect = {"BOOT": "vfat", "ROOT-A": "ext4", "ROOT-B": "ext4", "PERSIST": "ext4"}
    for name, fstype in expect.items():
        info = support.blkid(image, built.parts[name]["start"] * 512)
        assert info["TYPE"] == fstype
        assert info["LABEL"] == name


def test_fsck_every_filesystem_clean(built: Built) -> None:
    subprocess.run(["fsck.vfat", "-n", str(built.esp)], check=True, capture_output=True)
    for part in (built.root_a, built.root_b, built.persist):
        subprocess.run(["fsck.ext4", "-fn", str(part)], check=True, capture_output=True)


def test_grub_cfg_partuuids_match_table(built: Built) -> None:
    cfg = support.mtype(built.esp, "/EFI/openEuler/grub.cfg")
    linux = re.findall(r"^\s*linux /boot/vmlinuz root=PARTUUID=(\S+)", cfg, re.M)
    assert linux == [built.parts["ROOT-A"]["uuid"].lower(), built.parts["ROOT-B"]["uuid"].lower()]
    assert "vda" not in cfg and "sda" not in cfg
    assert re.search(r"menuentry 'KubeOS-A' --id A ", cfg)
    assert cfg.index("--id A") < cfg.index("--id B")
    for needed in ("load_env", "next_entry", "boot_trial", "save_env", "set fallback=0",
                   "set fallback=1"):
        assert needed in cfg


def test_grub_cfg_passes_grub_script_check(built: Built, tmp_path: Path) -> None:
    if not support.have("grub-script-check"):
        pytest.skip("grub-script-check missing")
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(support.mtype(built.esp, "/EFI/openEuler/grub.cfg"))
    subprocess.run(["grub-script-check", str(cfg)], check=True)


def test_esp_content(built: Built) -> None:
    assert set(support.mdir_names(built.esp, "/EFI")) >= {"BOOT", "openEuler"}
    assert "BOOTX64.EFI" in support.mdir_names(built.esp, "/EFI/BOOT")
    names = support.mdir_names(built.esp, "/EFI/openEuler")
    assert {"grub.cfg", "grubenv", "grubx64.efi", "user.cfg", "x86_64-efi"} <= set(names)
    env = subprocess.run(["mtype", "-i", str(built.esp), "::/EFI/openEuler/grubenv"],
                         check=True, capture_output=True,
                         env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    assert len(env) == 1024 and env.startswith(b"# GRUB Environment Block\n")
    efi = subprocess.run(["mtype", "-i", str(built.esp), "::/EFI/BOOT/BOOTX64.EFI"],
                         check=True, capture_output=True,
                         env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    assert efi[:2] == b"MZ"
    assert grub.EMBEDDED_CFG.encode().splitlines()[0] in efi


def test_grub_password_is_hashed(built: Built) -> None:
    user_cfg = support.mtype(built.esp, "/EFI/openEuler/user.cfg")
    hashed = r"grub\.pbkdf2\.sha512\.10000\.[0-9A-F]{128}\.[0-9A-F]{128}"
    assert re.fullmatch(f"GRUB2_PASSWORD={hashed}\n", user_cfg)
    for part in (built.esp, built.root_a, built.out / "kubeos.tar"):
        assert b"grub-secret" not in part.read_bytes()


def test_os_release_and_kernel(built: Built) -> None:
    text = support.debugfs_cat(built.root_a, "/usr/lib/os-release")
    assert 'PRETTY_NAME="KubeOS 1.0.0"' in text and "ID=kubeos" in text
    assert "os-release" not in support.debugfs_ls(built.root_a, "/etc")
    assert {"vmlinuz", "initramfs.img", "efi"} <= set(support.debugfs_ls(built.root_a, "/boot"))
    assert support.debugfs_ls(built.root_a, "/boot/efi") == []


def test_units_installed_and_enabled(built: Built) -> None:
    unit_dir = set(support.debugfs_ls(built.root_a, "/usr/lib/systemd/system"))
    assert {"persist.mount", "etc.mount", "var.mount", "opt-cni.mount", "boot-efi.mount",
            "os-agent.service"} <= unit_dir
    local_fs = set(support.debugfs_ls(built.root_a, "/etc/systemd/system/local-fs.target.wants"))
    assert {"etc.mount", "opt-cni.mount", "boot-efi.mount", "var.mount"} <= local_fs
    multi = set(support.debugfs_ls(built.root_a, "/etc/systemd/system/multi-user.target.wants"))
    assert {"os-agent.service", "demo.service"} <= multi
    agent_units = {p.name for p in content.AGENT_UNIT_SRC.glob("*.timer")}
    timers = set(support.debugfs_ls(built.root_a, "/etc/systemd/system/timers.target.wants")
                 ) if agent_units else set()
    assert agent_units <= timers
    assert "README.md" not in unit_dir
    etc_mount = support.debugfs_cat(built.root_a, "/usr/lib/systemd/system/etc.mount")
    assert "upperdir=/persist/etc,workdir=/persist/etcwork,lowerdir=/etc" in etc_mount
    launcher = support.debugfs_cat(built.root_a, "/usr/bin/os-agent")
    assert "kubeos.agent" in launcher
    assert "__init__.py" in support.debugfs_ls(built.root_a, "/usr/lib/kubeos/python/kubeos")


def test_users_hashed_never_plaintext(built: Built) -> None:
    shadow = support.debugfs_cat(built.root_a, "/etc/shadow")
    alice = next(line for line in shadow.splitlines() if line.startswith("alice:"))
    assert alice.split(":")[1].startswith("$6$")
    assert "s3cret" not in shadow
    passwd = support.debugfs_cat(built.root_a, "/etc/passwd")
    assert re.search(r"^alice:x:\d+:\d+::/home/alice:/bin/bash$", passwd, re.M)
    assert re.search(r"^wheel:x:10:alice$", support.debugfs_cat(built.root_a, "/etc/group"), re.M)
    assert ".profile" in support.debugfs_ls(built.root_a, "/home/alice")
    for blob in (built.root_a, built.out / "kubeos.tar", built.out / "system.img"):
        with blob.open("rb") as f:
            while chunk := f.read(16 << 20):
                assert b"s3cret pass" not in chunk


def test_copy_files_and_var_tmpfiles(built: Built) -> None:
    assert support.debugfs_cat(built.root_a, "/opt/extra/extra.conf") == "copied literally\n"
    conf = support.debugfs_cat(built.root_a, "/usr/lib/tmpfiles.d/kubeos-var.conf")
    assert "d /var/lib/demo 0755 0 0 -" in conf
    assert "C /var/lib/demo/state - - - - /usr/share/factory/var/lib/demo/state" in conf
    assert support.debugfs_cat(built.root_a, "/usr/share/factory/var/lib/demo/state") == "hello\n"


def test_root_b_empty_and_persist_dirs(built: Built) -> None:
    assert support.debugfs_ls(built.root_b, "/") == ["lost+found"]
    top = set(support.debugfs_ls(built.persist, "/"))
    assert {"var", "etc", "etcwork", "opt", "optwork", "data", "k8s"} <= top
    assert "certs" in support.debugfs_ls(built.persist, "/etc/KubeOS")
    assert "etcd" in support.debugfs_ls(built.persist, "/k8s")


def test_second_build_keeps_earlier_artifacts_until_replaced(built: Built, tmp_path: Path) -> None:
    keep = built.out / "notes.txt"
    keep.write_text("mine")
    root = support.make_tiny_root(tmp_path / "root")
    toml = support.write_toml(tmp_path / "k.toml", support.tiny_doc(root))
    build.build(config.load(toml), "upgrade-img", built.out)
    assert keep.read_text() == "mine"
    assert (built.out / "system.img").exists() and (built.out / "upgrade-img.tar").exists()
    assert not list(built.out.glob(".kbimg-work-*"))
