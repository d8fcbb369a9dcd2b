"""A simulated node: the real proxy and the real agent on a file-backed disk, with a kubelet.

Everything a node runs in production runs here as a library in this process: the
:class:`~kubeos.proxy.controller.ProxyController` (with the API client it is given: in
the simulator, its own ServiceAccount token), the agent behind its JSON-RPC socket
(:mod:`kubeos.sim.machine`), and the kubelet's writes
(:class:`~kubeos.sim.kubelet.KubeletStandIn`, shared by the fleet). A node can be told to
fail in the three ways a rollout must survive: a bad image (checksum mismatch), a failed boot
(the trial slot panics, GRUB falls back) and a slow drain (a pod whose PDB refuses eviction for
a while).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import ReplicaSet
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget

from kubeos.proxy.controller import ProxyController, ProxySettings
from kubeos.sim.kubelet import KubeletStandIn
from kubeos.sim.machine import MachineFaults, SimMachine
from kubeos.sim.retry import retrying
from kubeos.sim.rootfs import pretty_name

log = logging.getLogger(__name__)

WORKLOAD_NAMESPACE = "default"


@dataclass
class NodeFaults:
    """How this node misbehaves (all off by default)."""

    bad_image: bool = False
    failed_boots: int = 0
    slow_drain: float = 0.0  # seconds a PDB refuses to let the node's pod go
    lost_reboots: int = 0  # reboot requests the machine drops

    @property
    def any(self) -> bool:
        return (self.bad_image or self.failed_boots > 0 or self.slow_drain > 0
                or self.lost_reboots > 0)


class SimNode:
    """One simulated node. ``await start(version, ca_pem)``; ``await stop()``."""

    def __init__(
        self,
        name: str,
        work: Path,
        client: AsyncClient,
        kubelet: KubeletStandIn,
        *,
        settings: ProxySettings,
        faults: NodeFaults | None = None,
        commit_window: float = 120.0,
        proxy_client: AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.faults = faults or NodeFaults()
        self._client = client
        self._kubelet = kubelet
        self.machine = SimMachine(
            name, work, commit_window=commit_window, kubelet=kubelet,
            faults=MachineFaults(bad_image=self.faults.bad_image,
                                 failed_boots=self.faults.failed_boots,
                                 lost_reboots=self.faults.lost_reboots),
        )
        # the harness's client plays the kubelet and the workloads; the proxy has its own
        # (the node's ServiceAccount token in the simulator)
        self._proxy_client = proxy_client or client
        self._settings = settings
        self.proxy = ProxyController(name, self._proxy_client, self.machine.client,
                                     settings=settings)
        self._proxy_task: asyncio.Task[None] | None = None
        self.proxy_restarts = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, version: str, ca_pem: bytes | None,
                    previous: str | None = None) -> None:
        await asyncio.to_thread(self.machine.install, version, ca_pem, previous)
        await self._kubelet.add_node(self.name, os_image=pretty_name(version))
        await self.machine.start()
        if self.faults.slow_drain > 0:
            await self._blocking_workload()
            self._tasks.append(asyncio.create_task(self._release_after_cordon(),
                                                   name=f"slow-drain-{self.name}"))
        self._start_proxy()

    def _start_proxy(self) -> None:
        self._proxy_task = asyncio.create_task(self.proxy.run(), name=f"proxy-{self.name}")
        self._tasks.append(self._proxy_task)

    async def restart_proxy(self, timeout: float = 10.0) -> None:
        """Stop the proxy (as its pod is deleted) and start a fresh one, as the DaemonSet does:
        everything it knew is lost; the cluster and the agent are what it starts from."""
        if self._proxy_task is not None:
            await cancel_tasks([self._proxy_task], timeout)
            self._tasks.remove(self._proxy_task)
        self.proxy = ProxyController(self.name, self._proxy_client, self.machine.client,
                                     settings=self._settings)
        self.proxy_restarts += 1
        self._start_proxy()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the proxy and the machine; never hangs (a task may swallow a cancellation)."""
        await cancel_tasks(self._tasks, timeout)
        self._tasks = []
        _, pending = await asyncio.wait({asyncio.ensure_future(self.machine.stop())},
                                        timeout=timeout)
        if pending:
            log.warning("%s: the machine did not stop within %.0f s", self.name, timeout)

    # -- slow drain ------------------------------------------------------------------------

    @property
    def _workload(self) -> str:
        return f"sim-{self.name}"

    async def _blocking_workload(self) -> None:
        """A ReplicaSet-owned pod on this node and a PDB (minAvailable 1) that protects it."""
        name, ns = self._workload, WORKLOAD_NAMESPACE
        template: dict[str, Any] = {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "registry.local/app:1"}]},
        }
        replica_set: Any = ReplicaSet.from_dict({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": template},
        })
        owner = await self._client.create(replica_set)
        assert owner.metadata is not None
        pod: Any = Pod.from_dict({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": name, "uid": owner.metadata.uid,
                                              "controller": True}]},
            "spec": {"nodeName": self.name, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "registry.local/app:1"}]},
        })
        await self._client.create(pod)
        pdb: Any = PodDisruptionBudget.from_dict({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}}, "minAvailable": 1},
        })
        await self._client.create(pdb)

    async def _release_after_cordon(self) -> None:
        """Once the node is cordoned (its drain began), keep the PDB for ``slow_drain`` s.

        Every call is retried through API-server restarts: a helper that died here would leave
        the PDB in place and block the drain for its whole timeout, a failure of the simulator
        that would look like one of the product.
        """
        while True:
            node = await retrying(lambda: self._client.get(Node, self.name),
                                  what=f"{self.name}: slow-drain helper")
            if node.spec is not None and node.spec.unschedulable:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(self.faults.slow_drain)
        log.info("%s: the slow workload's PDB lets go after %.0f s", self.name,
                 self.faults.slow_drain)

        async def release() -> None:
            try:
                await self._client.delete(PodDisruptionBudget, self._workload,
                                          namespace=WORKLOAD_NAMESPACE)
            except ApiError as error:
                if error.status.code != 404:  # already gone is fine; the rest is retried
                    raise

        await retrying(release, what=f"{self.name}: slow-drain helper")


async def cancel_tasks(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    """Cancel *tasks* until they end (again every 0.1 s: one may swallow a cancellation),
    giving up after *timeout* seconds with a warning naming the stragglers."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t for t in tasks if not t.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a crash was already logged by its owner
    if pending:
        log.warning("tasks did not stop within %.0f s: %s", timeout,
                    ", ".join(t.get_name() for t in pending))
