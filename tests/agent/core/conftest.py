"""Fixtures: PKI, a sandbox node (GPT disk on a loop device + sandbox root), agent factory."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubeos.agent.boot.grubenv import GrubEnv, read_grubenv, write_grubenv
from kubeos.agent.hostpaths import HostPaths
from kubeos.agent.service import AgentService

from .support import (
    PKI,
    LoopDisk,
    loop_devices_work,
    loop_disk,
    make_root_tree,
    mkfs_ext4,
    mkfs_vfat,
)

LAYOUT = [("BOOT", 8), ("ROOT-A", 40), ("ROOT-B", 40), ("PERSIST", 8)]


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI.create()


@dataclass
class Node:
    """A sandbox node: real disk partitions, a sandbox root standing in for the booted slot."""

    tmp: Path
    disk: LoopDisk
    root: Path
    paths: HostPaths
    pki: PKI
    reboots: list[str] = field(default_factory=list)
    restarts: list[str] = field(default_factory=list)
    services: list[AgentService] = field(default_factory=list)

    def boot(self, slot: str, version: str) -> None:
        """Pretend the machine booted ``slot``: mountinfo names its partition, the sandbox root
        shows its os-release."""
        devno = self.disk.partition_devno(f"ROOT-{slot}")
        self.paths.mountinfo.write_text(
            f"22 1 {devno} / / ro,relatime shared:1 - ext4 /dev/root ro\n"
            "23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw\n"
        )
        make_root_tree(self.root, version)

    def grub(self) -> str:
        """Re-enact grub.cfg of the boot contract (with grub-editenv as GRUB's save_env): which
        slot boots next; a one-shot next_entry becomes boot_trial and is cleared."""
        env = self.env()
        default = env.get("saved_entry") or "A"
        nxt = env.get("next_entry")
        if nxt:
            subprocess.run(
                [
                    "grub-editenv",
                    str(self.paths.grubenv),
                    "set",
                    f"boot_trial={nxt}",
                    "next_entry=",
                ],
                check=True,
            )
            return nxt
        return default

    def env(self) -> dict[str, str]:
        return read_grubenv(self.paths.grubenv).as_dict()

    def grubenv_bytes(self) -> bytes:
        return self.paths.grubenv.read_bytes()

    def agent(self, *, commit_window: float = 600.0, start: bool = True) -> AgentService:
        service = AgentService(
            self.paths,
            commit_window=commit_window,
            reboot=self.reboots.append,
            restart_service=self.restarts.append,
            reboot_delay=0.0,
        )
        self.services.append(service)
        if start:
            service.start()
        return service

    def wait_reboot(self, count: int = 1, timeout: float = 10.0) -> None:
        ev = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if len(self.reboots) >= count:
                return
            ev.wait(0.05)
        raise AssertionError(f"expected {count} reboot(s), got {self.reboots}")


@pytest.fixture
def node(tmp_path: Path, pki: PKI) -> Iterator[Node]:
    if not loop_devices_work():
        pytest.skip("needs root and loop devices")
    with loop_disk(tmp_path / "disk.img", LAYOUT) as disk:
        mkfs_vfat(disk.parts["BOOT"], "BOOT")
        tree_a = make_root_tree(tmp_path / "tree-a", "1.0.0")
        mkfs_ext4(disk.parts["ROOT-A"], "ROOT-A", tree_a)
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
        try:
            yield n
        finally:
            for s in n.services:
                s.close()
