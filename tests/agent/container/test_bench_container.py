"""Benchmark (``-m bench``): prepare_upgrade of a ~256 MiB root from a containerd image, a
docker image and, for comparison, a disk image over HTTPS, into a 600 MiB slot on a loop device.
Prints seconds and MiB/s; asserts only that each run staged the root and left nothing behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from core.conftest import Node
from core.support import (
    PKI,
    Route,
    loop_disk,
    make_root_tree,
    make_rootfs_tar,
    mkfs_ext4,
    mkfs_vfat,
    serve_files,
    sha256_of,
)

from kubeos.agent.boot.grubenv import GrubEnv, write_grubenv
from kubeos.agent.hostpaths import HostPaths
from kubeos.agent.service import AgentService
from kubeos.agent.upgrade.containerd import ContainerdSource
from kubeos.agent.upgrade.disk import DiskImageSource
from kubeos.agent.upgrade.docker import DockerSource
from kubeos.kbimg.oci import Layer, LayerFile

from .support import Containerd, Dockerd, Registry, push_image

pytestmark = [pytest.mark.node, pytest.mark.bench]
MiB = 1 << 20
SIZE_MIB = 256


@pytest.fixture
def big_node(tmp_path: Path, pki: PKI) -> Iterator[Node]:
    layout = [("BOOT", 8), ("ROOT-A", 40), ("ROOT-B", 600), ("PERSIST", 8)]
    with loop_disk(tmp_path / "disk.img", layout) as disk:
        mkfs_vfat(disk.parts["BOOT"], "BOOT")
        mkfs_ext4(disk.parts["ROOT-A"], "ROOT-A", make_root_tree(tmp_path / "tree-a", "1.0.0"))
        mkfs_ext4(disk.parts["ROOT-B"], "ROOT-B")
        mkfs_ext4(disk.parts["PERSIST"], "PERSIST")
        root = tmp_path / "root"
        root.mkdir()
        paths = HostPaths(root=root, mountinfo=tmp_path / "mountinfo")
        pki.install(paths.certs)
        env = GrubEnv()
        env.set("saved_entry", "A")
        write_grubenv(paths.grubenv, env)
        n = Node(tmp=tmp_path, disk=disk, root=root, paths=paths, pki=pki)
        n.boot("A", "1.0.0")
        yield n


def test_bench_staging(big_node: Node, containerd: Containerd, registry: Registry,
                       dockerd: Dockerd) -> None:
    node = big_node
    tree = make_root_tree(node.tmp / "tree-2", "2.0.0", extra_mib=SIZE_MIB)
    tar = make_rootfs_tar(tree, node.tmp / "os.tar")
    ref = f"{registry.host}/kubeos/bench:2.0.0"
    t0 = time.monotonic()
    digest = push_image(containerd, registry, ref, [Layer(files=[LayerFile("os.tar", tar)])],
                        node.tmp / "img")
    print(f"\nbuild+push {tar.stat().st_size / MiB:.0f} MiB os.tar: "
          f"{time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    containerd.ctr("images", "pull", "--hosts-dir", str(registry.hosts_dir), ref)
    t1 = time.monotonic()
    containerd.ctr("images", "rm", "--sync", ref)
    print(f"ctr pull+unpack by itself: {t1 - t0:.2f} s, rm --sync "
          f"{time.monotonic() - t1:.2f} s")
    request = {"version": "2.0.0", "check_sum": digest, "container_image": ref,
               "image_url": "", "certs": {"ca_cert": "ca.crt"}}
    sources = {
        "containerd": ContainerdSource(address=containerd.address,
                                       hosts_dir=registry.hosts_dir, crictl=None),
        "docker": DockerSource(host=dockerd.host),
        "disk": DiskImageSource(),
    }
    with serve_files(node.pki, node.tmp / "srv") as srv:
        srv.routes["/os.tar"] = Route(file=tar)
        for kind in ("containerd", "docker", "disk"):
            agent = AgentService(node.paths, reboot=node.reboots.append, sources=sources)
            agent.start()
            req = dict(request, image_type=kind)
            if kind == "disk":
                req.update(check_sum=sha256_of(tar), image_url=srv.url("/os.tar"))
            t0 = time.monotonic()
            res = agent.prepare_upgrade([req])
            dt = time.monotonic() - t0
            agent.close()
            assert res["version"] == "2.0.0"
            print(f"prepare_upgrade {kind:10s}: {dt:6.2f} s  "
                  f"({tar.stat().st_size / MiB / dt:6.1f} MiB/s of os.tar)")
    assert containerd.store()["images"] == []
    assert dockerd.store() == {"images": [], "containers": []}
