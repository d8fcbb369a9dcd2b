"""The qemu command line of ``kubeos.sim.vm`` without booting anything (default tier).

These are the properties the vm scenarios rely on and that a careless edit would break
silently: no guest NIC, fixed PCI addresses with ``bootindex=0`` (reused OVMF VARS with a
moved disk drop into the UEFI shell), a read-only payload disk, an explicit accelerator.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeos.sim import vm


def _spec(tmp_path: Path, payload: Path | None = None) -> vm.VmSpec:
    return vm.VmSpec(workdir=tmp_path, disk=tmp_path / "disk.qcow2", payload=payload)


def _options(argv: list[str]) -> list[tuple[str, str]]:
    return [(argv[i], argv[i + 1]) for i in range(1, len(argv) - 1) if argv[i].startswith("-")]


def test_argv_has_no_network_and_a_fixed_boot_disk(tmp_path: Path) -> None:
    opts = _options(_spec(tmp_path).argv())
    assert ("-nic", "none") in opts
    assert ("-accel", "tcg") in opts
    assert ("-device", "virtio-blk-pci,drive=disk0,addr=0x5,bootindex=0") in opts
    assert ("-device", f"virtserialport,chardev=agent,name={vm.CHANNEL_NAME}") in opts
    assert not any(o == "-netdev" for o, _ in opts)
    assert ("-chardev", f"file,id=ser0,path={tmp_path / 'serial.log'}") in opts


def test_payload_disk_is_read_only_with_its_serial(tmp_path: Path) -> None:
    argv = _spec(tmp_path, payload=tmp_path / "kubeos.tar").argv()
    drives = [v for o, v in _options(argv) if o == "-drive" and "id=payload" in v]
    assert drives == [f"file={tmp_path / 'kubeos.tar'},format=raw,if=none,id=payload,"
                      "readonly=on"]
    assert f"serial={vm.PAYLOAD_SERIAL}" in " ".join(argv)


def test_accel_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBEOS_VM_ACCEL", "tcg")
    assert vm.pick_accel(tmp_path) == "tcg"


def test_a_stalled_warm_reset_is_recognised_only_after_silence(tmp_path: Path) -> None:
    """The power-cycle trigger: the kernel's last words are "Restarting system" and the
    console stays silent; a guest that is up and quiet, or still writing, never triggers it."""
    machine = vm.Vm(_spec(tmp_path))
    log = machine.spec.serial_log
    log.write_bytes(b"[   80.7] os-agent: rebooting\r\n\x1b[0;1;31mFAILED\x1b[0m unmounting\r\n"
                    b"[   82.9] reboot: Restarting system\r\n")
    assert not machine.reset_stalled(stall=0.0)  # first look: the size is new
    assert machine.reset_stalled(stall=0.0)
    assert not machine.reset_stalled(stall=3600.0)  # not silent for long enough
    with log.open("ab") as out:
        out.write(b"\x1b[=3h\x1b[=3hBdsDxe: loading Boot0001\r\n")
    assert not machine.reset_stalled(stall=0.0)  # the firmware is talking
    assert not machine.reset_stalled(stall=0.0)  # ...and its line is not the kernel's
    log.write_bytes(b"vm login: [   19.8] os-agent listening\r\n")
    machine.reset_stalled(stall=0.0)
    assert not machine.reset_stalled(stall=0.0)  # an idle, booted guest
