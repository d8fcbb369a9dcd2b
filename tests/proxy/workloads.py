"""Workloads for drain tests on a control plane without workload controllers.

The control plane runs only the disruption, garbage-collector and namespace controllers, so
nothing creates pods for a ReplicaSet or DaemonSet. We create the owner objects (so the garbage
collector keeps their pods) and the pods ourselves with controller ``ownerReferences`` — the
drain rules look only at those. :class:`ReplicaSetStandIn` plays the ReplicaSet controller for
one set: when a pod of it disappears it creates a replacement on another node, which is what
lets a PDB with ``minAvailable: 1`` over two replicas allow the second eviction.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import DaemonSet, ReplicaSet
from lightkube.resources.core_v1 import Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget


def _template(app: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/app:1"}]},
    }


async def create_owner(client: AsyncClient, kind: str, name: str, ns: str) -> dict[str, Any]:
    """A ReplicaSet or DaemonSet object; returns an ownerReference to it."""
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": _template(name)},
    }
    res: Any = ReplicaSet if kind == "ReplicaSet" else DaemonSet
    if kind == "ReplicaSet":
        body["spec"]["replicas"] = 0
    created = await client.create(res.from_dict({"apiVersion": "apps/v1", "kind": kind,
                                                 **body}))
    return {"apiVersion": "apps/v1", "kind": kind, "name": name,
            "uid": created.metadata.uid, "controller": True}


async def create_pod(
    client: AsyncClient, ns: str, node: str, name: str, *, app: str | None = None,
    owner: dict[str, Any] | None = None, empty_dir: bool = False, cpu: str = "10m",
) -> Pod:
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [{"name": "c", "image": "registry.local/app:1",
                        "resources": {"requests": {"cpu": cpu}}}],
        "terminationGracePeriodSeconds": 1,
    }
    if empty_dir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": {"app": app or name}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    pod: Pod = await client.create(Pod.from_dict({"apiVersion": "v1", "kind": "Pod",
                                                  "metadata": meta, "spec": spec}))
    return pod


async def create_pdb(client: AsyncClient, ns: str, name: str, app: str, **spec: Any) -> None:
    await client.create(PodDisruptionBudget.from_dict({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": app}}, **spec},
    }))


async def pdb_allows(client: AsyncClient, ns: str, name: str) -> int:
    pdb = await client.get(PodDisruptionBudget, name, namespace=ns)
    return int((pdb.status.disruptionsAllowed if pdb.status else 0) or 0)


async def pods_on(client: AsyncClient, ns: str, node: str) -> dict[str, Pod]:
    """Pods of *ns* bound to *node* that are not terminating, by name."""
    return {
        str(p.metadata.name): p
        async for p in client.list(Pod, namespace=ns, fields={"spec.nodeName": node})
        if p.metadata is not None and p.metadata.deletionTimestamp is None
    }


async def ready_count(client: AsyncClient, ns: str, app: str) -> int:
    count = 0
    async for p in client.list(Pod, namespace=ns, labels={"app": app}):
        if p.metadata.deletionTimestamp is not None or p.status is None:
            continue
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []):
            count += 1
    return count


class ReplicaSetStandIn:
    """Keeps *replicas* pods of one ReplicaSet, placing replacements on *spare_node*."""

    def __init__(self, client: AsyncClient, ns: str, app: str, owner: dict[str, Any],
                 replicas: int, spare_node: str) -> None:
        self.client, self.ns, self.app = client, ns, app
        self.owner, self.replicas, self.spare = owner, replicas, spare_node
        self.created: list[str] = []

    async def _loop(self) -> None:
        while True:
            live = 0
            async for p in self.client.list(Pod, namespace=self.ns, labels={"app": self.app}):
                if p.metadata.deletionTimestamp is None:
                    live += 1
            for _ in range(self.replicas - live):
                name = f"{self.app}-{uuid.uuid4().hex[:5]}"
                with contextlib.suppress(ApiError):
                    await create_pod(self.client, self.ns, self.spare, name, app=self.app,
                                     owner=self.owner)
                    self.created.append(name)
            await asyncio.sleep(0.3)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ReplicaSetStandIn]:
        task = asyncio.create_task(self._loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def reference_workloads(
    client: AsyncClient, ns: str, node: str
) -> dict[str, Any]:
    """The reference's drain scenario on *node*: a DaemonSet pod, an emptyDir pod, a bare pod,
    a 2-replica set with a PDB of minAvailable 1, and a large pod."""
    ds = await create_owner(client, "DaemonSet", "ds", ns)
    await create_pod(client, ns, node, "ds-pod", app="ds", owner=ds)
    cache = await create_owner(client, "ReplicaSet", "cache", ns)
    await create_pod(client, ns, node, "cache-pod", app="cache", owner=cache, empty_dir=True)
    await create_pod(client, ns, node, "bare")
    web = await create_owner(client, "ReplicaSet", "web", ns)
    for i in range(2):
        await create_pod(client, ns, node, f"web-{i}", app="web", owner=web)
    await create_pdb(client, ns, "web-pdb", "web", minAvailable=1)
    big = await create_owner(client, "ReplicaSet", "big", ns)
    await create_pod(client, ns, node, "big-pod", app="big", owner=big, cpu="3")
    return {"web": web, "ds": ds}
