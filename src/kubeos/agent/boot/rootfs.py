"""Is a root filesystem bootable, and which KubeOS version does it hold?

Checked before any switch of the boot entry: a slot without a kernel, an initrd or an
os-release is refused, so a half-written or foreign partition is never chosen. The version is
the reference's: ``PRETTY_NAME="KubeOS <version>"`` in ``/usr/lib/os-release`` (kbimg removes
``/etc/os-release``) or ``/etc/os-release``.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from kubeos.agent.errors import SlotNotBootableError

OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
KERNELS = ("boot/vmlinuz", "boot/vmlinuz-*")
INITRDS = ("boot/initramfs.img", "boot/initrd.img", "boot/initramfs-*.img", "boot/initrd.img-*")


@dataclass(frozen=True)
class RootInfo:
    version: str
    kernel: str
    initrd: str


def parse_os_release(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            continue
        values[key.strip()] = parts[0] if parts else ""
    return values


def version_of(os_release: dict[str, str]) -> str | None:
    pretty = os_release.get("PRETTY_NAME", "")
    if pretty.startswith("KubeOS "):
        return pretty[len("KubeOS ") :].strip() or None
    return os_release.get("VERSION_ID") or None


def in_root(root: Path, rel: str) -> Path:
    """``root/rel`` with a final symlink resolved inside ``root`` (as if chrooted): an absolute
    link such as ``/etc/os-release -> /usr/lib/os-release`` must not read the host's file."""
    path = root / rel
    for _ in range(16):
        if not path.is_symlink():
            return path
        link = path.readlink()
        base = root if link.is_absolute() else path.parent
        path = Path(os.path.normpath(base / str(link).lstrip("/")))
        if not path.is_relative_to(root):
            return root / "nonexistent"
    return path


def _first(root: Path, patterns: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        for match in sorted(root.glob(pattern)):
            rel = str(match.relative_to(root))
            if in_root(root, rel).is_file():
                return rel
    return None


def read_version(root: Path) -> str | None:
    for rel in OS_RELEASE:
        try:
            text = in_root(root, rel).read_text()
        except OSError:
            continue
        return version_of(parse_os_release(text))
    return None


def inspect_root(root: Path) -> RootInfo:
    """Check that ``root`` (a mounted slot) can boot; raise naming everything that is missing."""
    kernel = _first(root, KERNELS)
    initrd = _first(root, INITRDS)
    version = read_version(root)
    missing = []
    if kernel is None:
        missing.append("kernel (/boot/vmlinuz)")
    if initrd is None:
        missing.append("initrd (/boot/initramfs.img)")
    if version is None:
        missing.append('os-release with PRETTY_NAME="KubeOS <version>"')
    if kernel is None or initrd is None or version is None:
        raise SlotNotBootableError("not a bootable KubeOS root: missing " + ", ".join(missing))
    return RootInfo(version=version, kernel=kernel, initrd=initrd)
