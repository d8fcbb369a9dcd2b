"""Automatic returns to A without anyone asking: a B that cannot boot, and a B never committed."""

from __future__ import annotations

import pytest

from tests.vm import scenario
from tests.vm.conftest import MakeVm, Timer
from tests.vm.images import BROKEN_VERSION, Images

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

COMMIT_WINDOW = 60.0  # tests/vm/guest/vmtest.conf


def test_broken_b_falls_back_to_a_by_itself(images: Images, make_vm: MakeVm) -> None:
    """B's init exits: the kernel panics, ``panic=`` reboots, and GRUB boots ``saved_entry`` (A)
    because the one-shot ``next_entry`` was consumed before B was tried."""
    t = Timer("broken B -> A")
    machine = make_vm("broken", images.broken)
    boot_a, _ = scenario.boot(machine, version="1.0.0")
    t.step("boot A")
    scenario.stage(machine, images.broken)
    t.step("prepare_upgrade (broken B)")
    answer = scenario.switch(machine, "upgrade", BROKEN_VERSION)
    assert answer["slot"] == "B", answer
    back, status = scenario.boot(machine, version="1.0.0", not_boot=boot_a.boot_id)
    t.step(f"upgrade -> B panics -> GRUB boots A (guest uptime {back.uptime:.0f} s)")
    log = machine.serial_text()
    assert "Booting `KubeOS-B'" in log, machine.serial_tail()
    assert "Attempted to kill init" in log, machine.serial_tail()
    assert log.rindex("Booting `KubeOS-A'") > log.rindex("Booting `KubeOS-B'")
    assert status["booted_slot"] == "A" and status["trial_slot"] is None, status
    assert "trial boot of slot B failed" in (status["last_error"] or ""), status
    env = scenario.grubenv(machine)
    assert env.get("kubeos_rollback") == "B" and not env.get("next_entry"), env
    assert env.get("saved_entry", "A") in ("", "A"), env
    t.done()


def test_uncommitted_b_returns_to_a_after_the_window(images: Images, make_vm: MakeVm) -> None:
    """B boots fine but nobody commits: when the window ends the agent clears the trial and
    reboots, and GRUB boots the committed A."""
    t = Timer("no commit -> A")
    machine = make_vm("nocommit", images.v2)
    boot_a, _ = scenario.boot(machine, version="1.0.0")
    t.step("boot A")
    scenario.stage(machine, images.v2)
    t.step("prepare_upgrade")
    scenario.switch(machine, "upgrade", "2.0.0")
    boot_b, status = scenario.boot(machine, version="2.0.0", not_boot=boot_a.boot_id)
    t.step("upgrade + reboot into B")
    assert status["booted_slot"] == "B" and status["trial_slot"] == "B", status
    assert status["commit_deadline"], status
    back, status = scenario.boot(machine, version="1.0.0", not_boot=boot_b.boot_id,
                                 timeout=COMMIT_WINDOW + scenario.BOOT_TIMEOUT)
    t.step(f"commit window ({COMMIT_WINDOW:.0f} s) expires -> reboot into A "
           f"(guest uptime {back.uptime:.0f} s)")
    assert status["booted_slot"] == "A" and status["trial_slot"] is None, status
    assert "not committed within the commit window" in (status["last_error"] or ""), status
    env = scenario.grubenv(machine)
    assert env.get("kubeos_rollback") == "B", env
    assert env.get("saved_entry", "A") in ("", "A"), env
    t.done()
