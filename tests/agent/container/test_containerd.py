"""``image_type: containerd`` against a real containerd, a real TLS registry and a real GPT disk
on a loop device: prepare_upgrade + upgrade through AgentService, failures that leave the node
as it was, a preexisting image that survives, and recovery after a SIGKILL mid-stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from core.conftest import Node

from kubeos.agent.boot.mounts import mounted
from kubeos.agent.boot.partitions import ext_label
from kubeos.agent.boot.rootfs import inspect_root
from kubeos.agent.errors import (
    ChecksumMismatchError,
    DownloadError,
    InvalidRequestError,
    PayloadError,
    SpaceError,
)
from kubeos.agent.service import AgentService
from kubeos.agent.upgrade.container_work import is_mount_point
from kubeos.agent.upgrade.containerd import IMAGE_MOUNT, JOURNAL, ContainerdSource

from .conftest import Images
from .support import Containerd, Registry, mounts_under, write_hosts_toml

pytestmark = pytest.mark.node

EMPTY = {"images": [], "snapshots": [], "leases": [], "content": []}


def creq(ref: str, digest: str, version: str = "") -> dict[str, Any]:
    """An UpgradeRequest as the reference proxy sends it for imagetype containerd."""
    return {
        "version": version,
        "check_sum": digest,
        "image_type": "containerd",
        "container_image": ref,
        "image_url": "",
        "flag_safe": False,
        "mtls": False,
        "certs": {"ca_cert": "", "client_cert": "", "client_key": ""},
    }


def source(ctd: Containerd, hosts_dir: Path) -> ContainerdSource:
    return ContainerdSource(address=ctd.address, hosts_dir=hosts_dir, crictl=None)


def agent_for(node: Node, src: ContainerdSource) -> AgentService:
    service = AgentService(
        node.paths,
        reboot=node.reboots.append,
        restart_service=node.restarts.append,
        reboot_delay=0.0,
        sources={"containerd": src},
    )
    node.services.append(service)
    service.start()
    return service


def slot_b_root(node: Node, tmp: Path) -> tuple[str, list[str]]:
    """Version and top-level names in ROOT-B, read by mounting it read-only."""
    with mounted(node.disk.parts["ROOT-B"], tmp / "check-b", readonly=True) as root:
        return inspect_root(root).version, sorted(os.listdir(root))


def assert_left_nothing(node: Node, ctd: Containerd) -> None:
    assert ctd.store() == EMPTY
    assert mounts_under(node.root) == []
    assert not (node.paths.state_dir / JOURNAL).exists()
    assert not (node.paths.state_dir / IMAGE_MOUNT).exists()


def assert_as_before(node: Node, ctd: Containerd, agent: AgentService, grubenv: bytes) -> None:
    """Nothing switched or staged, slot B not even formatted, nothing left in containerd."""
    assert node.grubenv_bytes() == grubenv
    assert agent.state.get("writing") is None
    assert agent.state.get("dirty_slot") is None
    assert agent.state.get("staged") is None
    assert node.reboots == []
    assert_left_nothing(node, ctd)


# --- the happy paths ----------------------------------------------------------------------------


def test_upgrade_from_os_tar_image(
    node: Node, ctd: Containerd, registry: Registry, images: Images
) -> None:
    agent = agent_for(node, source(ctd, registry.hosts_dir))
    before = node.grubenv_bytes()
    started = time.monotonic()
    # checksum with the prefix and in upper case, as users paste it
    res = agent.prepare_upgrade(
        [creq(images.os_tar, "SHA256:" + images.os_tar_digest.upper(), "2.0.0")]
    )
    elapsed = time.monotonic() - started
    assert (res["status"], res["slot"], res["version"], res["payload"]) == (
        "UpgradeReady", "B", "2.0.0", "container-os-tar",
    )
    assert res["check_sum"] == images.os_tar_digest
    print(f"\nprepare_upgrade (containerd, os.tar {res['bytes']} bytes): {elapsed:.2f} s")
    assert node.grubenv_bytes() == before  # prepare never touches the boot entry
    assert_left_nothing(node, ctd)
    assert ext_label(node.disk.parts["ROOT-B"]) == "ROOT-B"
    version, names = slot_b_root(node, node.tmp)
    assert version == "2.0.0"
    assert {"boot", "usr", "etc", "bin"} <= set(names)

    assert agent.upgrade([])["status"] == "Upgraded"
    node.wait_reboot()
    assert node.env()["next_entry"] == "B"
    assert node.env().get("saved_entry") == "A"  # a failed trial comes back by itself
    assert node.grub() == "B"
    node.boot("B", "2.0.0")
    after = agent_for(node, source(ctd, registry.hosts_dir))
    assert after.commit([])["status"] == "Committed"
    assert node.env()["saved_entry"] == "B"


def test_upgrade_from_image_whose_root_is_the_os(
    node: Node, ctd: Containerd, registry: Registry, images: Images
) -> None:
    agent = agent_for(node, source(ctd, registry.hosts_dir))
    res = agent.prepare_upgrade([creq(images.rootfs, images.rootfs_digest)])
    assert (res["version"], res["payload"]) == ("2.1.0", "container-rootfs")
    assert_left_nothing(node, ctd)
    with mounted(node.disk.parts["ROOT-B"], node.tmp / "check-b", readonly=True) as root:
        assert inspect_root(root).version == "2.1.0"
        assert (root / "usr" / "bin" / "tool").stat().st_mode & 0o7777 == 0o4755
        assert os.readlink(root / "bin") == "usr/bin"
    assert agent.upgrade([])["status"] == "Upgraded"
    node.wait_reboot()
    assert node.env()["next_entry"] == "B"


def test_preexisting_image_is_kept(
    node: Node, ctd: Containerd, registry: Registry, images: Images
) -> None:
    ctd.ctr("images", "pull", "--hosts-dir", str(registry.hosts_dir), images.os_tar)
    before = ctd.store()
    agent = agent_for(node, source(ctd, registry.hosts_dir))
    agent.prepare_upgrade([creq(images.os_tar, images.os_tar_digest)])
    assert ctd.store() == before  # the node's image is still there, no snapshot or lease added
    assert mounts_under(node.root) == []


# --- failures: each leaves the node as it was -----------------------------------------------


def _fails(node: Node, ctd: Containerd, src: ContainerdSource, request: dict[str, Any],
           error: type[Exception], match: str) -> None:
    agent = agent_for(node, src)
    before = node.grubenv_bytes()
    with pytest.raises(error, match=match):
        agent.prepare_upgrade([request])
    assert_as_before(node, ctd, agent, before)
    assert ext_label(node.disk.parts["ROOT-B"]) == "ROOT-B"
    # still the (empty) filesystem the fixture made: nothing was formatted or written
    with mounted(node.disk.parts["ROOT-B"], node.tmp / "check-b", readonly=True) as root:
        assert sorted(os.listdir(root)) == ["lost+found"]


def test_digest_mismatch(node: Node, ctd: Containerd, registry: Registry, images: Images) -> None:
    _fails(node, ctd, source(ctd, registry.hosts_dir),
           creq(images.os_tar, images.rootfs_digest), ChecksumMismatchError,
           f"Image digest mismatch, expect {images.rootfs_digest}, got {images.os_tar_digest}")


def test_unknown_image(node: Node, ctd: Containerd, registry: Registry, images: Images) -> None:
    _fails(node, ctd, source(ctd, registry.hosts_dir),
           creq(f"{registry.host}/kubeos/nonexistent:9", images.os_tar_digest), DownloadError,
           "not found")


def test_registry_down(node: Node, ctd: Containerd, registry: Registry, images: Images) -> None:
    from .support import free_port

    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    write_hosts_toml(node.tmp / "certs.d", host, registry.hosts_dir.parent / "ca.crt")
    _fails(node, ctd, source(ctd, node.tmp / "certs.d"),
           creq(f"{host}/kubeos/os:2.0.0", images.os_tar_digest), DownloadError,
           "connection refused")


def test_registry_without_hosts_toml(node: Node, ctd: Containerd, registry: Registry,
                                     images: Images) -> None:
    """No hosts.toml for the registry: ctr talks plain HTTP to loopback, the TLS registry
    answers 400; elsewhere it would be an unknown CA. Either way: a clear pull error."""
    (node.tmp / "empty-certs.d").mkdir()
    _fails(node, ctd, source(ctd, node.tmp / "empty-certs.d"),
           creq(images.os_tar, images.os_tar_digest), DownloadError,
           r"pulling 127\.0\.0\.1:\d+/kubeos/os:2\.0\.0 failed: ")


def test_image_without_os_tar_or_root(
    node: Node, ctd: Containerd, registry: Registry, images: Images
) -> None:
    _fails(node, ctd, source(ctd, registry.hosts_dir),
           creq(images.no_root, images.no_root_digest), PayloadError,
           "no /os.tar and its own root filesystem is not usable")


def test_disk_too_small(node: Node, ctd: Containerd, registry: Registry, images: Images) -> None:
    _fails(node, ctd, source(ctd, registry.hosts_dir),
           creq(images.big, images.big_digest), SpaceError,
           r"/os.tar of the image \(\d+ bytes\) is larger than")


@pytest.mark.parametrize(
    ("ref", "digest", "match"),
    [
        ("", "0" * 64, "container_image is required"),
        ("127.0.0.1:5000/kubeos/os:1; rm -rf /", "0" * 64, "not a valid image reference"),
        ("-Ufoo/os:1", "0" * 64, "not a valid image reference"),
        ("127.0.0.1:5000/kubeos/os:1", "abc", "check_sum must be the image digest"),
        (f"127.0.0.1:5000/kubeos/os@sha256:{'1' * 64}", "2" * 64, "pins sha256"),
    ],
)
def test_bad_requests_touch_nothing(
    node: Node, ctd: Containerd, registry: Registry, ref: str, digest: str, match: str
) -> None:
    _fails(node, ctd, source(ctd, registry.hosts_dir), creq(ref, digest), InvalidRequestError,
           match)


# --- crash: SIGKILL while the image is pulled and mounted; the next start cleans up ---------------

_CRASHER = """
import sys, time
from pathlib import Path
from kubeos.agent.boot.manager import BootManager
from kubeos.agent.hostpaths import HostPaths
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.upgrade.containerd import ContainerdSource
from kubeos.agent.upgrade.target import StagingTarget

root, mountinfo, address, hosts, ref, digest = sys.argv[1:]
paths = HostPaths(root=Path(root), mountinfo=Path(mountinfo))
layout = BootManager(paths).layout()
slot = layout.inactive

def begin_write() -> None:
    print("mounted", flush=True)
    time.sleep(3600)  # killed here: image pulled, snapshot mounted, slot not yet written

target = StagingTarget(slot=slot, partition=layout.slots[slot], mount_dir=paths.mount_dir,
                       certs_dir=paths.certs, mountinfo=paths.mountinfo, begin_write=begin_write)
src = ContainerdSource(address=address, hosts_dir=Path(hosts), crictl=None)
src.stage(UpgradeRequest(version="", image_type="containerd", container_image=ref,
                         check_sum=digest), target)
"""


def test_crash_leftovers_removed_on_next_start(
    node: Node, ctd: Containerd, registry: Registry, images: Images
) -> None:
    before = node.grubenv_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(node.root), str(node.paths.mountinfo),
         ctd.address, str(registry.hosts_dir), images.os_tar, images.os_tar_digest],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "mounted"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = node.paths.state_dir
    journal = json.loads((state / JOURNAL).read_text())
    assert {e["kind"] for e in journal} == {"image", "mount"}
    assert is_mount_point(state / IMAGE_MOUNT)
    assert ctd.store()["images"] == [images.os_tar]

    agent_for(node, source(ctd, registry.hosts_dir))  # the next start: AgentService.start()
    assert_left_nothing(node, ctd)
    assert node.grubenv_bytes() == before


def test_recover_keeps_a_preexisting_image_and_survives_a_dead_containerd(
    node: Node, ctd: Containerd, registry: Registry, images: Images
) -> None:
    """recover() removes only what the journal names; with containerd unreachable it logs,
    keeps the journal for the next try, and the agent still starts."""
    ctd.ctr("images", "pull", "--hosts-dir", str(registry.hosts_dir), images.rootfs)
    state = node.paths.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / JOURNAL).write_text(json.dumps([{"kind": "image", "name": images.os_tar}]))
    dead = ContainerdSource(address=str(node.tmp / "no.sock"), crictl=None)
    agent_for(node, dead)  # must not raise
    assert (state / JOURNAL).exists()
    removed = source(ctd, registry.hosts_dir).recover(state)
    assert removed == [f"image {images.os_tar}"]  # absent already: nothing to remove, entry gone
    assert ctd.store()["images"] == [images.rootfs]
    assert not (state / JOURNAL).exists()
