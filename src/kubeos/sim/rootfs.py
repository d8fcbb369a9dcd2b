"""Tiny KubeOS root trees and rootfs tars for simulated nodes and the images they upgrade to.

Just what the agent's bootability check looks at (``docs/boot-contract.md``): a kernel, an
initrd and ``/usr/lib/os-release`` whose ``PRETTY_NAME`` names the version. Kilobytes, so 200
nodes cost nothing on disk and the demo's image downloads in milliseconds.
"""

from __future__ import annotations

import tarfile
from pathlib import Path


def pretty_name(version: str) -> str:
    """``KubeOS <version>``: what os-release says and the kubelet reports as ``osImage``."""
    return f"KubeOS {version}"


def make_root_tree(path: Path, version: str) -> Path:
    """Write a minimal bootable root for *version* into *path* (created if needed)."""
    (path / "boot").mkdir(parents=True, exist_ok=True)
    (path / "boot" / "vmlinuz").write_bytes(b"kernel " + version.encode())
    (path / "boot" / "initramfs.img").write_bytes(b"initrd " + version.encode())
    (path / "usr" / "lib").mkdir(parents=True, exist_ok=True)
    (path / "usr" / "lib" / "os-release").write_text(
        f'NAME="KubeOS"\nID=kubeos\nPRETTY_NAME="{pretty_name(version)}"\n'
        f"VERSION_ID={version}\n"
    )
    (path / "etc").mkdir(exist_ok=True)
    (path / "etc" / "hostname").write_text("kubeos\n")
    return path


def make_rootfs_tar(tree: Path, out: Path) -> Path:
    """A rootfs tar of *tree* (members relative to ``.``), as kbimg's ``kubeos.tar`` is."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(tree, arcname=".")
    return out
