"""Session-wide real parts (containerd, registry, pushed images, dockerd) and the sandbox node
of the agent core tests (GPT disk on a loop device), reused by import."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from core.conftest import Node, node, pki
from core.support import PKI, loop_devices_work, make_root_tree, make_rootfs_tar

from kubeos.kbimg.oci import Layer, LayerFile

from .support import (
    Containerd,
    Dockerd,
    Registry,
    dockerd_usable,
    push_image,
    run_containerd,
    run_dockerd,
    run_registry,
)

MiB = 1 << 20


@dataclass
class Images:
    """Refs and digests (hex) of the pushed test images."""

    os_tar: str  # reference layout: FROM scratch + /os.tar holding KubeOS 2.0.0
    os_tar_digest: str
    rootfs: str  # the image's own root is KubeOS 2.1.0
    rootfs_digest: str
    no_root: str  # neither /os.tar nor a bootable root
    no_root_digest: str
    big: str  # /os.tar of KubeOS 3.0.0, larger than the 40 MiB slot
    big_digest: str


def _needs_tools(*names: str) -> None:
    if not loop_devices_work():
        pytest.skip("needs root and loop devices")
    missing = [n for n in names if not shutil.which(n)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (hack/setup.sh installs them)")


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    _needs_tools("containerd", "ctr")
    with run_containerd() as ctd:
        yield ctd


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Registry]:
    _needs_tools("docker-registry")
    base = tmp_path_factory.mktemp("registry")
    with run_registry(base, pki.ca.pem, pki.server.cert, pki.server.key) as reg:
        yield reg


@pytest.fixture(scope="session")
def images(
    tmp_path_factory: pytest.TempPathFactory, containerd: Containerd, registry: Registry
) -> Images:
    work = tmp_path_factory.mktemp("images")
    host = registry.host

    tree2 = make_root_tree(work / "tree-2.0.0", "2.0.0")
    os_tar = make_rootfs_tar(tree2, work / "os-2.0.0.tar")
    ref1 = f"{host}/kubeos/os:2.0.0"
    d1 = push_image(containerd, registry, ref1, [Layer(files=[LayerFile("os.tar", os_tar)])],
                    work / "b1")

    tree21 = make_root_tree(work / "tree-2.1.0", "2.1.0")
    ref2 = f"{host}/kubeos/rootfs:2.1.0"
    d2 = push_image(containerd, registry, ref2, [Layer(tree=tree21)], work / "b2")

    motd = work / "motd"
    motd.write_text("not an OS\n")
    ref3 = f"{host}/kubeos/app:1"
    d3 = push_image(containerd, registry, ref3, [Layer(files=[LayerFile("etc/motd", motd)])],
                    work / "b3")

    tree3 = make_root_tree(work / "tree-3.0.0", "3.0.0")
    with open(tree3 / "usr" / "lib" / "zeros", "wb") as f:  # compresses to almost nothing
        f.truncate(48 * MiB)
    big_tar = make_rootfs_tar(tree3, work / "os-3.0.0.tar")
    ref4 = f"{host}/kubeos/os:3.0.0"
    d4 = push_image(containerd, registry, ref4, [Layer(files=[LayerFile("os.tar", big_tar)])],
                    work / "b4")
    return Images(ref1, d1, ref2, d2, ref3, d3, ref4, d4)


@pytest.fixture(scope="session")
def dockerd(registry: Registry) -> Iterator[Dockerd]:
    if not dockerd_usable():
        pytest.skip("needs dockerd (docker.io) and root")
    with run_dockerd(registry.host) as d:
        yield d


def clean_store(ctd: Containerd) -> None:
    """Empty the agent's namespace between tests (a failed test must not taint the next)."""
    for ref in ctd.store()["images"]:
        ctd.ctr("images", "rm", "--sync", ref, check=False)
    for key in ctd.store()["snapshots"]:
        ctd.ctr("snapshots", "rm", key, check=False)


@pytest.fixture
def ctd(containerd: Containerd) -> Iterator[Containerd]:
    clean_store(containerd)
    yield containerd
    clean_store(containerd)


__all__ = ["Images", "Node", "node", "pki"]
