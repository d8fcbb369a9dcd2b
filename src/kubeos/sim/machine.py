"""A simulated machine: the real os-agent on a file-backed A/B disk, and its reboots.

Why in-process: 200 nodes on 2 cores cannot each have a loop device, a mount and a Python
process. The agent is a library (:class:`~kubeos.agent.service.AgentService` behind the real
JSON-RPC server on the node's own unix socket), with the directory slot layout
(``<root>/sim-disk/ROOT-A|B``, see :mod:`kubeos.agent.boot.dirslots`); every agent shares this
process's event loop. What the machine adds is what firmware and GRUB do on a reboot, per
``docs/boot-contract.md``: a one-shot ``next_entry`` becomes ``boot_trial`` and is booted; a
trial that panics comes back on ``saved_entry``; ``/run`` is emptied; the agent starts again
(its boot check runs) and the kubelet reports the booted slot's os-release.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from kubeos.agent.boot.dirslots import CMDLINE, DISK_DIR, LAYOUT_DIR, slot_dir
from kubeos.agent.boot.grubenv import GrubEnv, read_grubenv, write_grubenv
from kubeos.agent.client import AsyncAgentClient
from kubeos.agent.hostpaths import HostPaths
from kubeos.agent.messages import UpgradeRequest
from kubeos.agent.rpc.server import RpcServer
from kubeos.agent.service import AgentService
from kubeos.agent.upgrade.disk import DiskImageSource
from kubeos.agent.upgrade.sources import UpgradeSource
from kubeos.agent.upgrade.target import StagedImage, StagingTarget
from kubeos.sim.imageserver import CA_FILE
from kubeos.sim.kubelet import KubeletStandIn, os_image_from_os_release
from kubeos.sim.rootfs import make_root_tree

log = logging.getLogger(__name__)

# Called after every boot with (node name, booted slot, osImage).
BootListener = Callable[[str, str, str], None]


class CorruptDownload:
    """The ``disk`` source, but the node "receives" other bytes than were published.

    Simulates a bad image (a corrupted mirror, a wrong checksum in the CR) on one node: the
    agent's real streaming check then fails with its real checksum-mismatch error.
    """

    image_type = "disk"

    def __init__(self) -> None:
        self._disk = DiskImageSource()

    def validate(self, request: UpgradeRequest) -> None:
        self._disk.validate(request)

    def stage(self, request: UpgradeRequest, target: StagingTarget) -> StagedImage:
        wrong = "0" * 64 if request.check_sum != "0" * 64 else "1" * 64
        return self._disk.stage(dataclasses.replace(request, check_sum=wrong), target)


class CountedDownloads:
    """Wraps a source and counts its downloads (``stage`` calls) per image URL: a chaos run
    checks that a node fetched its image once, however often its proxy was restarted."""

    image_type = "disk"

    def __init__(self, inner: DiskImageSource | CorruptDownload, counts: dict[str, int]) -> None:
        self._inner = inner
        self.counts = counts

    def validate(self, request: UpgradeRequest) -> None:
        self._inner.validate(request)

    def stage(self, request: UpgradeRequest, target: StagingTarget) -> StagedImage:
        key = str(request.image_url)
        self.counts[key] = self.counts.get(key, 0) + 1
        return self._inner.stage(request, target)


@dataclasses.dataclass
class MachineFaults:
    """What goes wrong on this machine: counts are used up one per occurrence."""

    bad_image: bool = False
    failed_boots: int = 0  # trial boots that panic (GRUB then boots saved_entry)
    lost_reboots: int = 0  # reboot requests the host drops (a `systemctl reboot` never done)


class SimMachine:
    """One node's disk, agent and boot loop. ``await start()``, ``await stop()``."""

    def __init__(
        self,
        name: str,
        work: Path,
        *,
        commit_window: float = 120.0,
        faults: MachineFaults | None = None,
        kubelet: KubeletStandIn | None = None,
        on_boot: BootListener | None = None,
        reboot_pause: float = 0.2,
    ) -> None:
        self.name = name
        self.work = work
        self.root = work / "root"
        self.disk = self.root / DISK_DIR
        self.paths = HostPaths(root=self.root)
        self.socket = work / "agent.sock"
        self.commit_window = commit_window
        self.faults = faults or MachineFaults()
        self.on_boot = on_boot
        self.kubelet = kubelet
        self.reboot_pause = reboot_pause
        self.reboots: list[str] = []  # reasons of the reboots performed
        self.reboot_requests = 0  # how often the agent asked for a reboot (lost ones included)
        self.downloads: dict[str, int] = {}  # image URL -> times the agent fetched it
        self.boots = 0  # reboots completed (agent serving again)
        self.booted_slot = ""
        self.service: AgentService | None = None
        self._server: RpcServer | None = None
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._loop_task: asyncio.Task[None] | None = None
        self._reports: set[asyncio.Task[None]] = set()

    # -- installation ----------------------------------------------------------------------

    def install(self, version: str, ca_pem: bytes | None = None,
                previous: str | None = None) -> None:
        """A fresh node: KubeOS *version* in slot A (committed); slot B empty, or holding
        *previous* (a node upgraded before, which a rollback can go back to)."""
        make_root_tree(slot_dir(self.disk, "A"), version)
        slot_dir(self.disk, "B").mkdir(parents=True, exist_ok=True)
        if previous:
            make_root_tree(slot_dir(self.disk, "B"), previous)
        env = GrubEnv()
        env.set("saved_entry", "A")
        write_grubenv(self.paths.grubenv, env)
        # the host's /etc as settings find it (sysctl.conf and sysctl.d exist on every node)
        (self.root / "etc" / "sysctl.d").mkdir(parents=True, exist_ok=True)
        (self.root / "etc" / "sysctl.conf").touch()
        if ca_pem is not None:
            self.install_ca(ca_pem)
        self._power_on("A")

    def install_ca(self, ca_pem: bytes) -> None:
        """Put the image server's CA into ``/etc/KubeOS/certs`` (what the CR's cacert names)."""
        self.paths.certs.mkdir(parents=True, exist_ok=True)
        (self.paths.certs / CA_FILE).write_bytes(ca_pem)

    def _power_on(self, slot: str) -> None:
        """Firmware and kernel: boot *slot*; /run starts empty."""
        shutil.rmtree(self.paths.run_dir, ignore_errors=True)
        (self.disk / CMDLINE).write_text(f"BOOT_IMAGE=/boot/vmlinuz root=LABEL=ROOT-{slot} ro\n")
        self.booted_slot = slot

    def os_image(self) -> str:
        """What the kubelet reports: PRETTY_NAME of the booted slot's os-release."""
        return os_image_from_os_release(slot_dir(self.disk, self.booted_slot)
                                        / "usr" / "lib" / "os-release")

    def client(self) -> AsyncAgentClient:
        return AsyncAgentClient(self.socket, connect_timeout=2.0, call_timeout=20.0,
                                operation_timeout=300.0)

    # -- running ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._start_agent()
        self._loop_task = asyncio.create_task(self._reboot_loop(), name=f"machine-{self.name}")

    async def stop(self) -> None:
        for task in list(self._reports):
            task.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(BaseException):
                await self._loop_task
            self._loop_task = None
        await self._stop_agent()

    async def _start_agent(self) -> None:
        loop = asyncio.get_running_loop()
        pending = self._pending

        def on_reboot(reason: str) -> None:  # called from the agent's reboot thread
            self.reboot_requests += 1
            if self.faults.lost_reboots > 0:
                self.faults.lost_reboots -= 1
                log.info("%s: the reboot request (%s) is lost", self.name, reason)
                return
            loop.call_soon_threadsafe(pending.put_nowait, reason)

        # reboot_delay: the answer to upgrade/rollback must leave before the socket closes
        inner = CorruptDownload() if self.faults.bad_image else DiskImageSource()
        sources: dict[str, UpgradeSource] = {"disk": CountedDownloads(inner, self.downloads)}
        service = AgentService(self.paths, commit_window=self.commit_window, reboot=on_reboot,
                               restart_service=None, reboot_delay=0.2, sources=sources,
                               layout=LAYOUT_DIR)
        await asyncio.to_thread(service.start)
        server = RpcServer(service.rpc_methods(), self.socket)
        await server.start()
        self.service, self._server = service, server

    async def _stop_agent(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.close()
            self._server = None
        if self.service is not None:
            self.service.close()
            self.service = None

    async def _reboot_loop(self) -> None:
        while True:
            reason = await self._pending.get()
            while not self._pending.empty():  # a host goes down once, however often asked
                reason = self._pending.get_nowait()
            try:
                await self.reboot(reason)
            except Exception:
                log.exception("%s: reboot failed", self.name)

    async def reboot(self, reason: str) -> None:
        """Agent stops, GRUB picks a slot (trial or fallback), agent starts, kubelet reports."""
        self.reboots.append(reason)
        if self.kubelet is not None:
            # reported in the background: a host goes down whether or not the API server
            # hears about it (its status write is retried until it does)
            down = asyncio.create_task(self.kubelet.set_ready(self.name, False),
                                       name=f"notready-{self.name}")
            self._reports.add(down)
            down.add_done_callback(self._report_done)
        await self._stop_agent()
        await asyncio.sleep(self.reboot_pause)
        slot = self._grub()
        saved = self._saved()
        if slot != saved and self.faults.failed_boots > 0:
            self.faults.failed_boots -= 1
            log.info("%s: the trial kernel in slot %s panics; GRUB boots %s", self.name, slot,
                     saved)
            slot = saved
        self._power_on(slot)
        await self._start_agent()
        if self.kubelet is not None:
            await self.kubelet.set_os_image(self.name, self.os_image())
            await self.kubelet.set_ready(self.name, True)
        self.boots += 1
        if self.on_boot is not None:
            self.on_boot(self.name, slot, self.os_image())

    def _report_done(self, task: asyncio.Task[None]) -> None:
        self._reports.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: reporting NotReady failed: %s", self.name, task.exception())

    def _saved(self) -> str:
        return saved_slot(self.paths.grubenv)

    def _grub(self) -> str:
        return grub_boot_choice(self.paths.grubenv)


def saved_slot(grubenv: Path) -> str:
    """The slot GRUB boots when there is no one-shot entry (``saved_entry``, A by default)."""
    return read_grubenv(grubenv).as_dict().get("saved_entry") or "A"


def grub_boot_choice(grubenv: Path) -> str:
    """What grub.cfg of the boot contract does at power-on, on the grubenv file itself.

    A one-shot ``next_entry`` is consumed and becomes ``boot_trial`` (so the agent knows it runs
    on trial); otherwise ``saved_entry`` is booted. Stand-in machines share it, so they all
    boot the way docs/boot-contract.md says.
    """
    env = read_grubenv(grubenv)
    values = env.as_dict()
    nxt = values.get("next_entry")
    if nxt:
        env.set("boot_trial", nxt)
        env.set("next_entry", "")
        write_grubenv(grubenv, env)
        return nxt
    return values.get("saved_entry") or "A"
