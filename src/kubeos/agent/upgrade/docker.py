"""``image_type: docker``: take the new root from a container image through the docker daemon.

Sequence (reference §5.2): ``docker pull``; the digest from ``RepoDigests`` is compared with
``check_sum``; the image's size (``docker image inspect .Size``, the unpacked size) is checked
against the partition before anything is written; ``docker create`` a container that is never
started; ``docker cp <id>:/os.tar -`` streams a tar holding ``os.tar``, whose content goes
straight through the disk source's extractor into the freshly formatted slot (the reference
copies it to /persist first). An image without ``/os.tar`` whose own root is the OS is taken
with ``docker export`` instead, also as a stream. The container is removed afterwards, and the
image too if the agent pulled it. Docker has no read-only mount of an image, so this is the
closest to "no second copy" it allows: the bytes pass through a pipe only.

Containers get a unique ``kubeos-agent-<random>`` name that is recorded before creation, so
clean-up (also after a crash) removes only the agent's own containers, never one a user
happens to have named ``kubeos-temp`` as the reference would.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import secrets
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from kubeos.agent.boot.rootfs import INITRDS, KERNELS, OS_RELEASE, parse_os_release, version_of
from kubeos.agent.errors import (
    ChecksumMismatchError,
    DownloadError,
    InvalidRequestError,
    PayloadError,
    UpgradeError,
)
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.upgrade.container_work import (
    WorkJournal,
    check_fits,
    fill_slot,
    refuse_mounted,
    state_dir_of,
)
from kubeos.agent.upgrade.image_ref import (
    ImageRef,
    digest_from_repo_digest,
    parse_checksum,
    parse_image_ref,
)
from kubeos.agent.upgrade.rootfs_tar import extract_rootfs
from kubeos.agent.upgrade.runtime import Tool, ToolFailed
from kubeos.agent.upgrade.target import StagedImage, StagingTarget

log = logging.getLogger(__name__)

JOURNAL = "docker-work.json"
PULL_TIMEOUT = 1800.0
COPY_TIMEOUT = 3600.0
CONTAINER_PREFIX = "kubeos-agent-"
PROBE_MAX = 1 << 16  # os-release is tiny; nothing bigger is read into memory
_MISSING_PATH = ("Could not find the file", "No such container:path")


class _Prefixed:
    """A byte stream with some already-read bytes put back in front (for ``tarfile``)."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0:
                out, self._head = self._head + self._rest.read(), b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._rest.read(size)


def repo_digest(digests: list[str], ref: ImageRef) -> str | None:
    """The digest in ``RepoDigests`` for ``ref``'s repository (docker shortens docker.io
    names there); the first one when none names it."""
    for text in digests:
        name = text.rpartition("@")[0]
        if name and parse_image_ref(name).repository == ref.repository:
            return digest_from_repo_digest(text)
    return digest_from_repo_digest(digests[0]) if digests else None


class DockerSource:
    """The ``docker`` upgrade source."""

    image_type = "docker"

    def __init__(self, *, docker: str = "docker", host: str | None = None) -> None:
        self.docker = Tool((docker, "--host", host) if host else (docker,))

    def validate(self, request: UpgradeRequest) -> None:
        ref = parse_image_ref(request.container_image)
        want = parse_checksum(request.check_sum)
        if ref.digest is not None and ref.digest != want:
            raise InvalidRequestError(
                f"container_image pins sha256:{ref.digest} but check_sum is {want}"
            )

    # --- clean-up ---------------------------------------------------------------------------

    def _remove(self, kind: str, name: str) -> None:
        if kind == "container":
            if self.docker.ok("container", "inspect", name):
                self.docker.run("rm", "-f", name)
        elif kind == "image" and self.docker.ok("image", "inspect", name):
            self.docker.run("rmi", name)

    def recover(self, state_dir: Path) -> list[str]:
        """Remove the containers and images an interrupted ``stage`` created, as recorded in
        the journal; returns what was removed. Call once at agent start."""
        return WorkJournal(state_dir / JOURNAL).undo(self._remove, first="container")

    # --- staging ----------------------------------------------------------------------------

    def _digest(self, ref: ImageRef, name: str) -> str:
        import json  # local: only this step parses JSON

        out = self.docker.check("image", "inspect", "--format", "{{json .RepoDigests}}", name,
                                what="inspecting the image")
        try:
            digests = [d for d in json.loads(out) or [] if isinstance(d, str)]
        except ValueError:
            digests = []
        digest = repo_digest(digests, ref)
        if digest is None:
            raise UpgradeError(f"docker reports no registry digest for {name}")
        return digest

    def _size(self, name: str) -> int:
        out = self.docker.check("image", "inspect", "--format", "{{.Size}}", name,
                                what="inspecting the image")
        try:
            return int(out.strip())
        except ValueError:
            raise UpgradeError(f"docker reports no size for {name}: {out.strip()!r}") from None

    def stage(self, request: UpgradeRequest, target: StagingTarget) -> StagedImage:
        self.validate(request)
        ref = parse_image_ref(request.container_image)
        name = str(ref)
        want = parse_checksum(request.check_sum)
        state = state_dir_of(target)
        self.recover(state)
        refuse_mounted(target)
        started = time.monotonic()
        journal = WorkJournal(state / JOURNAL)
        existed = self.docker.ok("image", "inspect", name)
        if not existed:
            journal.add("image", name)
        try:
            self.docker.check("pull", name, error=DownloadError, what=f"pulling {name}",
                              timeout=PULL_TIMEOUT)
            digest = self._digest(ref, name)
            if digest != want:
                raise ChecksumMismatchError(f"Image digest mismatch, expect {want}, got {digest}")
            size = self._size(name)
            check_fits(size, target, "the image")
            container = CONTAINER_PREFIX + secrets.token_hex(6)
            journal.add("container", container)
            try:
                # never started: the command only satisfies images without CMD/ENTRYPOINT
                self.docker.check("create", "--name", container, name, "true",
                                  what="creating a container")
                version, payload = self._fill(container, request, target)
            finally:
                journal.remove("container", container,
                               functools.partial(self._remove, "container", container))
        finally:
            if not existed:
                journal.remove("image", name, functools.partial(self._remove, "image", name))
        return StagedImage(
            slot=target.slot,
            version=version,
            check_sum=digest,
            payload=payload,
            bytes=size,
            seconds=time.monotonic() - started,
        )

    def _fill(
        self, container: str, request: UpgradeRequest, target: StagingTarget
    ) -> tuple[str, str]:
        version = self._from_os_tar(container, request, target)
        if version is not None:
            return version, "container-os-tar"
        self._probe_root(container, request)
        with self._stream("export", container) as out:
            version = fill_slot(target, request, lambda root: _extract(out, root))
        return version, "container-rootfs"

    def _copy_out(self, container: str, path: str) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
        """Members of ``docker cp <container>:<path> -`` (content of small files only)."""
        try:
            with (
                self.docker.stream("cp", f"{container}:{path}", "-", timeout=60.0) as out,
                tarfile.open(fileobj=out, mode="r|") as tar,
            ):
                for member in tar:
                    small = member.isreg() and member.size <= PROBE_MAX
                    f = tar.extractfile(member) if small else None
                    yield member, f.read() if f is not None else b""
        except (ToolFailed, tarfile.TarError):
            return

    def _probe_root(self, container: str, request: UpgradeRequest) -> None:
        """Before the slot is touched: does the image's own root look like KubeOS (kernel,
        initrd, os-release with the requested version)? docker has no read-only mount, so
        this reads /boot's names and os-release through ``docker cp`` instead."""
        names = [m.name for m, _ in self._copy_out(container, "/boot")]
        missing = []
        if not any(fnmatch.fnmatch(n, p) for n in names for p in KERNELS):
            missing.append("kernel (/boot/vmlinuz)")
        if not any(fnmatch.fnmatch(n, p) for n in names for p in INITRDS):
            missing.append("initrd (/boot/initramfs.img)")
        version = None
        for rel in reversed(OS_RELEASE):  # usr/lib first: /etc/os-release is often a link
            for member, data in self._copy_out(container, "/" + rel):
                if member.isreg():
                    version = version_of(parse_os_release(data.decode(errors="replace")))
            if version:
                break
        if version is None:
            missing.append('os-release with PRETTY_NAME="KubeOS <version>"')
        if missing:
            raise PayloadError(
                "the image has no /os.tar and its own root filesystem is not usable: "
                "missing " + ", ".join(missing)
            )
        if request.version and version != request.version:
            raise PayloadError(
                f"the image holds KubeOS {version}, but version {request.version} was requested"
            )

    @contextlib.contextmanager
    def _stream(self, *args: str) -> Iterator[IO[bytes]]:
        try:
            with self.docker.stream(*args, timeout=COPY_TIMEOUT) as out:
                yield out
        except ToolFailed as exc:
            raise UpgradeError(f"docker {args[0]} failed: {exc.detail}") from None

    def _from_os_tar(
        self, container: str, request: UpgradeRequest, target: StagingTarget
    ) -> str | None:
        """Stream ``/os.tar`` out of the container into the slot; None when the image has
        no ``/os.tar`` (decided before the slot is touched)."""
        version: str | None = None
        try:
            with self.docker.stream("cp", f"{container}:/os.tar", "-",
                                    timeout=COPY_TIMEOUT) as out:
                head = out.read(tarfile.BLOCKSIZE)
                if len(head) == tarfile.BLOCKSIZE:
                    version = self._extract_inner(_Prefixed(head, out), request, target)
        except ToolFailed as exc:
            if any(text in exc.detail for text in _MISSING_PATH):
                return None
            raise UpgradeError(f"docker cp failed: {exc.detail}") from None
        if version is None:
            raise PayloadError("docker cp returned no data for /os.tar")
        return version

    @staticmethod
    def _extract_inner(outer_stream: _Prefixed, request: UpgradeRequest,
                       target: StagingTarget) -> str:
        try:
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=outer_stream, mode="r|"
            ) as outer:
                member = outer.next()
                if member is None or not member.isreg():
                    raise PayloadError("/os.tar in the image is not a regular file")
                inner = outer.extractfile(member)
                assert inner is not None
                head = inner.read(tarfile.BLOCKSIZE)
                if head[:2] != b"\x1f\x8b" and head[257:262] != b"ustar":
                    raise PayloadError("/os.tar in the image is not a tar archive")
                check_fits(member.size, target, "/os.tar of the image")
                payload = _Prefixed(head, inner)
                version = fill_slot(target, request, lambda root: _extract(payload, root))
                for _ in outer:  # drain the outer tar's padding so docker cp exits cleanly
                    pass
        except tarfile.TarError as exc:
            raise PayloadError(f"docker cp did not return a usable tar stream: {exc}") from None
        return version


def _extract(stream: IO[bytes] | _Prefixed, root: Path) -> None:
    extract_rootfs(stream, root)

