"""Fixtures for the proxy's cluster tests: the real control plane and kubelet stand-in (from
``tests/cluster``), a real os-agent on a sandbox node, and a way to play the operator.

The agent is the real :class:`kubeos.agent.service.AgentService` behind the real JSON-RPC server
on a temporary socket, with a GPT disk on a loop device (from the agent's own test support).
Its reboot hook "reboots" the simulated machine: the agent's server and service object stop,
GRUB's choice is re-enacted on the grubenv (``next_entry`` → ``boot_trial``), the sandbox root
shows the chosen slot's os-release, a new agent service runs its boot check, and the kubelet
stand-in reports the new ``osImage`` with a new boot ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from kubeos.agent.boot.grubenv import GrubEnv, write_grubenv
from kubeos.agent.client import AsyncAgentClient
from kubeos.agent.hostpaths import HostPaths
from kubeos.agent.rpc.server import RpcServer
from kubeos.agent.service import AgentService
from kubeos.api import labels
from kubeos.api.models import OSInstance
from kubeos.kube.resources import OSInstanceResource, OSResource
from kubeos.proxy.controller import ProxyController, ProxySettings
from kubeos.proxy.drain import DrainSettings
from kubeos.proxy.state import Timing
from kubeos.sim.kubelet import KubeletStandIn
from kubeos.sim.machine import grub_boot_choice, saved_slot
from tests.agent.core.conftest import LAYOUT
from tests.agent.core.support import (
    PKI,
    FileServer,
    LoopDisk,
    Route,
    loop_devices_work,
    loop_disk,
    make_root_tree,
    make_rootfs_tar,
    mkfs_ext4,
    mkfs_vfat,
    serve_files,
    sha256_of,
)


def _preimport_agent() -> None:
    """Import the whole agent package (and what it loads lazily) in the main thread.

    With PYTHONDONTWRITEBYTECODE every first import compiles; the agent runs its methods in
    worker threads, and Python 3.11's AST recursion bookkeeping breaks when two threads
    compile at once ("AST constructor recursion depth mismatch"). Importing up front avoids it.
    """
    import importlib
    import pkgutil

    import kubeos.agent

    for info in pkgutil.walk_packages(kubeos.agent.__path__, "kubeos.agent."):
        with contextlib.suppress(Exception):
            importlib.import_module(info.name)
    for name in ("json", "ruamel.yaml", "tomlkit", "hypothesis", "tarfile", "hashlib"):
        with contextlib.suppress(Exception):
            importlib.import_module(name)


_preimport_agent()

FAST = Timing(health_window=2.0, reboot_timeout=60.0, reissue_after=4.0, poll=0.5, resync=5.0)


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 60.0, interval: float = 0.3
) -> Any:
    """Poll the async *check* until it returns something truthy; fail with its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value: {last!r}")


# -- the operator's part ---------------------------------------------------------------------


@dataclass
class Operator:
    """Plays the operator's writes by hand: the OS, the OSInstance assignment, the node label."""

    client: AsyncClient
    namespace: str

    async def create_os(self, name: str = "os1", **spec: Any) -> dict[str, Any]:
        body = OSResource(
            metadata={"name": name, "namespace": self.namespace},
            spec={"maxunavailable": 1, **spec},
        )
        return dict(await self.client.create(body))

    async def update_os(self, name: str, **spec: Any) -> None:
        await self.client.patch(OSResource, name, {"spec": spec}, namespace=self.namespace,
                                patch_type=_merge())

    async def osi(self, node: str) -> OSInstance:
        obj = await self.client.get(OSInstanceResource, node, namespace=self.namespace)
        return OSInstance.model_validate(dict(obj))

    async def maybe_osi(self, node: str) -> OSInstance | None:
        try:
            return await self.osi(node)
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise

    async def assign(self, node: str, os_name: str = "os1", nodestatus: str = "upgrade",
                     **configs: Any) -> None:
        await self.client.patch(
            OSInstanceResource, node,
            {"spec": {"nodestatus": nodestatus,
                      "namespacedname": {"name": os_name, "namespace": self.namespace},
                      **configs}},
            namespace=self.namespace, patch_type=_merge(),
        )
        label = labels.LABEL_CONFIGURING if nodestatus == "config" else labels.LABEL_UPGRADING
        await self.client.patch(Node, node, {"metadata": {"labels": {label: ""}}},
                                patch_type=_merge())

    async def node(self, name: str) -> Node:
        node: Node = await self.client.get(Node, name)
        return node


def _merge() -> Any:
    return PatchType.MERGE


@pytest.fixture
def operator(client: AsyncClient, namespace: str) -> Operator:
    return Operator(client, namespace)


# -- proxies ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_proxy(
    controller: ProxyController,
) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(controller.run(), name=f"proxy-{controller.node_name}")
    try:
        yield task
    finally:
        for _ in range(50):
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.2)
            if done:
                break
        else:
            raise AssertionError(f"the proxy did not stop: {task.get_stack()}")
        with contextlib.suppress(BaseException):
            task.result()


def proxy_settings(osi_namespace: str, *, timing: Timing = FAST) -> ProxySettings:
    return ProxySettings(
        namespace=osi_namespace, timing=timing,
        drain=DrainSettings(poll_interval=0.3, backoff_base=0.3, backoff_cap=2.0),
        agent_status_timeout=5.0, watch_timeout=60,
    )


# -- a real agent on a sandbox node ----------------------------------------------------------


@dataclass
class AgentHost:
    """One simulated machine: loop disk, sandbox root, the real agent, reboots via the kubelet.

    ``fail_next_trial`` makes the next trial boot "crash" (GRUB then boots ``saved_entry``).
    """

    name: str
    tmp: Path
    disk: LoopDisk
    paths: HostPaths
    kubelet: KubeletStandIn
    commit_window: float = 120.0
    socket: Path = field(init=False)
    reboots: list[str] = field(default_factory=list)
    service: AgentService | None = None
    fail_next_trial: bool = False
    _server: RpcServer | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread_loop: asyncio.AbstractEventLoop | None = None
    _pending: asyncio.Queue[str] | None = None
    _machine: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.socket = self.tmp / "agent.sock"

    def client(self) -> AsyncAgentClient:
        return AsyncAgentClient(self.socket, connect_timeout=2.0, call_timeout=10.0,
                                operation_timeout=120.0)

    def boot(self, slot: str, version: str) -> None:
        devno = self.disk.partition_devno(f"ROOT-{slot}")
        self.paths.mountinfo.write_text(
            f"22 1 {devno} / / ro,relatime shared:1 - ext4 /dev/root ro\n"
            "23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw\n"
        )
        make_root_tree(self.paths.root, version)
        shutil.rmtree(self.paths.run_dir, ignore_errors=True)  # /run does not survive

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending = asyncio.Queue()
        await self._start_agent()
        self._machine = asyncio.create_task(self._reboot_loop(), name=f"machine-{self.name}")

    async def _start_agent(self) -> None:
        loop = self._loop
        assert loop is not None and self._pending is not None
        pending = self._pending

        def on_reboot(reason: str) -> None:
            loop.call_soon_threadsafe(pending.put_nowait, reason)

        service = AgentService(self.paths, commit_window=self.commit_window, reboot=on_reboot,
                               restart_service=None, reboot_delay=0.0)
        await asyncio.to_thread(service.start)
        self.service = service
        self._thread_loop = asyncio.new_event_loop()
        server = RpcServer(service.rpc_methods(), self.socket)
        started = asyncio.Event()
        thread_loop = self._thread_loop

        def run() -> None:
            asyncio.set_event_loop(thread_loop)
            thread_loop.run_until_complete(server.start())
            loop.call_soon_threadsafe(started.set)
            thread_loop.run_forever()
            # the agent "powers off": finish whatever connections are still open, then close
            # the loop here, so no coroutine is left to be collected after the loop is gone
            leftover = asyncio.all_tasks(thread_loop)
            for task in leftover:
                task.cancel()
            thread_loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            thread_loop.close()

        threading.Thread(target=run, daemon=True, name=f"agent-{self.name}").start()
        await asyncio.wait_for(started.wait(), 10)
        self._server = server

    async def _stop_agent(self) -> None:
        if self._server is not None and self._thread_loop is not None:
            future = asyncio.run_coroutine_threadsafe(self._server.close(), self._thread_loop)
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(future)
            self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
        if self.service is not None:
            self.service.close()
        self._server = None

    async def _reboot_loop(self) -> None:
        assert self._pending is not None
        while True:
            reason = await self._pending.get()
            await self.reboot(reason)

    async def reboot(self, reason: str) -> None:
        """The machine reboots: NotReady, agent gone, GRUB picks a slot, agent back, Ready."""
        assert self.service is not None
        self.reboots.append(reason)
        versions = {s["name"]: s["version"] for s in self.service.status([])["slots"]}
        await self.kubelet.set_ready(self.name, False)
        await self._stop_agent()
        await asyncio.sleep(0.3)
        slot = await asyncio.to_thread(self._grub)
        if self.fail_next_trial and slot != self._saved():
            self.fail_next_trial = False
            slot = self._saved()  # the trial kernel panicked: GRUB boots saved_entry
        version = versions.get(slot) or "unknown"
        self.boot(slot, version)
        await self._start_agent()
        await self.kubelet.set_os_image(self.name, f"KubeOS {version}")
        await self.kubelet.set_ready(self.name, True)

    def _saved(self) -> str:
        return saved_slot(self.paths.grubenv)

    def _grub(self) -> str:
        return grub_boot_choice(self.paths.grubenv)

    async def stop(self) -> None:
        if self._machine is not None:
            self._machine.cancel()
            with contextlib.suppress(BaseException):
                await self._machine
        await self._stop_agent()


@dataclass
class Payload:
    """The upgrade image served over HTTPS, and how often it was downloaded."""

    server: FileServer
    tar: Path
    version: str

    @property
    def url(self) -> str:
        return self.server.url("/kubeos.tar")

    @property
    def checksum(self) -> str:
        return sha256_of(self.tar)

    @property
    def downloads(self) -> int:
        return sum(1 for r in self.server.requests if r == "/kubeos.tar")


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI.create()


@pytest.fixture
def payload(tmp_path: Path, pki: PKI) -> Iterator[Payload]:
    tar = make_rootfs_tar(make_root_tree(tmp_path / "tree-v2", "2.0.0"), tmp_path / "v2.tar")
    with serve_files(pki, tmp_path / "srv") as srv:
        srv.routes["/kubeos.tar"] = Route(file=tar)
        yield Payload(srv, tar, "2.0.0")


@pytest.fixture
async def host_factory(
    tmp_path: Path, pki: PKI, kubelet: KubeletStandIn
) -> AsyncIterator[Callable[[str], Awaitable[AgentHost]]]:
    """Make sandbox machines (loop disk, root on slot A with KubeOS 1.0.0, a running agent)."""
    if not loop_devices_work():
        pytest.fail("the proxy's agent tests need root and loop devices", pytrace=False)
    stack = contextlib.ExitStack()
    hosts: list[AgentHost] = []

    async def make(name: str) -> AgentHost:
        work = tmp_path / name
        work.mkdir()
        disk = stack.enter_context(loop_disk(work / "disk.img", LAYOUT))
        mkfs_vfat(disk.parts["BOOT"], "BOOT")
        mkfs_ext4(disk.parts["ROOT-A"], "ROOT-A", make_root_tree(work / "tree-a", "1.0.0"))
        mkfs_ext4(disk.parts["ROOT-B"], "ROOT-B")
        mkfs_ext4(disk.parts["PERSIST"], "PERSIST")
        root = work / "root"
        root.mkdir()
        paths = HostPaths(root=root, mountinfo=work / "mountinfo")
        pki.install(paths.certs)
        env = GrubEnv()
        env.set("saved_entry", "A")
        write_grubenv(paths.grubenv, env)
        host = AgentHost(name, work, disk, paths, kubelet)
        host.boot("A", "1.0.0")
        await kubelet.add_node(name, os_image="KubeOS 1.0.0")
        await host.start()
        hosts.append(host)
        return host

    try:
        yield make
    finally:
        for host in hosts:
            with contextlib.suppress(Exception):
                await host.stop()
        stack.close()

