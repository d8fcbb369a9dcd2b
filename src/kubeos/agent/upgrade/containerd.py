"""``image_type: containerd``: take the new root from a container image through containerd.

Sequence (reference §5.2, without its copies): pull with ``crictl`` when the node has it (the
CRI plugin then uses containerd's own registry configuration), else with
``ctr -n k8s.io images pull --hosts-dir /etc/containerd/certs.d``; compare the image digest
with ``check_sum``; mount the image's snapshot **read-only** with ``ctr images mount`` at a
directory under the agent's state dir; then either stream ``/os.tar`` (the reference layout, an
image ``FROM scratch`` holding ``/os.tar``) through the disk source's tar extractor into the
freshly formatted slot, or, for an image whose own root filesystem is the OS, copy the mounted
tree. The reference copies ``os.tar`` to ``/persist``, builds ``update.img`` there and ``dd``\\ s
it; here the only copy is the one into the partition, so the reference's fixed 3 GiB free-space
check on /persist is replaced by a check of the image's root size against the partition.

Afterwards the mount and its snapshot are removed, and the image too if the agent pulled it (an
image that was present before is left alone). See :mod:`container_work` for the crash journal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import BinaryIO

from kubeos.agent.boot.rootfs import inspect_root
from kubeos.agent.errors import (
    ChecksumMismatchError,
    DownloadError,
    InvalidRequestError,
    PayloadError,
    SlotNotBootableError,
    UpgradeError,
)
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.upgrade.container_work import (
    WorkJournal,
    check_fits,
    copy_tree,
    fill_slot,
    is_mount_point,
    refuse_mounted,
    state_dir_of,
    tree_size,
)
from kubeos.agent.upgrade.image_ref import (
    digest_from_repo_digest,
    parse_checksum,
    parse_image_ref,
)
from kubeos.agent.upgrade.rootfs_tar import extract_rootfs
from kubeos.agent.upgrade.runtime import Tool, ToolFailed
from kubeos.agent.upgrade.target import StagedImage, StagingTarget

log = logging.getLogger(__name__)

JOURNAL = "containerd-work.json"
IMAGE_MOUNT = "image-mnt"
OS_TAR = "os.tar"
PULL_TIMEOUT = 1800.0


def ctr_digest(listing: str, ref: str) -> str | None:
    """The DIGEST column of ``ctr images ls`` for exactly ``ref`` (REF TYPE DIGEST ...)."""
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[0] == ref:
            return digest_from_repo_digest(f"{ref}@{fields[2]}")
    return None


class _CtrPuller:
    """Pulls with ``ctr`` itself; the registry's TLS comes from ``hosts.toml`` in hosts_dir."""

    def __init__(self, ctr: Tool, hosts_dir: Path) -> None:
        self.ctr = ctr
        self.hosts_dir = hosts_dir

    def exists(self, ref: str) -> bool:
        return ctr_digest(self.ctr.check("images", "ls", what="listing images"), ref) is not None

    def pull(self, ref: str) -> None:
        self.ctr.check(
            "images", "pull", "--hosts-dir", str(self.hosts_dir), ref,
            error=DownloadError, what=f"pulling {ref}", timeout=PULL_TIMEOUT,
        )

    def digest(self, ref: str) -> str | None:
        return ctr_digest(self.ctr.check("images", "ls", what="listing images"), ref)

    def remove(self, ref: str) -> None:
        self.ctr.run("images", "rm", "--sync", ref)


class _CriPuller:
    """Pulls through the CRI (``crictl``), the way kubelet would, when crictl is installed."""

    def __init__(self, crictl: Tool) -> None:
        self.crictl = crictl

    def exists(self, ref: str) -> bool:
        return self.crictl.ok("inspecti", ref)

    def pull(self, ref: str) -> None:
        self.crictl.check("pull", ref, error=DownloadError, what=f"pulling {ref}",
                          timeout=PULL_TIMEOUT)

    def digest(self, ref: str) -> str | None:
        import json  # local: only this path parses JSON

        out = self.crictl.check("inspecti", "-o", "json", ref, what="inspecting the image")
        try:
            digests = json.loads(out)["status"]["repoDigests"]
        except (ValueError, KeyError, TypeError):
            return None
        repo = parse_image_ref(ref).repository
        mine = [d for d in digests if isinstance(d, str) and d.rpartition("@")[0] == repo]
        for text in mine or [d for d in digests if isinstance(d, str)][:1]:
            return digest_from_repo_digest(text)
        return None

    def remove(self, ref: str) -> None:
        self.crictl.run("rmi", ref)


class ContainerdSource:
    """The ``containerd`` upgrade source."""

    image_type = "containerd"

    def __init__(
        self,
        *,
        address: str | None = None,
        namespace: str = "k8s.io",
        hosts_dir: Path = Path("/etc/containerd/certs.d"),
        ctr: str = "ctr",
        crictl: str | None = "crictl",
    ) -> None:
        prefix = (ctr, "--address", address) if address else (ctr,)
        self.ctr = Tool((*prefix, "-n", namespace))
        self.hosts_dir = hosts_dir
        self.crictl = crictl

    def _puller(self) -> _CtrPuller | _CriPuller:
        path = shutil.which(self.crictl) if self.crictl else None
        return _CriPuller(Tool((path,))) if path else _CtrPuller(self.ctr, self.hosts_dir)

    def validate(self, request: UpgradeRequest) -> None:
        ref = parse_image_ref(request.container_image)
        want = parse_checksum(request.check_sum)
        if ref.digest is not None and ref.digest != want:
            raise InvalidRequestError(
                f"container_image pins sha256:{ref.digest} but check_sum is {want}"
            )

    # --- clean-up ---------------------------------------------------------------------------

    def _unmount(self, mnt: Path) -> None:
        """Unmount the image view and remove its snapshot (``--rm``); tolerate either being
        gone already, so that recovery after a crash at any point converges."""
        if is_mount_point(mnt):
            self.ctr.run("images", "unmount", "--rm", str(mnt))
        else:
            try:
                self.ctr.run("snapshots", "rm", str(mnt))
            except ToolFailed as exc:
                if "not found" not in exc.detail and "does not exist" not in exc.detail:
                    raise
        # ctr versions that take no lease for a mount, or it went with the snapshot
        with contextlib.suppress(ToolFailed):
            self.ctr.run("leases", "rm", str(mnt))
        if mnt.is_dir():
            mnt.rmdir()

    def _remove_image(self, ref: str) -> None:
        puller = self._puller()
        if puller.exists(ref):
            puller.remove(ref)

    def recover(self, state_dir: Path) -> list[str]:
        """Remove what an interrupted ``stage`` created (mounts, snapshots, pulled images), as
        recorded in the journal; returns what was removed. Call once at agent start."""
        return WorkJournal(state_dir / JOURNAL).undo(self._remove, first="mount")

    def _remove(self, kind: str, name: str) -> None:
        if kind == "mount":
            self._unmount(Path(name))
        elif kind == "image":
            self._remove_image(name)

    # --- staging ----------------------------------------------------------------------------

    def stage(self, request: UpgradeRequest, target: StagingTarget) -> StagedImage:
        self.validate(request)
        ref = str(parse_image_ref(request.container_image))
        want = parse_checksum(request.check_sum)
        state = state_dir_of(target)
        self.recover(state)
        refuse_mounted(target)
        started = time.monotonic()
        journal = WorkJournal(state / JOURNAL)
        puller = self._puller()
        existed = puller.exists(ref)
        if not existed:
            journal.add("image", ref)
        try:
            puller.pull(ref)
            digest = puller.digest(ref)
            if digest is None:
                raise UpgradeError(f"{puller.__class__.__name__}: no digest for {ref}")
            if digest != want:
                raise ChecksumMismatchError(f"Image digest mismatch, expect {want}, got {digest}")
            mnt = state / IMAGE_MOUNT
            journal.add("mount", str(mnt))
            try:
                mnt.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.ctr.check("images", "mount", ref, str(mnt), what="mounting the image")
                version, payload, size = fill_from_mounted_image(mnt, request, target)
            finally:
                journal.remove("mount", str(mnt), lambda: self._unmount(mnt))
        finally:
            if not existed:
                journal.remove("image", ref, lambda: self._remove_image(ref))
        return StagedImage(
            slot=target.slot,
            version=version,
            check_sum=digest,
            payload=payload,
            bytes=size,
            seconds=time.monotonic() - started,
        )


def _open_os_tar(mnt: Path) -> int | None:
    """An fd of the image's ``/os.tar`` if it is a regular file (never a symlink out of the
    image), else None."""
    try:
        fd = os.open(mnt / OS_TAR, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def fill_from_mounted_image(
    mnt: Path, request: UpgradeRequest, target: StagingTarget
) -> tuple[str, str, int]:
    """Both layouts from a mounted image root; every refusal comes before the first write."""
    fd = _open_os_tar(mnt)
    if fd is not None:
        with os.fdopen(fd, "rb", buffering=1 << 20) as tar:
            size = os.fstat(tar.fileno()).st_size
            head = tar.read(512)
            if head[:2] != b"\x1f\x8b" and head[257:262] != b"ustar":
                raise PayloadError("/os.tar in the image is not a tar archive")
            check_fits(size, target, "/os.tar of the image")
            tar.seek(0)
            version = fill_slot(target, request, lambda root: _extract(tar, root))
        return version, "container-os-tar", size
    try:
        inspect_root(mnt)
    except SlotNotBootableError as exc:
        raise PayloadError(
            f"the image has no /os.tar and its own root filesystem is not usable: {exc}"
        ) from None
    size = tree_size(mnt)
    check_fits(size, target, "the image's root filesystem")
    version = fill_slot(target, request, lambda root: copy_tree(mnt, root))
    return version, "container-rootfs", size


def _extract(stream: BinaryIO, root: Path) -> None:
    extract_rootfs(stream, root)
