"""Steps shared by the vm scenarios: boot, ask the agent, stage, switch, check the guest.

Every check reads what the *booted guest* reports: the agent's ``status`` over the virtio
channel, ``/proc/cmdline``, os-release, /proc/sys and the grubenv read through the test bridge,
and GRUB's and the kernel's lines in the serial log.
"""

from __future__ import annotations

from typing import Any

from kubeos.sim import vm
from tests.vm.images import Payload

GRUBENV = "/boot/efi/EFI/openEuler/grubenv"
BOOT_TIMEOUT = 300.0  # one TCG boot is 45-60 s here; a fallback is two boots plus a panic
PREPARE_TIMEOUT = 900.0


def boot(machine: vm.Vm, *, version: str, not_boot: str | None = None,
         timeout: float = BOOT_TIMEOUT) -> tuple[vm.Boot, dict[str, Any]]:
    """Wait for the next boot and its agent; check it runs ``version``."""
    booted = machine.wait_boot(timeout=timeout, not_boot=not_boot)
    if booted.pretty_name != f"KubeOS {version}":
        raise machine.fail(f"booted {booted.pretty_name!r}, expected KubeOS {version}")
    status = machine.wait_agent()
    return booted, status


def grubenv(machine: vm.Vm) -> dict[str, str]:
    text = machine.read(GRUBENV)
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


def root_partuuid(booted: vm.Boot) -> str:
    for token in booted.cmdline.split():
        if token.startswith("root=PARTUUID="):
            return token.removeprefix("root=PARTUUID=").lower()
    raise AssertionError(f"no root=PARTUUID= in {booted.cmdline!r}")


def stage(machine: vm.Vm, payload: Payload) -> dict[str, Any]:
    """``prepare_upgrade`` from the payload disk, served on guest loopback (see the bridge)."""
    request = {
        "version": payload.version,
        "image_type": "disk",
        "image_url": payload.url,
        "check_sum": payload.sha256,
        "flag_safe": True,  # plain http, and only on the guest's own loopback
        "mtls": False,
        "certs": {"ca_cert": "", "client_cert": "", "client_key": ""},
    }
    try:
        result: dict[str, Any] = machine.rpc("prepare_upgrade", [request],
                                             timeout=PREPARE_TIMEOUT)
    except vm.VmError as exc:
        raise machine.fail(f"{exc}\n--- agent journal ---\n{machine.journal()}") from None
    return result


def switch(machine: vm.Vm, method: str, version: str) -> dict[str, Any]:
    """``upgrade`` or ``rollback``; the agent answers, then reboots the guest."""
    result: dict[str, Any] = machine.rpc(method, [{"version": version}])
    return result


def count(machine: vm.Vm, needle: str) -> int:
    return machine.serial_text().count(needle)
