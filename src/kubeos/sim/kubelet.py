"""A kubelet stand-in: the node-side API writes a real kubelet would make, without containers.

The local control plane has no kubelet, yet what we test depends on what kubelets write:
the operator compares ``status.nodeInfo.osImage`` with the OS's ``osversion``; drains need
pods that are Running and Ready (so the disruption controller counts them and PDBs bite);
and the API server alone never completes the graceful deletion of a pod bound to a node,
the kubelet does (it deletes again with grace period 0 once containers are gone). This class
does exactly those writes, through the same endpoints (``nodes/status``, ``pods/status``,
node Leases), so everything above it runs unmodified.

Pods are not scheduled: a test or the simulator binds pods by setting ``spec.nodeName``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from lightkube import ALL_NS, ApiError, AsyncClient
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod
from lightkube.types import PatchType

from kubeos.sim.retry import retrying

log = logging.getLogger(__name__)

FIELD_MANAGER = "kubeos-sim-kubelet"
KUBELET_VERSION = "v1.34.4"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def os_image_from_os_release(path: Path) -> str:
    """The ``PRETTY_NAME`` of an os-release file: what a kubelet reports as ``osImage``.

    Lets the simulator derive a node's osImage from a sandbox root the agent upgraded, the
    same way a real node's kubelet does after a reboot. Falls back to "Linux" as kubelet does.
    """
    try:
        text = path.read_text()
    except OSError:
        return "Linux"
    for line in text.splitlines():
        match = re.fullmatch(r"\s*PRETTY_NAME=(.*)", line)
        if match:
            value = match.group(1).strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            return value
    return "Linux"


@dataclass
class SimNode:
    """What the stand-in reports for one node; changed through :class:`KubeletStandIn`."""

    name: str
    os_image: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    ready: bool = True
    transition_time: str = field(default_factory=_now)
    boot_id: str = "boot-0"
    uid: str | None = None


class KubeletStandIn:
    """Plays the kubelet for any number of simulated nodes against a real API server.

    Use as ``async with KubeletStandIn(client) as kubelet: await kubelet.add_node(...)``.
    While running it renews each node's Lease every *heartbeat_interval* seconds, re-posts
    node status every *status_interval* seconds (restoring Ready if something changed it),
    marks pods bound to its nodes Running and Ready, and finishes their deletion.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        heartbeat_interval: float = 10.0,
        status_interval: float = 60.0,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        self._client = client
        self._heartbeat_interval = heartbeat_interval
        self._status_interval = status_interval
        self._field_manager = field_manager
        self._nodes: dict[str, SimNode] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def nodes(self) -> dict[str, SimNode]:
        """The simulated nodes by name (read-only use, please)."""
        return self._nodes

    async def __aenter__(self) -> KubeletStandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the heartbeat and pod loops in the background.

        No pod is missed by starting late: a watch without a resourceVersion begins with an
        ADDED event for every existing pod.
        """
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="kubelet-heartbeat"),
            asyncio.create_task(self._pod_loop(), name="kubelet-pods"),
        ]

    async def stop(self) -> None:
        """Stop the loops. Nodes stay in the API server (as when a kubelet stops)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- nodes ------------------------------------------------------------------------------

    async def add_node(
        self,
        name: str,
        *,
        os_image: str = "KubeOS v1",
        labels: dict[str, str] | None = None,
    ) -> SimNode:
        """Register a node (like kubelet's self-registration) and report it Ready."""
        node = SimNode(
            name=name,
            os_image=os_image,
            address=f"10.244.{len(self._nodes) // 250}.{len(self._nodes) % 250 + 1}",
            labels={
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
        )
        self._nodes[name] = node
        created = await self._client.patch(
            Node, name,
            {"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": name, "labels": node.labels}},
            patch_type=PatchType.APPLY, field_manager=self._field_manager, force=True,
        )
        node.uid = created.metadata.uid if created.metadata is not None else None
        await self._post_status(node)
        await self._renew_lease(node)
        return node

    async def set_os_image(self, name: str, os_image: str) -> None:
        """Report a new osImage, as the kubelet does after the node boots another root."""
        node = self._nodes[name]
        node.os_image = os_image
        node.boot_id = f"boot-{int(node.boot_id.rsplit('-', 1)[1]) + 1}"
        await self._post_status(node)

    async def set_ready(self, name: str, ready: bool) -> None:
        """Report the node Ready or NotReady (e.g. while it reboots)."""
        node = self._nodes[name]
        if node.ready != ready:
            node.ready = ready
            node.transition_time = _now()
        await self._post_status(node)

    async def remove_node(self, name: str) -> None:
        """Forget the node and delete its Node object (its Lease goes with it via GC)."""
        self._nodes.pop(name, None)
        with contextlib.suppress(ApiError):
            await self._client.delete(Node, name)

    def _status_body(self, node: SimNode) -> dict[str, Any]:
        now = _now()
        ready = "True" if node.ready else "False"

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": node.transition_time}

        resources = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name},
            "status": {
                "conditions": [
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                              "kubelet has sufficient memory available"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                              "kubelet has no disk pressure"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID",
                              "kubelet has sufficient PID available"),
                    condition("Ready", ready,
                              "KubeletReady" if node.ready else "KubeletNotReady",
                              "simulated kubelet is posting ready status" if node.ready
                              else "simulated node is not ready"),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": node.address},
                    {"type": "Hostname", "address": node.name},
                ],
                "capacity": resources,
                "allocatable": resources,
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "nodeInfo": {
                    "machineID": f"sim-{node.name}",
                    "systemUUID": f"sim-{node.name}",
                    "bootID": node.boot_id,
                    "kernelVersion": "6.6.0-kubeos-sim",
                    "osImage": node.os_image,
                    "containerRuntimeVersion": "containerd://1.7.0-sim",
                    "kubeletVersion": KUBELET_VERSION,
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }

    async def _post_status(self, node: SimNode) -> None:
        """Apply the node's status as it is now (each retry sends the then current state)."""
        await retrying(lambda: self._client.patch(
            Node.Status, node.name, self._status_body(node),
            patch_type=PatchType.APPLY, field_manager=self._field_manager, force=True,
        ), what=f"status of node {node.name}")

    async def _renew_lease(self, node: SimNode) -> None:
        """Renew the node's Lease, owned by the Node so the garbage collector removes it."""
        await self._client.patch(
            Lease, node.name,
            {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {
                    "name": node.name, "namespace": LEASE_NAMESPACE,
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                         "name": node.name, "uid": node.uid}],
                },
                "spec": {"holderIdentity": node.name,
                         "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                         "renewTime": _now_micro()},
            },
            namespace=LEASE_NAMESPACE,
            patch_type=PatchType.APPLY, field_manager=self._field_manager, force=True,
        )

    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_status = loop.time()
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            post_status = loop.time() - last_status >= self._status_interval
            if post_status:
                last_status = loop.time()
            for node in list(self._nodes.values()):
                try:
                    await self._renew_lease(node)
                    if post_status:
                        await self._post_status(node)
                except Exception as error:  # an API-server restart must not end the heartbeat
                    log.warning("heartbeat for node %s failed: %s", node.name, error)

    # -- pods -------------------------------------------------------------------------------

    async def _pod_loop(self) -> None:
        """Watch all pods; act on those bound to our nodes. Re-watches after any error."""
        while True:
            try:
                async for _event, pod in self._client.watch(Pod, namespace=ALL_NS):
                    await self._handle_pod(pod)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a dropped watch must not end the kubelet
                log.warning("pod watch failed, restarting: %s", error)
                await asyncio.sleep(0.5)

    async def _handle_pod(self, pod: Pod) -> None:
        meta = pod.metadata
        spec = pod.spec
        if meta is None or spec is None or spec.nodeName not in self._nodes:
            return
        name, namespace = str(meta.name), str(meta.namespace)
        try:
            if meta.deletionTimestamp is not None:
                # Containers "stopped": finish the graceful deletion as the kubelet does.
                await self._client.delete(Pod, name, namespace=namespace, grace_period=0)
            elif not _running_and_ready(pod):
                await self._mark_running(pod)
        except ApiError as error:
            if error.status.code not in (404, 409):
                log.warning("pod %s/%s: %s", namespace, name, error)

    async def _mark_running(self, pod: Pod) -> None:
        assert pod.metadata is not None and pod.spec is not None
        node = self._nodes[str(pod.spec.nodeName)]
        now = _now()
        conditions = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        statuses = [
            {
                "name": container.name,
                "image": container.image or "",
                "imageID": f"sim://{container.image or ''}",
                "containerID": f"sim://{pod.metadata.uid}/{container.name}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for container in pod.spec.containers
        ]
        await self._client.patch(
            Pod.Status, str(pod.metadata.name),
            {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod.metadata.name, "namespace": pod.metadata.namespace},
                "status": {
                    "phase": "Running",
                    "hostIP": node.address,
                    "hostIPs": [{"ip": node.address}],
                    "startTime": now,
                    "conditions": conditions,
                    "containerStatuses": statuses,
                },
            },
            namespace=pod.metadata.namespace,
            patch_type=PatchType.APPLY, field_manager=self._field_manager, force=True,
        )


def _running_and_ready(pod: Pod) -> bool:
    status = pod.status
    if status is None or status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
