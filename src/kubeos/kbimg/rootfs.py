"""Producing the image's root tree from one of the four sources of kbimg.toml.

Each source writes into an empty directory inside the build's private work dir. Package
managers get their arguments as argv lists (package names were validated), and the steps that
need /proc and /dev in the target run in a throw-away mount namespace (see sandbox.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from kubeos.kbimg import oci
from kubeos.kbimg.commands import require, run
from kubeos.kbimg.config import FromDebian, FromDockerImg, FromRepo, FromRootfs, Source
from kubeos.kbimg.errors import BuildError
from kubeos.kbimg.sandbox import sandboxed_argv

# Reference §7.3: what x86_64 UEFI images need beyond the user's rpmlist.
RPM_EXTRAS_X86_UEFI = ("grub2-efi", "grub2-tools", "grub2-efi-x64-modules", "grub2-pc-modules")
# A bootable Debian root: systemd as init, a kernel with an initramfs, the agent's Python.
DEBIAN_BASE = ("systemd-sysv", "python3", "udev", "e2fsprogs", "dosfstools", "util-linux",
               "initramfs-tools")
# The cloud flavour (virtio, ext4, vfat; a quarter of the size) unless the packages name one.
DEBIAN_KERNEL = "linux-image-cloud-amd64"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def dnf_argv(src: FromRepo, root: Path, repo_dir: Path, tool: str) -> list[str]:
    """``dnf -y --installroot ROOT install ...`` with only the given repo file enabled."""
    return [tool, "-y", f"--installroot={root}", f"--setopt=reposdir={repo_dir}",
            "--setopt=install_weak_deps=False", "--nogpgcheck", "install", "--",
            *src.rpmlist, *RPM_EXTRAS_X86_UEFI]


def mmdebstrap_argv(src: FromDebian, root: Path) -> list[str]:
    """``mmdebstrap --variant=minbase --include=... SUITE ROOT MIRROR`` (names validated)."""
    kernel = [] if any(p.startswith("linux-image-") for p in src.packages) else [DEBIAN_KERNEL]
    include = ",".join(dict.fromkeys([*DEBIAN_BASE, *kernel, *src.packages]))
    return ["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root",
            f"--include={include}", "--", src.suite, str(root), src.mirror or DEBIAN_MIRROR]


def _from_repo(src: FromRepo, root: Path, work: Path) -> None:
    tool = shutil.which("dnf") or shutil.which("yum")
    if tool is None:
        raise BuildError("from_repo needs dnf or yum on the build host")
    repo_dir = work / "yum.repos.d"
    repo_dir.mkdir()
    shutil.copyfile(src.repo_path, repo_dir / "kbimg.repo")
    for sub in ("etc/yum.repos.d", "persist", "proc", "dev/pts", "sys"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    run(["rpm", "--root", root, "--initdb"])
    shutil.copyfile(src.repo_path, root / "etc/yum.repos.d/iso.repo")
    run(sandboxed_argv(root, dnf_argv(src, root, repo_dir, tool), chroot=False))
    run(sandboxed_argv(root, [tool, f"--installroot={root}", "clean", "all"], chroot=False))


def _from_debian(src: FromDebian, root: Path) -> None:
    require("mmdebstrap")
    # mmdebstrap --mode=root mounts /proc etc. in the target itself: the private namespace
    # makes sure none of those mounts outlives a killed build.
    run(["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
         *mmdebstrap_argv(src, root)])


def extract_tar(tarball: Path, root: Path) -> None:
    """Unpack a root tarball keeping numeric owners, modes and xattrs (GNU tar refuses ``..``)."""
    run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tarball,
         "-C", root])


def _from_rootfs(src: FromRootfs, root: Path) -> None:
    if src.path.is_dir():
        run(["cp", "-a", "--reflink=auto", "--", f"{src.path}/.", root])
    else:
        extract_tar(src.path, root)


def _from_dockerimg(src: FromDockerImg, root: Path, work: Path) -> None:
    archive = Path(src.upgrade_img)
    if not archive.is_file():
        archive = work / "upgrade-img.tar"
        require("docker")
        run(["docker", "save", "-o", archive, "--", src.upgrade_img])
    os_tar = work / "os.tar"
    oci.extract_file(archive, "os.tar", os_tar)
    extract_tar(os_tar, root)
    os_tar.unlink()


def build_root(source: Source, root: Path, work: Path,
               step: Callable[[str], None] = lambda _: None) -> None:
    """Fill the empty directory ``root`` from ``source``."""
    root.mkdir(mode=0o755)
    if isinstance(source, FromRepo):
        step("installing packages (dnf --installroot)")
        _from_repo(source, root, work)
    elif isinstance(source, FromDebian):
        step(f"bootstrapping Debian {source.suite} (mmdebstrap)")
        _from_debian(source, root)
    elif isinstance(source, FromRootfs):
        step(f"copying root from {source.path}")
        _from_rootfs(source, root)
    else:
        step(f"reading os.tar from {source.upgrade_img}")
        _from_dockerimg(source, root, work)
