"""Apply an OS CR to the simulated fleet and follow it to its end, recording what happened.

What is recorded is what a person rehearsing a policy wants to know: which nodes the operator
started together (a batch = the nodes first seen assigned in the same look), how long each node
and the whole rollout took, which nodes failed and why, and where every node ended (version and
boot slot). The end is the operator's word (``OS.status``: ``Completed``, or ``Progressing``
false because it halted or is paused) for the current generation, never a guess from the nodes.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node

from kubeos.kube.resources import OSInstanceResource, OSResource
from kubeos.sim.fleet import Fleet
from kubeos.sim.retry import retrying

POLL = 0.5  # seconds between looks, for every 100 nodes: listing all Nodes and OSInstances
# is the simulator's own load on the API server, which a 200-node benchmark must not swamp
BATCH_GAP = 0.3  # seconds: the operator assigns a batch in one pass, a few writes in a row
OS_NAMESPACE = "default"

log = logging.getLogger(__name__)


class RolloutTimeout(RuntimeError):
    """The rollout did not end in time; the message carries the per-node picture."""


@dataclass
class NodeRow:
    """One node as the last look saw it."""

    name: str
    phase: str = "Idle"
    nodestatus: str = "idle"
    os_image: str = ""
    slot: str = ""
    error: str = ""
    started: float | None = None  # seconds into the phase when first seen assigned
    finished: float | None = None
    reboot_requests: int = 0  # how often the node's agent asked its machine to reboot


@dataclass
class RolloutResult:
    """What one applied OS CR did."""

    title: str
    seconds: float = 0.0
    nodes: dict[str, NodeRow] = field(default_factory=dict)
    batches: list[list[str]] = field(default_factory=list)
    outcome: str = ""  # RolloutComplete, MaxFailuresReached, Paused, ...
    failed_nodes: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    invariants: dict[str, str] = field(default_factory=dict)  # a chaos run's figures
    breaches: list[str] = field(default_factory=list)  # a chaos run's broken invariants

    @property
    def complete(self) -> bool:
        return self.outcome in ("RolloutComplete", "NoNodesSelected")


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


async def apply_os(client: AsyncClient, name: str, spec: dict[str, Any],
                   namespace: str = OS_NAMESPACE) -> int:
    """Create the OS, or replace its spec; returns the generation the operator must reach."""
    body: dict[str, Any] = {"apiVersion": "upgrade.openeuler.org/v1alpha1", "kind": "OS",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    try:
        current = await client.get(OSResource, name, namespace=namespace)
    except ApiError as error:
        if error.status.code != 404:
            raise
        created = await client.create(OSResource.from_dict(body))
        return int(dict(created)["metadata"].get("generation") or 1)
    body["metadata"]["resourceVersion"] = dict(current)["metadata"]["resourceVersion"]
    replaced = await client.replace(OSResource.from_dict(body))
    return int(dict(replaced)["metadata"].get("generation") or 1)


class Follower:
    """Looks at the OS, the OSInstances and the Nodes every :data:`POLL` seconds (per 100
    nodes); a watch on the OSInstances times each node's start and finish."""

    def __init__(self, fleet: Fleet, name: str, title: str,
                 namespace: str = OS_NAMESPACE) -> None:
        assert fleet.client is not None
        self.fleet = fleet
        self.client = fleet.client
        self.name = name
        self.namespace = namespace
        self.result = RolloutResult(title, nodes={n: NodeRow(n) for n in fleet.nodes})
        self._began = time.monotonic()
        self._watcher: asyncio.Task[None] | None = None

    # A node's operation can start and end between two looks (a config takes half a second),
    # so when nodes start and finish is taken from a watch, which sees every change.

    async def __aenter__(self) -> Follower:
        self._watcher = asyncio.create_task(self._watch(), name="follower-watch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher

    async def _watch(self) -> None:
        while True:
            try:
                async for _event, obj in self.client.watch(
                        OSInstanceResource, namespace=self.namespace, server_timeout=10):
                    self._seen(dict(obj))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a dropped watch: list and watch again
                log.debug("OSInstance watch: %s", error)
                await asyncio.sleep(0.2)

    def _seen(self, osi: dict[str, Any]) -> None:
        row = self.result.nodes.get(osi["metadata"]["name"])
        if row is None:
            return
        nodestatus = (osi.get("spec") or {}).get("nodestatus") or "idle"
        phase = (osi.get("status") or {}).get("phase") or "Idle"
        now = self.elapsed
        if row.started is None and nodestatus != "idle":
            row.started = now
            self._place_in_batch(row.name, now)
        elif row.started is not None and row.finished is None and (
                nodestatus == "idle" or phase in ("Failed", "DrainBlocked")):
            row.finished = now

    def _place_in_batch(self, name: str, now: float) -> None:
        """Nodes assigned within :data:`BATCH_GAP` of a batch's first node join it.

        A batch is a set: the order in which its nodes were first seen depends on
        watch timing, so its members are kept sorted by name.
        """
        batches = self.result.batches
        if batches:
            opened = min(self.result.nodes[n].started or now for n in batches[-1])
            if now - opened <= BATCH_GAP:
                bisect.insort(batches[-1], name)
                return
        batches.append([name])

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._began

    async def look(self) -> dict[str, Any]:
        """Refresh every row; returns the OS object."""
        os_obj = dict(await self.client.get(OSResource, self.name, namespace=self.namespace))
        osis = {dict(o)["metadata"]["name"]: dict(o) async for o in
                self.client.list(OSInstanceResource, namespace=self.namespace)}
        nodes = {n.metadata.name: n async for n in self.client.list(Node)
                 if n.metadata is not None}
        for name, row in self.result.nodes.items():
            osi = osis.get(name, {})
            spec, status = osi.get("spec") or {}, osi.get("status") or {}
            row.nodestatus = spec.get("nodestatus") or "idle"
            row.phase = status.get("phase") or "Idle"
            row.slot = status.get("bootSlot") or self.fleet.nodes[name].machine.booted_slot
            row.error = status.get("lastError") or ""
            row.reboot_requests = self.fleet.nodes[name].machine.reboot_requests
            node = nodes.get(name)
            if node is not None and node.status is not None and node.status.nodeInfo:
                row.os_image = node.status.nodeInfo.osImage
        return os_obj

    def ended(self, os_obj: dict[str, Any], generation: int) -> bool:
        status = os_obj.get("status") or {}
        self.result.status = status
        if int(status.get("observedGeneration") or 0) < generation:
            return False
        self.result.failed_nodes = list(status.get("failedNodes") or [])
        completed = _condition(status, "Completed")
        if completed is not None and completed.get("status") == "True":
            self.result.outcome = str(completed.get("reason"))
            return True
        progressing = _condition(status, "Progressing")
        if progressing is not None and progressing.get("status") == "False":
            self.result.outcome = str(progressing.get("reason"))
            return True
        return False


async def run_rollout(
    fleet: Fleet,
    name: str,
    spec: dict[str, Any],
    *,
    title: str,
    timeout: float,
    on_look: Callable[[Follower], None] | None = None,
) -> RolloutResult:
    """Apply *spec* as OS *name* and wait until the operator says the rollout ended."""
    assert fleet.client is not None
    async with Follower(fleet, name, title) as follower:
        await asyncio.sleep(0.3)  # the watch is open before the operator can assign anyone
        generation = await apply_os(fleet.client, name, spec)
        return await _follow(fleet, follower, generation, timeout, on_look)


async def _follow(fleet: Fleet, follower: Follower, generation: int, timeout: float,
                  on_look: Callable[[Follower], None] | None) -> RolloutResult:
    title = follower.result.title
    while True:
        fleet.check_alive()
        # retried: a chaos run restarts the API server under us
        os_obj = await retrying(follower.look, what="following the rollout")
        if on_look is not None:
            on_look(follower)
        if follower.ended(os_obj, generation):
            # nodes still finishing after a halt (in progress when it halted) are left alone
            follower.result.seconds = follower.elapsed
            return follower.result
        if follower.elapsed > timeout:
            rows = "; ".join(f"{r.name}: {r.nodestatus}/{r.phase} {r.os_image!r} {r.error}"
                             for r in follower.result.nodes.values())
            raise RolloutTimeout(
                f"{title}: not finished after {timeout:.0f} s (OS status: "
                f"{follower.result.status}); nodes: {rows}\n--- os-operator log ---\n"
                f"{fleet.operator_log_tail()}"
            )
        await asyncio.sleep(POLL * max(1.0, len(fleet.nodes) / 100))
