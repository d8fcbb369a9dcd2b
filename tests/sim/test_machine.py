"""A simulated machine without a cluster: the real agent on directory slots, GRUB re-enacted.

These check the pieces the fleet rests on, fast: staging a rootfs tar into a directory slot
over HTTPS, the trial boot and commit, a failed trial falling back to ``saved_entry``, and a bad
image stopping at the agent's checksum check.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from kubeos.agent.boot.dirslots import DirectorySlots
from kubeos.agent.boot.grubenv import read_grubenv
from kubeos.agent.errors import AgentRpcError
from kubeos.sim.imageserver import CA_FILE, ImageServer, sha256_of
from kubeos.sim.machine import MachineFaults, SimMachine
from kubeos.sim.rootfs import make_root_tree, make_rootfs_tar


@pytest.fixture
def images(tmp_path: Path) -> Iterator[ImageServer]:
    with ImageServer(tmp_path / "srv") as server:
        yield server


@pytest.fixture
def image(tmp_path: Path, images: ImageServer) -> tuple[str, str]:
    tar = make_rootfs_tar(make_root_tree(tmp_path / "tree", "2.0.0"), tmp_path / "v2.tar")
    return images.publish(tar), sha256_of(tar)


def _request(url: str, checksum: str) -> dict[str, object]:
    return {"version": "2.0.0", "image_type": "disk", "image_url": url, "check_sum": checksum,
            "flag_safe": False, "mtls": False,
            "certs": {"ca_cert": CA_FILE, "client_cert": "", "client_key": ""}}


async def _machine(tmp_path: Path, images: ImageServer, faults: MachineFaults | None = None
                   ) -> SimMachine:
    machine = SimMachine("n1", tmp_path / "n1", faults=faults, reboot_pause=0.0)
    machine.install("1.0.0", images.ca_pem)
    await machine.start()
    return machine


@pytest.fixture
async def stop_later() -> AsyncIterator[list[SimMachine]]:
    machines: list[SimMachine] = []
    yield machines
    for machine in machines:
        await machine.stop()


async def _wait_boot(machine: SimMachine, count: int) -> None:
    for _ in range(200):
        if machine.boots >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no reboot #{count}: {machine.reboots}")


def test_directory_layout_reads_the_booted_slot_from_the_command_line(tmp_path: Path) -> None:
    machine = SimMachine("n1", tmp_path / "n1")
    machine.install("1.0.0")
    layout = DirectorySlots(machine.disk).layout()
    assert layout.booted == "A" and layout.inactive == "B"
    assert all(part.directory for part in layout.slots.values())


async def test_upgrade_trial_boot_and_commit(tmp_path: Path, images: ImageServer,
                                             image: tuple[str, str],
                                             stop_later: list[SimMachine]) -> None:
    machine = await _machine(tmp_path, images)
    stop_later.append(machine)
    agent = machine.client()
    staged = await agent.call("prepare_upgrade", [_request(*image)])
    assert staged["slot"] == "B" and staged["version"] == "2.0.0"
    await agent.call("upgrade", [{"version": "2.0.0"}])
    await _wait_boot(machine, 1)
    assert machine.booted_slot == "B" and machine.os_image() == "KubeOS 2.0.0"
    status = await machine.client().call("status", [])
    assert status["trial_slot"] == "B" and status["committed_slot"] == "A"
    await machine.client().call("commit", [])
    env = read_grubenv(machine.paths.grubenv).as_dict()
    assert env.get("saved_entry") == "B" and not env.get("boot_trial")


async def test_failed_trial_boot_comes_back_on_saved_entry(
    tmp_path: Path, images: ImageServer, image: tuple[str, str], stop_later: list[SimMachine]
) -> None:
    machine = await _machine(tmp_path, images, MachineFaults(failed_boots=1))
    stop_later.append(machine)
    await machine.client().call("prepare_upgrade", [_request(*image)])
    await machine.client().call("upgrade", [{"version": "2.0.0"}])
    await _wait_boot(machine, 1)
    assert machine.booted_slot == "A" and machine.os_image() == "KubeOS 1.0.0"
    status = await machine.client().call("status", [])
    assert "trial boot of slot B failed" in status["last_error"]
    assert read_grubenv(machine.paths.grubenv).as_dict().get("kubeos_rollback") == "B"


async def test_bad_image_fails_the_checksum(tmp_path: Path, images: ImageServer,
                                            image: tuple[str, str],
                                            stop_later: list[SimMachine]) -> None:
    machine = await _machine(tmp_path, images, MachineFaults(bad_image=True))
    stop_later.append(machine)
    with pytest.raises(AgentRpcError, match=r"(?i)checksum|sha256"):
        await machine.client().call("prepare_upgrade", [_request(*image)])
    assert machine.booted_slot == "A"


def test_os_agent_boot_check_takes_the_directory_layout(tmp_path: Path) -> None:
    """``os-agent boot-check --layout dir``: a trial of B while A is booted is recorded."""
    from kubeos.agent.boot.grubenv import edit_grubenv
    from kubeos.agent.cli import main

    machine = SimMachine("n1", tmp_path / "n1")
    machine.install("1.0.0", previous="2.0.0")
    edit_grubenv(machine.paths.grubenv, {"boot_trial": "B"})
    assert main(["boot-check", "--root", str(machine.root), "--layout", "dir"]) == 0
    env = read_grubenv(machine.paths.grubenv).as_dict()
    assert env.get("kubeos_rollback") == "B" and not env.get("boot_trial")
