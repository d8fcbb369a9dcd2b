"""Where the agent finds and keeps things on the host, all under one configurable root.

``--root`` maps every file path (grubenv, certificates, /persist, /run) under a directory so
the agent can run against a sandbox; block devices are still found through ``sysfs``/``devfs``
and the booted root through ``mountinfo``, which tests point at real loop devices and a
prepared mountinfo file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

GRUBENV = "boot/efi/EFI/openEuler/grubenv"


@dataclass(frozen=True)
class HostPaths:
    root: Path = Path("/")
    sysfs: Path = Path("/sys")
    devfs: Path = Path("/dev")
    mountinfo: Path = Path("/proc/self/mountinfo")
    grubenv_path: str = GRUBENV

    def _under(self, rel: str) -> Path:
        return self.root / rel

    @property
    def socket(self) -> Path:
        return self._under("run/os-agent/os-agent.sock")

    @property
    def grubenv(self) -> Path:
        return self._under(self.grubenv_path.lstrip("/"))

    @property
    def certs(self) -> Path:
        return self._under("etc/KubeOS/certs")

    @property
    def persist(self) -> Path:
        return self._under("persist")

    @property
    def state_dir(self) -> Path:
        """Agent state that must survive reboots (staged image, last error, write marker)."""
        return self._under("persist/os-agent")

    @property
    def mount_dir(self) -> Path:
        """Where the inactive slot is mounted while it is filled or inspected."""
        return self.state_dir / "mnt"

    @property
    def run_dir(self) -> Path:
        """State that must not survive a reboot (the commit deadline of a trial boot)."""
        return self._under("run/os-agent")
