"""pxe-img: kernel, initramfs with the installer appended, root tarball and its checksum.

The reference generates a bash installer with the settings pasted in and fetches the root
over plain http without verification. Here the installer (pxe_install.sh) is a fixed file,
the settings are a key=value data file read without evaluation, the tarball is fetched over
https only, and its sha256 is checked before the disk is touched.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from kubeos.kbimg import cpio, disk
from kubeos.kbimg.checksums import sha256_file, write_sha256
from kubeos.kbimg.config import Config
from kubeos.kbimg.content import ESP_IN_ROOT
from kubeos.kbimg.errors import BuildError
from kubeos.kbimg.inroot import makedirs, resolve

INSTALLER = Path(__file__).with_name("pxe_install.sh")
HOOK_PATH = "usr/lib/dracut/hooks/mount/00-kubeos-install.sh"
CONF_PATH = "etc/kubeos-install.conf"


def install_conf(cfg: Config, sha256: str) -> str:
    """The installer's settings; every value was validated by config.py (no newlines)."""
    pxe = cfg.pxe_config
    assert pxe is not None
    values = {
        "disk": pxe.disk,
        "rootfs_url": f"https://{pxe.server_ip}/{pxe.rootfs_name}",
        "rootfs_sha256": sha256,
        "route_ip": pxe.route_ip,
        "dhcp": "true" if pxe.dhcp else "false",
        "local_ip": pxe.local_ip or "",
        "netmask": pxe.netmask or "",
        "net_name": pxe.net_name or "",
        "root_mib": str(cfg.disk_partition.root_mib),
        "persist_mkdir": " ".join(cfg.persist_mkdir),
    }
    return "".join(f"{k}={v}\n" for k, v in values.items())


def build_pxe(root: Path, cfg: Config, work: Path, tar_root: Callable[[Path, Path], None],
              step: Callable[[str], None]) -> list[str]:
    if any(" " in d for d in cfg.persist_mkdir):
        raise BuildError("persist_mkdir.name: names with spaces are not supported for pxe-img")
    step("adding GRUB to the root's /boot/efi")
    disk.add_grub_efi(makedirs(root, ESP_IN_ROOT), work)
    boot = resolve(root, "/boot")
    shutil.copyfile(boot / "vmlinuz", work / "vmlinuz")
    step("writing the root tarball")
    tarball = work / "kubeos.tar"
    tar_root(root, tarball)
    write_sha256(tarball)
    conf = install_conf(cfg, sha256_file(tarball))
    (work / "kubeos-install.conf").write_text(conf)
    step("appending the installer to the initramfs")
    overlay = cpio.newc([
        cpio.Entry("etc", mode=0o040755),
        cpio.Entry(CONF_PATH, conf.encode(), 0o100644),
        cpio.Entry("usr", mode=0o040755),
        cpio.Entry("usr/lib", mode=0o040755),
        cpio.Entry("usr/lib/dracut", mode=0o040755),
        cpio.Entry("usr/lib/dracut/hooks", mode=0o040755),
        cpio.Entry("usr/lib/dracut/hooks/mount", mode=0o040755),
        cpio.Entry(HOOK_PATH, INSTALLER.read_bytes(), 0o100755),
    ])
    with (work / "initramfs.img").open("wb") as out:
        with (boot / "initramfs.img").open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        out.write(overlay)
    return ["kubeos.tar", "kubeos.tar.sha256", "vmlinuz", "initramfs.img", "kubeos-install.conf"]
