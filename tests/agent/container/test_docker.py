"""``image_type: docker`` against a real dockerd of its own (own data-root and socket, no
iptables/bridge: it only pulls, creates and copies, never runs a container), the same TLS
registry and images as the containerd tests, and a real GPT disk on a loop device."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from core.conftest import Node

from kubeos.agent.boot.mounts import mounted
from kubeos.agent.boot.rootfs import inspect_root
from kubeos.agent.errors import ChecksumMismatchError, DownloadError, PayloadError, SpaceError
from kubeos.agent.service import AgentService
from kubeos.agent.upgrade.docker import CONTAINER_PREFIX, JOURNAL, DockerSource

from .conftest import Images
from .support import Dockerd, Registry, mounts_under

pytestmark = pytest.mark.node


def dreq(ref: str, digest: str, version: str = "") -> dict[str, Any]:
    return {
        "version": version,
        "check_sum": digest,
        "image_type": "docker",
        "container_image": ref,
        "image_url": "",
        "flag_safe": False,
        "mtls": False,
        "certs": {"ca_cert": "", "client_cert": "", "client_key": ""},
    }


@pytest.fixture
def dk(dockerd: Dockerd) -> Dockerd:
    """The session dockerd, emptied of images and containers before each test."""
    for cid in dockerd.store()["containers"]:
        dockerd.docker("rm", "-f", cid, check=False)
    for img in dockerd.store()["images"]:
        dockerd.docker("rmi", "-f", img, check=False)
    return dockerd


def agent_for(node: Node, dk: Dockerd) -> AgentService:
    service = AgentService(
        node.paths,
        reboot=node.reboots.append,
        restart_service=node.restarts.append,
        reboot_delay=0.0,
        sources={"docker": DockerSource(host=dk.host)},
    )
    node.services.append(service)
    service.start()
    return service


def assert_left_nothing(node: Node, dk: Dockerd) -> None:
    assert dk.store() == {"images": [], "containers": []}
    assert mounts_under(node.root) == []
    assert not (node.paths.state_dir / JOURNAL).exists()


def test_upgrade_from_os_tar_image(node: Node, dk: Dockerd, images: Images,
                                   registry: Registry) -> None:
    agent = agent_for(node, dk)
    before = node.grubenv_bytes()
    res = agent.prepare_upgrade([dreq(images.os_tar, "sha256:" + images.os_tar_digest, "2.0.0")])
    assert (res["slot"], res["version"], res["payload"]) == ("B", "2.0.0", "container-os-tar")
    assert node.grubenv_bytes() == before
    assert_left_nothing(node, dk)
    with mounted(node.disk.parts["ROOT-B"], node.tmp / "check-b", readonly=True) as root:
        assert inspect_root(root).version == "2.0.0"
    assert agent.upgrade([])["status"] == "Upgraded"
    node.wait_reboot()
    assert node.env()["next_entry"] == "B"


def test_upgrade_from_image_whose_root_is_the_os(node: Node, dk: Dockerd,
                                                 images: Images) -> None:
    agent = agent_for(node, dk)
    res = agent.prepare_upgrade([dreq(images.rootfs, images.rootfs_digest.upper())])
    assert (res["version"], res["payload"]) == ("2.1.0", "container-rootfs")
    assert_left_nothing(node, dk)
    with mounted(node.disk.parts["ROOT-B"], node.tmp / "check-b", readonly=True) as root:
        assert inspect_root(root).version == "2.1.0"
        assert (root / "usr" / "bin" / "tool").stat().st_mode & 0o7777 == 0o4755
        assert os.readlink(root / "bin") == "usr/bin"


def test_preexisting_image_and_foreign_containers_are_kept(
    node: Node, dk: Dockerd, images: Images
) -> None:
    dk.docker("pull", images.os_tar)
    dk.docker("create", "--name", "kubeos-temp", images.os_tar, "true")  # the reference's name
    before = dk.store()
    agent_for(node, dk).prepare_upgrade([dreq(images.os_tar, images.os_tar_digest)])
    assert dk.store() == before


def _fails(node: Node, dk: Dockerd, request: dict[str, Any], error: type[Exception],
           match: str) -> None:
    agent = agent_for(node, dk)
    before = node.grubenv_bytes()
    with pytest.raises(error, match=match):
        agent.prepare_upgrade([request])
    assert node.grubenv_bytes() == before
    assert agent.state.get("dirty_slot") is None  # refused before the slot was touched
    assert node.reboots == []
    assert_left_nothing(node, dk)


def test_digest_mismatch(node: Node, dk: Dockerd, images: Images) -> None:
    _fails(node, dk, dreq(images.os_tar, images.big_digest), ChecksumMismatchError,
           "Image digest mismatch")


def test_unknown_image(node: Node, dk: Dockerd, images: Images, registry: Registry) -> None:
    _fails(node, dk, dreq(f"{registry.host}/kubeos/nonexistent:9", images.os_tar_digest),
           DownloadError, "pulling .* failed")


def test_image_without_os_tar_or_root(node: Node, dk: Dockerd, images: Images) -> None:
    _fails(node, dk, dreq(images.no_root, images.no_root_digest), PayloadError,
           "no /os.tar and its own root filesystem is not usable: missing kernel")


def test_disk_too_small(node: Node, dk: Dockerd, images: Images) -> None:
    _fails(node, dk, dreq(images.big, images.big_digest), SpaceError, "is larger than")


def test_recover_removes_only_recorded_things(node: Node, dk: Dockerd, images: Images) -> None:
    """A crash left a container and a pulled image, both recorded in the journal; the next
    start removes them, and a container the agent did not record stays."""
    dk.docker("pull", images.os_tar)
    dk.docker("pull", images.rootfs)
    name = CONTAINER_PREFIX + "deadbeef0000"
    dk.docker("create", "--name", name, images.os_tar, "true")
    dk.docker("create", "--name", CONTAINER_PREFIX + "not-recorded", images.rootfs, "true")
    state = node.paths.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / JOURNAL).write_text(json.dumps([
        {"kind": "image", "name": images.os_tar},
        {"kind": "container", "name": name},
    ]))
    removed = DockerSource(host=dk.host).recover(state)
    assert sorted(removed) == sorted([f"container {name}", f"image {images.os_tar}"])
    assert not (state / JOURNAL).exists()
    names = dk.docker("ps", "-a", "--format", "{{.Names}}").split()
    assert names == [CONTAINER_PREFIX + "not-recorded"]
    assert dk.docker("images", "--format", "{{.Repository}}:{{.Tag}}").split() == [images.rootfs]


