"""The rollout decision for one OS: pure, over a snapshot of the cluster.

Given the OS, every node, every OSInstance and every other OS, :func:`plan_rollout` says
which nodes to start now and what to tidy up, and classifies every selected node for status
and metrics. The controller only executes the plan. Rules (kubeos-behavior.md §3 with its
[BUG]/[LIMIT] items fixed):

* Nodes in flight are counted from the cluster itself: a node carrying the upgrading or
  configuring label, or whose OSInstance is bound to any OS, or that is cordoned or NotReady
  for any reason, is unavailable (a failed node its proxy uncordoned is not: it is back in
  service, and counts against ``maxfailures`` instead). So the ``maxunavailable`` limit
  holds across operator restarts and counts nodes an administrator took out of service.
* Parallel mode fills free slots in name order. Serial mode (as the reference) labels a batch
  of up to ``maxunavailable`` nodes ``serial`` and runs them one at a time; labels of
  finished nodes are removed at once (not only after an idle round).
* Nothing new starts while paused, outside the time window, when the selection overlaps
  another OS, or once more than ``maxfailures`` nodes failed; nodes in flight still finish.
* A failed node (its OSInstance bound to this OS reports ``Failed`` or ``DrainBlocked``) is
  remembered in ``status.failedNodes`` until the OS spec changes, so it is not retried in a
  loop after its proxy lets go of it.
* Bindings of this OS that no longer match ``opstype`` (it was changed mid-rollout) are
  released, so no node is left labelled for an operation nobody will run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from kubeos.api import labels
from kubeos.api.models import OS
from kubeos.operator import budget, configs, selection, window
from kubeos.operator.snapshot import InstanceView, NodeView, OSKey, os_key

Category = Literal["upgrade", "config"]
CATEGORY: dict[str, Category] = {"upgrade": "upgrade", "rollback": "upgrade", "config": "config"}
OP_LABEL: dict[str, str] = {
    "upgrade": labels.LABEL_UPGRADING,
    "config": labels.LABEL_CONFIGURING,
}
FAILED_PHASES = frozenset({"Failed", "DrainBlocked"})

NodeState = Literal["updated", "in_progress", "failed", "pending", "waiting", "busy"]

# Reasons a rollout does not start new nodes (also the Progressing/Degraded reasons).
HALT_INVALID_SPEC = "InvalidSpec"
HALT_INVALID_WINDOW = "InvalidTimeWindow"
HALT_OVERLAP = "SelectorOverlap"
HALT_FAILURES = "MaxFailuresReached"
HALT_PAUSED = "Paused"
HALT_WINDOW = "OutsideTimeWindow"
HALT_PACING = "Pacing"  # waiting out timeinterval: not reported as a halt


@dataclass(frozen=True)
class Snapshot:
    """Everything the decision reads; ``instances`` is keyed by node name."""

    nodes: Sequence[NodeView]
    instances: Mapping[str, InstanceView]
    all_os: Sequence[OS]
    now: datetime
    last_round: datetime | None = None


@dataclass(frozen=True)
class Assignment:
    """Bind a node's OSInstance to this OS and label the node."""

    node: str
    nodestatus: Category
    label: str
    instance_namespace: str
    instance_resource_version: str
    sysconfigs: dict[str, Any] | None
    upgradeconfigs: dict[str, Any] | None
    set_upgradeconfigs: bool

    def instance_patch(self, owner: OSKey) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "nodestatus": self.nodestatus,
            "namespacedname": {"namespace": owner[0], "name": owner[1]},
            "sysconfigs": self.sysconfigs,
        }
        if self.set_upgradeconfigs:
            spec["upgradeconfigs"] = self.upgradeconfigs
        return {"spec": spec}


@dataclass(frozen=True)
class Release:
    """Undo what this OS started on a node: labels, binding, and our cordon."""

    node: str
    remove_labels: tuple[str, ...]
    unbind: bool
    instance_namespace: str
    instance_resource_version: str
    uncordon: bool

    def node_patch(self) -> dict[str, Any] | None:
        patch: dict[str, Any] = {}
        if self.remove_labels:
            patch["metadata"] = {"labels": dict.fromkeys(self.remove_labels)}
        if self.uncordon:
            patch.setdefault("metadata", {})["annotations"] = {
                labels.ANNOTATION_CORDONED_BY_US: None
            }
            patch["spec"] = {"unschedulable": None}
        return patch or None

    @staticmethod
    def instance_patch() -> dict[str, Any]:
        return {"spec": {"nodestatus": "idle", "namespacedname": None}}


@dataclass
class Plan:
    """What to do now, and what the cluster looks like for status and metrics."""

    key: OSKey
    category: Category | None
    assignments: list[Assignment] = field(default_factory=list)
    label_repairs: list[str] = field(default_factory=list)
    serial_add: list[str] = field(default_factory=list)
    serial_remove: list[str] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    states: dict[str, NodeState] = field(default_factory=dict)
    waiting: dict[str, list[str]] = field(default_factory=dict)
    failed_nodes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    overlaps: list[OSKey] = field(default_factory=list)
    budget: int = 0
    unavailable: int = 0
    halt: str = ""
    halt_message: str = ""
    requeue_after: float | None = None

    def count(self, state: NodeState) -> int:
        return sum(1 for s in self.states.values() if s == state)

    @property
    def selected(self) -> int:
        return len(self.states)

    @property
    def complete(self) -> bool:
        return self.count("updated") == self.selected


def _needs_work(os: OS, category: Category, node: NodeView, inst: InstanceView | None) -> bool:
    if category == "upgrade":
        return node.os_image != os.spec.osversion
    want = configs.version(os.spec.sysconfigs)
    have = inst.status_sys_version if inst is not None else ""
    return want != have or node.os_image != os.spec.osversion


def _finishing(os: OS, category: Category, node: NodeView, inst: InstanceView) -> bool:
    """The proxy is releasing the node (done), so a missing label is not ours to restore."""
    if category == "upgrade":
        return node.os_image == os.spec.osversion
    return inst.status_sys_version == inst.spec_sys_version


def _release(node: NodeView, inst: InstanceView | None, unbind: bool) -> Release:
    remove = tuple(
        name
        for name in (labels.LABEL_UPGRADING, labels.LABEL_CONFIGURING, labels.LABEL_SERIAL)
        if name in node.labels
    )
    return Release(
        node=node.name,
        remove_labels=remove,
        unbind=unbind and inst is not None,
        instance_namespace=inst.namespace if inst is not None else "",
        instance_resource_version=inst.resource_version if inst is not None else "",
        uncordon=node.cordoned_by_us,
    )


def previous_failures(os: OS) -> set[str]:
    """Failed nodes remembered in status, valid while the spec is unchanged."""
    status = os.status
    if status is None or status.observedGeneration != os.metadata.generation:
        return set()
    return set(status.failedNodes)


def plan_cleanup(os: OS, snap: Snapshot) -> Plan:
    """Release everything this OS started (it is being deleted)."""
    key = os_key(os)
    plan = Plan(key=key, category=CATEGORY.get(os.spec.opstype))
    for node in snap.nodes:
        inst = snap.instances.get(node.name)
        bound_me = inst is not None and inst.owner == key
        mine_serial = node.serial and selection.selects(os.spec.nodeselector, node.labels)
        if bound_me:
            plan.releases.append(_release(node, inst, unbind=True))
        elif mine_serial:
            plan.serial_remove.append(node.name)
    return plan


def plan_rollout(os: OS, snap: Snapshot) -> Plan:
    """Decide this round for *os* (not being deleted)."""
    key = os_key(os)
    category = CATEGORY.get(os.spec.opstype)
    plan = Plan(key=key, category=category)
    if category is None:
        plan.halt, plan.halt_message = HALT_INVALID_SPEC, f"unknown opstype {os.spec.opstype!r}"
        return plan
    label = OP_LABEL[category]
    remembered = previous_failures(os)
    chosen = selection.selected(os, snap.nodes)
    chosen_names = {n.name for n in chosen}
    # Nodes still bound to us but no longer selected stay in the count until released.
    extra = [
        n
        for n in snap.nodes
        if n.name not in chosen_names
        and (inst := snap.instances.get(n.name)) is not None
        and inst.bound_to(key)
    ]
    candidates: list[NodeView] = []
    unavailable = 0
    in_flight_mine = 0
    serial_pending: list[str] = []
    for node in [*chosen, *extra]:
        inst = snap.instances.get(node.name)
        bound_me = inst is not None and inst.bound_to(key)
        bound_other = inst is not None and inst.bound and not bound_me
        # A failed node whose proxy gave it back (schedulable, Ready) serves workloads
        # again: it counts against maxfailures, not against maxunavailable.
        failed_here = bound_me and inst is not None and inst.phase in FAILED_PHASES
        if (
            (not failed_here and (node.op_labelled or (inst is not None and inst.bound)))
            or node.unschedulable
            or node.ready is False
        ):
            unavailable += 1
        if node.name not in chosen_names:
            if bound_me and inst is not None and inst.nodestatus != category:
                plan.releases.append(_release(node, inst, unbind=True))
            else:
                in_flight_mine += 1
            continue
        if bound_me and inst is not None and inst.nodestatus != category:
            plan.releases.append(_release(node, inst, unbind=True))
            plan.states[node.name] = "in_progress"
            continue
        needs = _needs_work(os, category, node, inst)
        if bound_me and inst is not None and inst.phase in FAILED_PHASES:
            plan.states[node.name] = "failed"
            plan.errors[node.name] = f"{inst.phase}: {inst.last_error}".strip(": ")
        elif bound_me and inst is not None:
            plan.states[node.name] = "in_progress"
            in_flight_mine += 1
            if label not in node.labels and not _finishing(os, category, node, inst):
                plan.label_repairs.append(node.name)
        elif not needs:
            plan.states[node.name] = "updated"
        elif node.name in remembered:
            plan.states[node.name] = "failed"
        elif node.op_labelled or bound_other:
            plan.states[node.name] = "busy"
            plan.waiting.setdefault("BusyWithAnotherOperation", []).append(node.name)
        elif inst is None:
            plan.states[node.name] = "waiting"
            plan.waiting.setdefault("NoOSInstance", []).append(node.name)
        elif category == "config" and node.os_image != os.spec.osversion:
            plan.states[node.name] = "waiting"
            plan.waiting.setdefault("OSVersionMismatch", []).append(node.name)
        elif node.unschedulable or node.ready is False:
            plan.states[node.name] = "waiting"
            plan.waiting.setdefault("NodeUnavailable", []).append(node.name)
        else:
            plan.states[node.name] = "pending"
            candidates.append(node)
        state = plan.states[node.name]
        if node.serial:
            if state in ("pending", "waiting", "busy", "in_progress"):
                serial_pending.append(node.name)  # the batch is not finished yet
            else:
                plan.serial_remove.append(node.name)
    plan.failed_nodes = sorted(n for n, s in plan.states.items() if s == "failed")
    plan.unavailable = unavailable

    try:
        plan.budget = budget.max_unavailable(os.spec.maxunavailable, len(chosen))
    except ValueError as error:
        plan.halt, plan.halt_message = HALT_INVALID_SPEC, str(error)
        return plan
    _decide_halt(os, snap, plan)
    if plan.halt or not candidates:
        return plan

    slots = plan.budget - unavailable
    if os.spec.executionmode == "serial":
        picks = _serial(plan, candidates, serial_pending, slots, in_flight_mine)
    else:
        picks = candidates[: max(0, slots)]
    for node in picks:
        inst = snap.instances[node.name]
        plan.assignments.append(_assignment(os, category, label, inst))
    return plan


def _serial(
    plan: Plan,
    candidates: list[NodeView],
    serial_pending: list[str],
    slots: int,
    in_flight_mine: int,
) -> list[NodeView]:
    """One node at a time out of a ``serial``-labelled batch of up to ``budget`` nodes."""
    by_name = {n.name: n for n in candidates}
    if not serial_pending:
        batch = [n.name for n in candidates[: plan.budget]]
        plan.serial_add.extend(batch)
        serial_pending = batch
    if in_flight_mine > 0 or slots < 1:
        return []
    for name in serial_pending:
        if name in by_name:
            return [by_name[name]]
    return []


def _assignment(os: OS, category: Category, label: str, inst: InstanceView) -> Assignment:
    if category == "upgrade":
        sys = configs.swap_grub(os.spec.sysconfigs) if os.spec.sysconfigs is not None else None
        return Assignment(
            node=inst.name,
            nodestatus="upgrade",
            label=label,
            instance_namespace=inst.namespace,
            instance_resource_version=inst.resource_version,
            sysconfigs=configs.as_json(sys),
            upgradeconfigs=configs.as_json(os.spec.upgradeconfigs),
            set_upgradeconfigs=True,
        )
    return Assignment(
        node=inst.name,
        nodestatus="config",
        label=label,
        instance_namespace=inst.namespace,
        instance_resource_version=inst.resource_version,
        sysconfigs=configs.as_json(os.spec.sysconfigs),
        upgradeconfigs=None,
        set_upgradeconfigs=False,
    )


def _decide_halt(os: OS, snap: Snapshot, plan: Plan) -> None:
    """Set ``plan.halt`` (first reason wins) and when to look again."""
    spec = os.spec
    try:
        state = window.evaluate(spec.timewindow, snap.now)
    except window.WindowError as error:
        plan.halt, plan.halt_message = HALT_INVALID_WINDOW, str(error)
        return
    plan.overlaps = selection.overlapping(os, snap.all_os)
    if plan.overlaps:
        names = ", ".join(f"{ns}/{name}" for ns, name in plan.overlaps)
        plan.halt = HALT_OVERLAP
        plan.halt_message = f"nodeselector {spec.nodeselector!r} overlaps with OS {names}"
        return
    if len(plan.failed_nodes) > spec.maxfailures:
        plan.halt = HALT_FAILURES
        plan.halt_message = (
            f"{len(plan.failed_nodes)} node(s) failed, more than maxfailures={spec.maxfailures}:"
            f" {', '.join(plan.failed_nodes)}"
        )
        return
    if spec.paused:
        plan.halt, plan.halt_message = HALT_PAUSED, "spec.paused is true"
        return
    if not state.open:
        plan.halt = HALT_WINDOW
        if state.next_open is not None:
            plan.halt_message = f"the time window opens at {state.next_open.isoformat()}"
            plan.requeue_after = max(0.0, (state.next_open - snap.now).total_seconds())
        else:
            plan.halt_message = "the time window has ended"
        return
    if snap.last_round is not None and spec.timeinterval > 0:
        wait = spec.timeinterval - (snap.now - snap.last_round).total_seconds()
        if wait > 0:
            plan.halt_message = f"next round in {wait:.1f}s (timeinterval)"
            plan.requeue_after = wait
            plan.halt = HALT_PACING
