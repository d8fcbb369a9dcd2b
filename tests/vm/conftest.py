"""Fixtures of the vm tier: the kbimg-built images, one qemu per scenario, timings.

Every test here boots real firmware (OVMF), GRUB and the image's kernel and systemd under qemu,
so it is marked ``vm`` and left out of the default run (``pyproject.toml``). Run it with
``.venv/bin/python -m pytest -m vm -s`` (docs/vm-tests.md).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

from kubeos.sim import vm
from tests.vm.images import Images, Payload, build_images

HOST_TOOLS = ("mmdebstrap", "sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "grub-mkimage",
              "qemu-img")

_timings: list[tuple[str, str, float]] = []


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "kbimg's from_debian (mmdebstrap --mode=root) needs root"
    missing = vm.missing_tools() + [t for t in HOST_TOOLS if shutil.which(t) is None]
    if missing:
        return f"missing {', '.join(missing)} (run hack/setup.sh)"
    return None


@pytest.fixture(scope="session")
def images() -> Images:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    imgs = build_images()
    _timings.append(("images", "build (or cache)", imgs.build_seconds))
    return imgs


class Timer:
    """Per-scenario step timings, printed as they happen and summarised at the end."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario
        self.started = time.monotonic()
        self.last = self.started

    def step(self, name: str) -> None:
        now = time.monotonic()
        _timings.append((self.scenario, name, now - self.last))
        print(f"[vm {self.scenario}] {name}: {now - self.last:.1f} s "
              f"(total {now - self.started:.1f} s)", flush=True)
        self.last = now

    def done(self) -> None:
        total = time.monotonic() - self.started
        _timings.append((self.scenario, "TOTAL", total))
        print(f"[vm {self.scenario}] TOTAL {total:.1f} s", flush=True)


MakeVm = Callable[[str, Payload], vm.Vm]


@pytest.fixture(scope="module")
def make_vm(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeVm]:
    """Start a VM on a fresh overlay of the v1 disk with ``payload`` attached; every VM started
    through it is killed at the end of the module (module scope: a scenario may span tests)."""
    started: list[vm.Vm] = []
    accel = vm.pick_accel(tmp_path_factory.mktemp("accel-probe"))

    def make(name: str, payload: Payload) -> vm.Vm:
        work = tmp_path_factory.mktemp(name)
        spec = vm.VmSpec(workdir=work, disk=vm.overlay_disk(images.disk, work / "disk.qcow2"),
                         payload=payload.path, accel=accel)
        machine = vm.Vm(spec)
        started.append(machine)
        return machine.start()

    yield make
    for machine in started:
        machine.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _timings:
        return
    terminalreporter.section("vm tier timings (wall clock)")
    for scenario, step, seconds in _timings:
        terminalreporter.write_line(f"{scenario:<24} {step:<44} {seconds:7.1f} s")
