"""Disk-image upgrade A -> B with settings carried over, commit, then rollback to A.

One VM for the module: the rollback starts where the committed upgrade left the node, as it
would on a real node. ``-k upgrade_a_to_b`` runs the upgrade alone (the CI hook).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from kubeos.sim import vm
from tests.vm import scenario
from tests.vm.conftest import MakeVm, Timer
from tests.vm.images import Images

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

SYSCTL_FILE = "/etc/sysctl.d/90-vmtest.conf"
SWAPPINESS = "17"  # Debian's default is 60
CMDLINE_KEY = "kubeos.vmtest"
CMDLINE_VALUE = "next-1"


@dataclass
class Upgraded:
    machine: vm.Vm
    boot: vm.Boot


def settings_request() -> dict[str, Any]:
    """Settings made on version 1 that version 2 must show: a persistent sysctl (lives in the
    /etc overlay on /persist) and a kernel parameter for the *next* slot's boot entry."""
    return {"version": "vmtest-1", "configs": [
        {"model": "kernel.sysctl.persist", "config_path": SYSCTL_FILE,
         "contents": {"vm.swappiness": {"value": SWAPPINESS, "operation": ""}}},
        {"model": "grub.cmdline.next", "config_path": "",
         "contents": {CMDLINE_KEY: {"value": CMDLINE_VALUE, "operation": ""}}},
    ]}


@pytest.fixture(scope="module")
def upgraded(images: Images, make_vm: MakeVm) -> Upgraded:
    t = Timer("upgrade A->B")
    machine = make_vm("upgrade", images.v2)
    boot_a, status = scenario.boot(machine, version="1.0.0")
    t.step(f"boot A (v1; guest uptime {boot_a.uptime:.0f} s at bridge)")
    assert status["booted_slot"] == "A", status
    assert scenario.root_partuuid(boot_a) == images.partuuids["ROOT-A"]
    assert CMDLINE_KEY not in boot_a.cmdline

    configured = machine.rpc("configure", [settings_request()])
    assert configured["status"] == "Configured", configured
    t.step("configure sysctl.persist + grub.cmdline.next")

    staged = scenario.stage(machine, images.v2)
    assert staged["status"] == "UpgradeReady" or staged.get("slot") == "B", staged
    status = machine.rpc("status")
    assert {s["name"]: s["version"] for s in status["slots"]}["B"] == "2.0.0", status
    t.step(f"prepare_upgrade ({images.v2.size >> 20} MiB tar over guest loopback)")

    answer = scenario.switch(machine, "upgrade", "2.0.0")
    assert answer["slot"] == "B", answer
    boot_b, status = scenario.boot(machine, version="2.0.0", not_boot=boot_a.boot_id)
    t.step(f"upgrade + reboot into B (guest uptime {boot_b.uptime:.0f} s)")
    assert status["booted_slot"] == "B", status
    assert status["trial_slot"] == "B" and status["commit_deadline"], status
    assert scenario.root_partuuid(boot_b) == images.partuuids["ROOT-B"]
    assert f"{CMDLINE_KEY}={CMDLINE_VALUE}" in boot_b.cmdline.split(), boot_b.cmdline
    assert machine.read("/proc/sys/vm/swappiness").strip() == SWAPPINESS
    assert f"vm.swappiness={SWAPPINESS}" in machine.read(SYSCTL_FILE)

    committed = machine.rpc("commit")
    assert committed["slot"] == "B", committed
    status = machine.rpc("status")
    assert status["committed_slot"] == "B" and status["trial_slot"] is None, status
    env = scenario.grubenv(machine)
    assert env.get("saved_entry") == "B" and not env.get("boot_trial"), env
    t.step("checks + commit")
    t.done()
    return Upgraded(machine, boot_b)


def test_upgrade_a_to_b_with_settings_and_commit(upgraded: Upgraded) -> None:
    """All checks run in the fixture (shared with the rollback); this records the verdict."""
    assert upgraded.boot.pretty_name == "KubeOS 2.0.0"


def test_rollback_to_a(upgraded: Upgraded, images: Images) -> None:
    t = Timer("rollback B->A")
    machine = upgraded.machine
    answer = scenario.switch(machine, "rollback", "1.0.0")
    assert answer["slot"] == "A", answer
    boot_a, status = scenario.boot(machine, version="1.0.0", not_boot=upgraded.boot.boot_id)
    t.step(f"rollback + reboot into A (guest uptime {boot_a.uptime:.0f} s)")
    assert status["booted_slot"] == "A", status
    assert scenario.root_partuuid(boot_a) == images.partuuids["ROOT-A"]
    # A is a trial of the old slot (saved_entry is still B) until it is committed
    assert status["trial_slot"] == "A", status
    committed = machine.rpc("commit")
    assert committed["slot"] == "A", committed
    env = scenario.grubenv(machine)
    assert env.get("saved_entry") == "A" and not env.get("boot_trial"), env
    # the persistent sysctl is still there on the old slot: it lives on /persist
    assert machine.read("/proc/sys/vm/swappiness").strip() == SWAPPINESS
    t.step("checks + commit")
    t.done()
