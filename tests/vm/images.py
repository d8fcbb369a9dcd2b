"""Images for the vm tier, built with kbimg and cached between runs.

* ``base``: ``kbimg create vm-img`` from ``[from_debian]`` (bookworm, cloud kernel, python3,
  the agent). Only its ``kubeos.tar`` is used. It depends on the Debian mirror, not on this
  checkout, so it is cached by its kbimg.toml alone (about 40 s to build here).
* ``v1`` (vm-img, the disk the VMs boot) and ``v2`` (its ``kubeos.tar`` is the upgrade payload):
  ``[from_rootfs]`` of the base tar, so kbimg installs the *current* agent and the test-only
  guest plumbing (``tests/vm/guest``) again. Cached by a hash of ``src/kubeos``, the guest files
  and this module, so any change to the agent or kbimg rebuilds them.
* ``broken``: v2's tar with ``/usr/sbin/init`` replaced by a script that exits, so the kernel
  panics ("Attempted to kill init") and ``panic=`` reboots: GRUB must fall back to A by itself.

Run ``python -m tests.vm.images`` to (re)build the cache ahead of the tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomlkit

import kubeos
from kubeos.kbimg import build, config

HERE = Path(__file__).resolve().parent
GUEST = HERE / "guest"
CACHE = Path.home() / ".cache" / "kubeos" / "vm"
BASE_TOML = {
    "from_debian": {"suite": "bookworm", "packages": ["kmod"], "version": "0.0.0"},
    "disk_partition": {"root": 700, "img_size": 4},
}
# Left out of v1/v2 (not needed to boot or run the agent): every byte of the payload is pulled
# through Python (HTTP, sha256, tar extraction) in a TCG guest, about 1.5-2 MB/s here.
TRIM_PREFIXES = tuple(f"./usr/{p}/" for p in (
    "share/locale", "share/doc", "share/man", "share/info",
)) + tuple(f"/kernel/{p}/" for p in (
    "drivers/net", "drivers/infiniband", "drivers/comedi", "drivers/md", "drivers/target",
    "drivers/scsi", "drivers/media", "fs/xfs", "fs/btrfs", "fs/nfs", "fs/nfsd", "fs/smb",
    "fs/ceph", "net/netfilter", "net/sunrpc", "net/sched", "sound",
))
BROKEN_INIT = b"#!/bin/sh\necho 'KUBEOS-VMTEST: broken init of the test image exits'\nexit 1\n"
BROKEN_VERSION = "3.0.0"


@dataclass(frozen=True)
class Payload:
    """An upgrade payload (a rootfs tar) with what the agent's request needs."""

    path: Path
    sha256: str
    size: int
    version: str

    @property
    def url(self) -> str:
        """Where the guest's bridge serves it (guest loopback, from the payload disk)."""
        return f"http://127.0.0.1:8080/payload/{self.size}"


@dataclass(frozen=True)
class Images:
    disk: Path  # v1 system.img (raw GPT); VMs boot qcow2 overlays of it
    partuuids: dict[str, str]  # partition name -> PARTUUID (lower case)
    v2: Payload
    broken: Payload
    build_seconds: float


def _tree_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for top in paths:
        files = [top] if top.is_file() else sorted(
            p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for p in files:
            h.update(str(p.relative_to(top.parent)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _kbimg(doc: dict[str, object], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    toml = out.parent / f"{out.name}.toml"
    toml.write_text(tomlkit.dumps(doc))
    build.build(config.load(toml), "vm-img", out)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _payload(path: Path, version: str) -> Payload:
    size = path.stat().st_size
    # the guest reads the payload from a raw virtio disk: its size must be whole sectors
    assert size % 512 == 0, f"{path}: {size} bytes is not a multiple of 512"
    return Payload(path=path, sha256=_sha256(path), size=size, version=version)


def _rewrite_tar(src: Path, out: Path, replace: dict[str, bytes],
                 drop: Callable[[str], bool] = lambda _: False) -> None:
    """Copy a rootfs tar member by member (PAX keeps GNU tar's xattr records), replacing some
    members by regular files and leaving out others."""
    replace = dict(replace)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(src, "r:") as tin, tarfile.open(tmp, "w:", format=tarfile.PAX_FORMAT) as tout:
        for member in tin:
            if drop(member.name):
                continue
            if member.name in replace:
                data = replace.pop(member.name)
                member.type = tarfile.REGTYPE
                member.linkname = ""
                member.size = len(data)
                member.mode = 0o755
                tout.addfile(member, io.BytesIO(data))
            elif member.isfile():
                tout.addfile(member, tin.extractfile(member))
            else:
                tout.addfile(member)
    if replace:
        raise RuntimeError(f"{src}: members not found: {sorted(replace)}")
    tmp.replace(out)


def _trimmed(name: str) -> bool:
    return any(p in name for p in TRIM_PREFIXES if not name.endswith(p.rstrip("/")))


def base_tar() -> Path:
    """The Debian root as kbimg built it, minus TRIM_PREFIXES."""
    key = hashlib.sha256(json.dumps(BASE_TOML, sort_keys=True).encode()).hexdigest()[:12]
    out = CACHE / f"base-{key}" / "out"
    tar = out / "kubeos.tar"
    trimmed = out / "trimmed.tar"
    if not tar.exists():
        _kbimg(dict(BASE_TOML), out)
    if not trimmed.exists():
        _rewrite_tar(tar, trimmed, {}, _trimmed)
    return trimmed


def _custom_doc(src: Path, version: str) -> dict[str, object]:
    """kbimg.toml of v1/v2: the base root, the guest bridge and a short commit window (kbimg
    itself installs the agent's wheel and its dependencies)."""
    return {
        "from_rootfs": {"path": str(src), "version": version},
        "copy_files": [
            {"src": str(GUEST / "kubeos-vmtest-bridge"), "dst": "/usr/lib/kubeos/vmtest",
             "create_dir": "/usr/lib/kubeos/vmtest"},
            {"src": str(GUEST / "kubeos-vmtest-bridge.service"),
             "dst": "/usr/lib/systemd/system"},
            {"src": str(GUEST / "vmtest.conf"),
             "dst": "/usr/lib/systemd/system/os-agent.service.d",
             "create_dir": "/usr/lib/systemd/system/os-agent.service.d"},
        ],
        "systemd_service": {"name": ["kubeos-vmtest-bridge.service"]},
        "disk_partition": dict(BASE_TOML["disk_partition"]),  # type: ignore[call-overload]
    }


def _break_tar(src: Path, out: Path) -> None:
    """Copy a rootfs tar with an init that exits and os-release saying BROKEN_VERSION."""
    release = (f'NAME="KubeOS"\nID=kubeos\nPRETTY_NAME="KubeOS {BROKEN_VERSION}"\n'
               f'VERSION_ID="{BROKEN_VERSION}"\n').encode()
    _rewrite_tar(src, out, {"./usr/sbin/init": BROKEN_INIT, "./usr/lib/os-release": release})


def partuuids(disk: Path) -> dict[str, str]:
    out = subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                         text=True, timeout=30).stdout
    table = json.loads(out)["partitiontable"]["partitions"]
    return {p["name"]: p["uuid"].lower() for p in table}


def build_images(log: bool = True) -> Images:
    """Build (or reuse from the cache) everything the vm tier boots."""
    started = time.monotonic()
    src = base_tar()
    key = _tree_digest([Path(kubeos.__file__).parent, GUEST, Path(__file__)])
    top = CACHE / f"images-{key}"
    v1, v2, broken = top / "v1", top / "v2", top / "broken.tar"
    if not (top / "done").exists():
        if top.exists():
            shutil.rmtree(top)
        top.mkdir(parents=True)
        _kbimg(_custom_doc(src, "1.0.0"), v1)
        _kbimg(_custom_doc(src, "2.0.0"), v2)
        for name in ("system.img", "system.qcow2"):
            (v2 / name).unlink()  # only v2's kubeos.tar is used
        (v1 / "system.qcow2").unlink()
        _break_tar(v2 / "kubeos.tar", broken)
        (top / "done").write_text("ok\n")
        for old in CACHE.glob("images-*"):
            if old != top:
                shutil.rmtree(old, ignore_errors=True)
    images = Images(
        disk=v1 / "system.img",
        partuuids=partuuids(v1 / "system.img"),
        v2=_payload(v2 / "kubeos.tar", "2.0.0"),
        broken=_payload(broken, BROKEN_VERSION),
        build_seconds=time.monotonic() - started,
    )
    if log:
        print(f"vm images ready in {images.build_seconds:.1f} s: {top}", file=sys.stderr)
    return images


if __name__ == "__main__":
    build_images()
