"""Chaos for a simulated rollout, and the invariants that must hold through it.

While an OS rolls out, :func:`make_chaos` kills and restarts the operator, restarts random
proxies, restarts the kube-apiserver and drops a reboot request, on a schedule drawn from one
seed (so a breach can be replayed). :class:`Invariants` watches the cluster meanwhile and says
afterwards what a rollout must never do, whatever broke around it:

* more nodes in flight than ``maxunavailable`` at any cluster revision (node labels and
  OSInstance bindings replayed in resourceVersion order, as etcd ordered them);
* a node left cordoned, or still in flight, once the rollout ended;
* a node that fetched its image more than once;
* a pod that started terminating while a PodDisruptionBudget covering it allowed no
  disruption and had not admitted its eviction;
* a node Failed although no fault was injected into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget

from kubeos.api import labels
from kubeos.kube.informer import Informer
from kubeos.kube.patch import is_gone
from kubeos.kube.resources import OSInstanceResource
from kubeos.operator.snapshot import instance_view
from kubeos.sim.fleet import Fleet
from kubeos.sim.node import WORKLOAD_NAMESPACE

log = logging.getLogger(__name__)

OP_LABELS = (labels.LABEL_UPGRADING, labels.LABEL_CONFIGURING)


@dataclass(frozen=True)
class ChaosPlan:
    """What breaks, how often (seconds between events), from one seed."""

    seed: int = 1
    operator_every: tuple[float, float] = (6.0, 10.0)
    proxy_every: tuple[float, float] = (4.0, 6.0)
    proxies_per_round: int = 3
    apiserver_restarts: int = 1
    apiserver_after: tuple[float, float] = (5.0, 20.0)
    lost_reboots: int = 1


@dataclass
class ChaosLog:
    """What the chaos did, for the report."""

    operator_kills: int = 0
    proxy_restarts: int = 0
    apiserver_restarts: int = 0
    lost_reboots: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


def drop_reboots(fleet: Fleet, plan: ChaosPlan, chaos: ChaosLog) -> None:
    """Before the rollout: make some healthy nodes' hosts drop their next reboot request."""
    rng = random.Random(plan.seed * 7919)
    healthy = [name for name, node in fleet.nodes.items() if not node.faults.any]
    for name in rng.sample(healthy, min(plan.lost_reboots, len(healthy))):
        fleet.nodes[name].machine.faults.lost_reboots += 1
        chaos.lost_reboots.append(name)


async def make_chaos(fleet: Fleet, plan: ChaosPlan, chaos: ChaosLog) -> None:
    """Break things until cancelled."""
    rng = random.Random(plan.seed)
    loop = asyncio.get_running_loop()
    began = loop.time()
    names = sorted(fleet.nodes)
    next_operator = began + rng.uniform(*plan.operator_every)
    next_proxies = began + rng.uniform(*plan.proxy_every)
    apiserver_at = sorted(began + rng.uniform(*plan.apiserver_after)
                          for _ in range(plan.apiserver_restarts))

    def note(text: str) -> None:
        chaos.events.append(f"{loop.time() - began:6.1f} s  {text}")
        log.info("chaos: %s", text)

    while True:
        now = loop.time()
        if now >= next_operator:
            fleet.restart_operator()
            chaos.operator_kills += 1
            note("os-operator SIGKILLed and started again")
            next_operator = now + rng.uniform(*plan.operator_every)
        if now >= next_proxies:
            victims = rng.sample(names, min(plan.proxies_per_round, len(names)))
            await asyncio.gather(*(fleet.nodes[v].restart_proxy() for v in victims))
            chaos.proxy_restarts += len(victims)
            note(f"proxies restarted: {', '.join(victims)}")
            next_proxies = now + rng.uniform(*plan.proxy_every)
        if apiserver_at and now >= apiserver_at[0]:
            apiserver_at.pop(0)
            fleet.plane.kill_apiserver()
            note("kube-apiserver SIGKILLed and started again")
            await asyncio.to_thread(fleet.plane.wait_ready)
            chaos.apiserver_restarts += 1
            note("kube-apiserver ready")
        await asyncio.sleep(0.2)


@dataclass(frozen=True)
class BudgetState:
    """One PodDisruptionBudget at one revision."""

    revision: int
    name: str
    selector: dict[str, str] = field(default_factory=dict)
    allowed: int = 0
    admitted: frozenset[str] = frozenset()  # status.disruptedPods: evictions it let through
    deleted: bool = False

    @classmethod
    def of(cls, pdb: Any, *, deleted: bool = False) -> BudgetState:
        meta, spec, status = pdb.metadata, pdb.spec, pdb.status
        selector = spec.selector if spec is not None else None
        return cls(
            revision=int(meta.resourceVersion), name=str(meta.name),
            selector=dict((selector.matchLabels or {}) if selector is not None else {}),
            allowed=int((status.disruptionsAllowed or 0) if status is not None else 0),
            admitted=frozenset((status.disruptedPods or {}) if status is not None else {}),
            deleted=deleted,
        )


@dataclass
class Breach:
    invariant: str
    detail: str


class Invariants:
    """Watches the cluster with the harness's client from before the rollout to its end."""

    def __init__(self, client: AsyncClient, *, instance_namespace: str = "default",
                 workload_namespace: str = WORKLOAD_NAMESPACE) -> None:
        self.nodes: Informer[Any] = Informer(client, Node, name="chaos-nodes")
        self.instances: Informer[Any] = Informer(
            client, OSInstanceResource, namespace=instance_namespace, name="chaos-instances")
        self.pods: Informer[Any] = Informer(client, Pod, namespace=workload_namespace,
                                            name="chaos-pods")
        self._client = client
        self._workload_namespace = workload_namespace
        self.records: list[tuple[int, str, str, bool]] = []
        # PodDisruptionBudget states by revision, deletions included (an informer reports a
        # deletion with the object's last cached revision, too early to order against a pod)
        self.budgets: list[BudgetState] = []
        self.terminations: list[tuple[int, str, dict[str, str]]] = []  # (revision, pod, labels)
        self._terminating: set[str] = set()
        self._budgets_synced = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> Invariants:
        informers = [self.nodes, self.instances, self.pods]
        self._tasks = [asyncio.create_task(i.run()) for i in informers]
        self._tasks.append(asyncio.create_task(self._watch_budgets()))
        for informer in informers:
            await informer.wait_synced()
        await self._budgets_synced.wait()
        self.nodes.add_handler(self._on_node)
        self.instances.add_handler(self._on_instance)
        self.pods.add_handler(self._on_pod)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    # -- recording --------------------------------------------------------------------------

    def _on_node(self, _event: str, new: Any, old: Any) -> None:
        obj = new if new is not None else old
        busy = new is not None and any(lbl in (obj.metadata.labels or {}) for lbl in OP_LABELS)
        self.records.append((int(obj.metadata.resourceVersion), "node", obj.metadata.name, busy))

    def _on_instance(self, _event: str, new: Any, old: Any) -> None:
        view = instance_view(new if new is not None else old)
        busy = new is not None and view.bound
        self.records.append((int(view.resource_version), "inst", view.name, busy))

    def _on_pod(self, _event: str, new: Any, _old: Any) -> None:
        if new is None or new.metadata is None or new.metadata.deletionTimestamp is None:
            return
        key = f"{new.metadata.namespace}/{new.metadata.name}"
        if key not in self._terminating:
            self._terminating.add(key)
            self.terminations.append((int(new.metadata.resourceVersion), key,
                                      dict(new.metadata.labels or {})))

    async def _watch_budgets(self) -> None:
        """List and watch the PDBs, recording every state with its revision; resumes after
        API-server restarts (re-lists when the revision is gone)."""
        version: str | None = None
        known: set[str] = set()
        while True:
            try:
                if version is None:
                    listing = self._client.list(PodDisruptionBudget,
                                                namespace=self._workload_namespace)
                    items = [pdb async for pdb in listing]
                    version = str(listing.resourceVersion)
                    names = {str(p.metadata.name) for p in items if p.metadata}
                    for gone in known - names:
                        self.budgets.append(BudgetState(int(version), gone, deleted=True))
                    for pdb in items:
                        self.budgets.append(BudgetState.of(pdb))
                    known = names
                    self._budgets_synced.set()
                async for event, pdb in self._client.watch(
                        PodDisruptionBudget, namespace=self._workload_namespace,
                        resource_version=version, server_timeout=60):
                    state = BudgetState.of(pdb, deleted=event == "DELETED")
                    version = str(state.revision)
                    self.budgets.append(state)
                    (known.discard if state.deleted else known.add)(state.name)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if is_gone(error):
                    version = None
                await asyncio.sleep(0.5)

    def pdb_violations(self) -> list[str]:
        """Pods that began terminating while a matching PDB allowed no disruption and had not
        admitted their eviction (its state at the revision just before, in etcd's order)."""
        out: list[str] = []
        for revision, key, pod_labels in self.terminations:
            latest: dict[str, BudgetState] = {}
            for state in sorted(self.budgets, key=lambda b: b.revision):
                if state.revision >= revision:
                    break
                latest[state.name] = state
            name = key.split("/", 1)[1]
            for state in latest.values():
                if state.deleted or not state.selector:
                    continue
                if any(pod_labels.get(k) != v for k, v in state.selector.items()):
                    continue
                if state.allowed <= 0 and name not in state.admitted:
                    out.append(f"{key} terminating while PDB {state.name} allowed 0 "
                               "disruptions")
        return out

    # -- verdicts ---------------------------------------------------------------------------

    def in_flight_counts(self) -> list[int]:
        """Nodes in flight after each recorded change, in revision order."""
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

    def in_flight_now(self) -> set[str]:
        busy = {obj.metadata.name for obj in self.nodes.items()
                if any(lbl in (obj.metadata.labels or {}) for lbl in OP_LABELS)}
        busy |= {v.name for obj in self.instances.items() if (v := instance_view(obj)).bound}
        return busy

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) for the nodes still finishing when the rollout was declared over."""
        deadline = time.monotonic() + timeout
        while self.in_flight_now() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)

    def verdict(self, fleet: Fleet, maxunavailable: int,
                faulty: Callable[[str], bool]) -> tuple[dict[str, Any], list[Breach]]:
        """The figures and every breach."""
        breaches: list[Breach] = []
        counts = self.in_flight_counts()
        peak = max(counts, default=0)
        if peak > maxunavailable:
            breaches.append(Breach("max in flight",
                                   f"{peak} nodes in flight, maxunavailable {maxunavailable}"))
        cordoned = sorted(
            obj.metadata.name for obj in self.nodes.items()
            if obj.metadata.name in fleet.nodes and obj.spec is not None
            and obj.spec.unschedulable)
        if cordoned:
            breaches.append(Breach("stale cordons", ", ".join(cordoned)))
        stuck = sorted(self.in_flight_now())
        if stuck:
            breaches.append(Breach("stuck nodes", ", ".join(stuck)))
        downloads = {name: max(node.machine.downloads.values(), default=0)
                     for name, node in fleet.nodes.items()}
        repeated = sorted(n for n, count in downloads.items() if count > 1)
        if repeated:
            breaches.append(Breach("downloads per node",
                                   ", ".join(f"{n} x{downloads[n]}" for n in repeated)))
        violations = self.pdb_violations()
        for violation in violations:
            breaches.append(Breach("PDB violations", violation))
        failed = sorted(
            v.name for obj in self.instances.items()
            if (v := instance_view(obj)).phase == "Failed" and v.name in fleet.nodes)
        unexplained = [n for n in failed if not faulty(n)]
        if unexplained:
            breaches.append(Breach("Failed without a node fault", ", ".join(unexplained)))
        figures = {
            "max in flight": f"{peak} (maxunavailable {maxunavailable})",
            "revisions checked": str(len(counts)),
            "stale cordons": str(len(cordoned)),
            "stuck nodes": str(len(stuck)),
            "downloads per node (max)": str(max(downloads.values(), default=0)),
            "pods evicted (PDB violations)": f"{len(self.terminations)} ({len(violations)})",
            "Failed (injected faults / none)": f"{len(failed) - len(unexplained)} / "
                                               f"{len(unexplained)}",
        }
        return figures, breaches
