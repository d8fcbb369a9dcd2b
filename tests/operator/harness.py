"""A test bed for the operator against the real control plane.

Nodes are played by the kubelet stand-in and labelled with a per-test node-selector value,
so tests sharing the control plane never select each other's nodes; OS CRs and OSInstances
live in the test's namespace, and the operator watches only that namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Node
from lightkube.types import PatchType

from kubeos.api import labels
from kubeos.kube.events import EventRecorder
from kubeos.kube.resources import OSInstanceResource, OSResource
from kubeos.operator.controller import Controller, OperatorConfig
from kubeos.operator.metrics import Metrics
from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.kubelet import KubeletStandIn
from tests.conftest import Deployed

from .standins import create_instance


class FakeClock:
    """An injectable clock for time-window tests."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Bed:
    def __init__(self, control_plane: ControlPlane, client: AsyncClient,
                 kubelet: KubeletStandIn, namespace: str, unique: str,
                 deployed: Deployed) -> None:
        self.cp = control_plane
        self.deployed = deployed
        self.client = client
        self.kubelet = kubelet
        self.ns = namespace
        self.sel = f"sel-{unique}"
        self.unique = unique
        self.controller: Controller | None = None

    def node_name(self, i: int) -> str:
        return f"n{i:03d}-{self.unique}"

    async def add_nodes(self, count: int, image: str = "KubeOS v1", *,
                        instances: bool = True, start: int = 0,
                        extra_labels: dict[str, str] | None = None,
                        instance_spec: dict[str, Any] | None = None,
                        instance_status: dict[str, Any] | None = None) -> list[str]:
        names = [self.node_name(i) for i in range(start, start + count)]

        async def one(name: str) -> None:
            await self.kubelet.add_node(
                name, os_image=image,
                labels={labels.LABEL_NODE_SELECTOR: self.sel, **(extra_labels or {})})
            if instances:
                await create_instance(self.client, name, self.ns, instance_spec,
                                      instance_status)

        sem = asyncio.Semaphore(16)

        async def bounded(name: str) -> None:
            async with sem:
                await one(name)

        await asyncio.gather(*(bounded(n) for n in names))
        return names

    def os_body(self, name: str = "os1", **spec: Any) -> Any:
        body: dict[str, Any] = {
            "osversion": "KubeOS v2",
            "opstype": "upgrade",
            "maxunavailable": 2,
            "imagetype": "docker",
            "containerimage": "repo/kubeos:v2",
            "nodeselector": self.sel,
            "timeinterval": 0,
            "executionmode": "parallel",
        }
        body.update(spec)
        return OSResource(metadata=ObjectMeta(name=name, namespace=self.ns), spec=body)

    async def create_os(self, name: str = "os1", **spec: Any) -> None:
        await self.client.create(self.os_body(name, **spec), namespace=self.ns)

    async def patch_os(self, name: str, spec: dict[str, Any]) -> None:
        await self.client.patch(OSResource, name, {"spec": spec}, namespace=self.ns,
                                patch_type=PatchType.MERGE)

    async def os(self, name: str = "os1") -> Any:
        return await self.client.get(OSResource, name, namespace=self.ns)

    async def os_exists(self, name: str = "os1") -> bool:
        try:
            await self.os(name)
            return True
        except ApiError as error:
            if error.status.code == 404:
                return False
            raise

    async def condition(self, type_: str, name: str = "os1") -> dict[str, Any]:
        obj = await self.os(name)
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return dict(cond)
        return {}

    async def instance(self, node: str) -> Any:
        return await self.client.get(OSInstanceResource, node, namespace=self.ns)

    async def node_labels(self, node: str) -> dict[str, str]:
        obj = await self.client.get(Node, node)
        return dict(obj.metadata.labels or {})

    async def labelled(self, label: str) -> set[str]:
        out = set()
        async for node in self.client.list(Node, labels={labels.LABEL_NODE_SELECTOR: self.sel}):
            if label in (node.metadata.labels or {}):
                out.add(node.metadata.name)
        return out

    async def events(self, reason: str) -> list[Any]:
        return [e async for e in self.client.list(Event, namespace=self.ns)
                if e.reason == reason]

    @contextlib.asynccontextmanager
    async def operator(self, clock: Callable[[], datetime] | None = None,
                       resync: float = 0.3) -> AsyncIterator[Controller]:
        """Run the operator in this process, watching only this test's namespace."""
        # the operator's deployed credentials (its ServiceAccount, the shipped RBAC)
        client = await self.deployed.operator()
        recorder = EventRecorder(client, component="os-operator", min_update_interval=0.5)
        controller = Controller(
            client,
            OperatorConfig(instance_namespace=self.ns, os_namespace=self.ns, resync=resync,
                           clock=clock or (lambda: datetime.now(UTC))),
            metrics=Metrics(), recorder=recorder,
        )
        self.controller = controller
        task = asyncio.create_task(controller.run())
        try:
            yield controller
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await client.close()
