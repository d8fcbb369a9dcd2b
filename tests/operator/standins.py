"""Test stand-ins around the operator: a proxy that finishes nodes, and an in-flight watcher.

``ProxyStandIn`` does, for every node that is labelled and whose OSInstance is bound, what a
real proxy would after its work: after ``per_node`` seconds the kubelet reports the target
osImage (upgrade/rollback) or the OSInstance status records the applied settings (config);
then the label is removed and the OSInstance spec goes back to idle with no owner, in that
order (as the reference proxy does). Nodes listed in ``fail`` report phase Failed instead
and stay bound.

``InFlightWatcher`` watches the same objects and records, after every event, how many of
its nodes are in flight (labelled or bound): the number ``maxunavailable`` limits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from lightkube.types import PatchType

from kubeos.api import labels
from kubeos.kube.informer import Informer
from kubeos.kube.resources import OSInstanceResource
from kubeos.operator.snapshot import instance_view

OP_LABELS = (labels.LABEL_UPGRADING, labels.LABEL_CONFIGURING)


async def create_instance(client: AsyncClient, node: str, namespace: str,
                          spec: dict[str, Any] | None = None,
                          status: dict[str, Any] | None = None) -> None:
    """Create the node's OSInstance the way the proxy does."""
    body = OSInstanceResource(
        metadata=ObjectMeta(name=node, namespace=namespace,
                            labels={labels.LABEL_OSINSTANCE_NODE: node}),
        spec=spec or {"nodestatus": "idle"},
    )
    await client.create(body, namespace=namespace)
    if status is not None:
        await client.patch(OSInstanceResource.Status, node, {"status": status},
                           namespace=namespace, patch_type=PatchType.MERGE)


class ProxyStandIn:
    """Finish assigned nodes after ``per_node`` seconds (see module docstring)."""

    def __init__(self, client: AsyncClient, *, namespace: str, selector: str,
                 target: Callable[[], str], set_os_image: Callable[[str, str], Any],
                 per_node: float = 0.2, fail: set[str] | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.target = target
        self.set_os_image = set_os_image
        self.per_node = per_node
        self.fail = fail or set()
        self.nodes: Informer[Any] = Informer(
            client, Node, labels={labels.LABEL_NODE_SELECTOR: selector}, name="sim-nodes")
        self.instances: Informer[Any] = Informer(
            client, OSInstanceResource, namespace=namespace, name="sim-instances")
        self._busy: set[str] = set()
        self._released_at: dict[str, int] = {}  # resourceVersion of our own release
        self._tasks: list[asyncio.Task[Any]] = []
        self.finished: list[str] = []
        self.paused = False

    async def __aenter__(self) -> ProxyStandIn:
        self._tasks = [asyncio.create_task(self.nodes.run()),
                       asyncio.create_task(self.instances.run())]
        await self.nodes.wait_synced()
        await self.instances.wait_synced()
        self.nodes.add_handler(self._on_event)
        self.instances.add_handler(self._on_event)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    def resume(self) -> None:
        """Un-pause and pick up every node that is waiting."""
        self.paused = False
        for obj in self.instances.items():
            self._check(instance_view(obj).name)

    def _on_event(self, event: str, new: Any, old: Any) -> None:
        obj = new if new is not None else old
        self._check(str(obj.metadata.name))

    def _check(self, name: str) -> None:
        """Start finishing *name* if it is labelled, bound and not being finished yet."""
        if self.paused or name in self._busy:
            return
        obj = self.instances.get(f"{self.namespace}/{name}")
        node_obj = self.nodes.get(name)
        if obj is None or node_obj is None:
            return
        inst = instance_view(obj)
        if int(inst.resource_version or 0) <= self._released_at.get(name, 0):
            return  # the cache has not caught up with our release yet
        if not inst.bound or not any(lbl in (node_obj.metadata.labels or {})
                                     for lbl in OP_LABELS):
            return
        self._busy.add(name)
        self._tasks.append(asyncio.create_task(self._finish(name, inst.nodestatus, obj)))

    async def _finish(self, name: str, nodestatus: str, obj: Any) -> None:
        try:
            await asyncio.sleep(self.per_node)
            if name in self.fail:
                await self.client.patch(
                    OSInstanceResource.Status, name,
                    {"status": {"phase": "Failed", "lastError": "simulated failure"}},
                    namespace=self.namespace, patch_type=PatchType.MERGE)
                return
            spec = obj.get("spec") or {}
            report = self.client.patch(
                OSInstanceResource.Status, name,
                {"status": {"phase": "Succeeded", "sysconfigs": spec.get("sysconfigs"),
                            "upgradeconfigs": spec.get("upgradeconfigs")}},
                namespace=self.namespace, patch_type=PatchType.MERGE)
            if nodestatus == "upgrade":  # the kubelet and the proxy report independently
                await asyncio.gather(self.set_os_image(name, self.target()), report)
            else:
                await report
            await self.client.patch(
                Node, name, {"metadata": {"labels": dict.fromkeys(OP_LABELS)}},
                patch_type=PatchType.MERGE)
            released = await self.client.patch(
                OSInstanceResource, name,
                {"spec": {"nodestatus": "idle", "namespacedname": None}},
                namespace=self.namespace, patch_type=PatchType.MERGE)
            self._released_at[name] = int(released["metadata"]["resourceVersion"])
            self.finished.append(name)
        except ApiError:
            pass
        finally:
            if name not in self.fail:
                self._busy.discard(name)
            self._check(name)


class InFlightWatcher:
    """Record the number of in-flight nodes (labelled or bound) at every cluster revision.

    The node and OSInstance watches are separate streams that may lag each other, so counts
    taken as events arrive could mix old and new states. Every event is recorded with its
    resourceVersion (etcd's global revision) and replayed in that order: the count after
    each step is the true number of in-flight nodes at that revision.
    """

    def __init__(self, client: AsyncClient, *, namespace: str, selector: str) -> None:
        self.nodes: Informer[Any] = Informer(
            client, Node, labels={labels.LABEL_NODE_SELECTOR: selector}, name="watch-nodes")
        self.instances: Informer[Any] = Informer(
            client, OSInstanceResource, namespace=namespace, name="watch-instances")
        self.records: list[tuple[int, str, str, bool]] = []
        self._tasks: list[asyncio.Task[Any]] = []

    def _on_node(self, event: str, new: Any, old: Any) -> None:
        obj = new if new is not None else old
        busy = new is not None and any(
            lbl in (obj.metadata.labels or {}) for lbl in OP_LABELS)
        self.records.append((int(obj.metadata.resourceVersion), "node", obj.metadata.name, busy))

    def _on_instance(self, event: str, new: Any, old: Any) -> None:
        obj = new if new is not None else old
        view = instance_view(obj)
        busy = new is not None and view.bound
        self.records.append((int(view.resource_version), "inst", view.name, busy))

    def counts(self) -> list[int]:
        """In-flight count after each recorded change, in revision order."""
        state: dict[tuple[str, str], bool] = {}
        reasons: dict[str, int] = {}
        out: list[int] = []
        for _, kind, name, busy in sorted(self.records):
            before = state.get((kind, name), False)
            state[(kind, name)] = busy
            if busy != before:
                reasons[name] = reasons.get(name, 0) + (1 if busy else -1)
                if reasons[name] == 0:
                    del reasons[name]
            out.append(len(reasons))
        return out

    @property
    def peak(self) -> int:
        return max(self.counts(), default=0)

    def in_flight(self) -> set[str]:
        busy = {
            obj.metadata.name for obj in self.nodes.items()
            if any(lbl in (obj.metadata.labels or {}) for lbl in OP_LABELS)
        }
        busy |= {v.name for obj in self.instances.items() if (v := instance_view(obj)).bound}
        return busy

    async def __aenter__(self) -> InFlightWatcher:
        self._tasks = [asyncio.create_task(self.nodes.run()),
                       asyncio.create_task(self.instances.run())]
        await self.nodes.wait_synced()
        await self.instances.wait_synced()
        self.nodes.add_handler(self._on_node)
        self.instances.add_handler(self._on_instance)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task


async def wait_for(predicate: Callable[[], Any], timeout: float = 20.0,
                   interval: float = 0.05) -> None:
    """Poll *predicate* (sync or async) until it is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
