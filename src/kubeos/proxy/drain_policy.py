"""Which pods a drain evicts, skips or refuses to touch, and who blocks a drain: pure functions.

The rules are kubectl drain's, because that is what cluster operators already expect:

* mirror (static) pods are skipped: the API server cannot delete them, their kubelet owns them;
* pods controlled by a DaemonSet are skipped: the DaemonSet controller would recreate them on
  the cordoned node anyway (the reference *fails* the whole drain on them unless
  ``evictpodforce`` is set, so no node running a DaemonSet could ever be drained);
* finished pods (Succeeded/Failed) are evicted without further checks: nothing is lost;
* pods with an ``emptyDir`` volume lose that data, and pods without a controlling owner are not
  recreated anywhere: both are evicted only with ``evictpodforce`` (kubectl's
  ``--delete-emptydir-data`` and ``--force``), otherwise the drain is refused with a reason per pod;
* pods already terminating are not evicted again, only waited for.

The module imports no client and does no I/O, so the policy is tested table-driven.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lightkube.models.core_v1 import Pod as PodModel
from lightkube.models.meta_v1 import LabelSelector

from kubeos.api import labels

FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


class Verdict(StrEnum):
    """What the drain does with one pod."""

    EVICT = "evict"
    SKIP = "skip"
    WAIT = "wait"  # already terminating: only wait for it to go
    REFUSE = "refuse"


@dataclass(frozen=True)
class PodRef:
    """Identity of a pod: a pod recreated under the same name has another UID."""

    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PodDecision:
    """The verdict for one pod and why, in words for the OSInstance status and Events."""

    pod: PodRef
    verdict: Verdict
    reason: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DrainPlan:
    """All verdicts for one node's pods."""

    decisions: tuple[PodDecision, ...]

    def by_verdict(self, verdict: Verdict) -> list[PodDecision]:
        return [d for d in self.decisions if d.verdict is verdict]

    @property
    def to_evict(self) -> list[PodDecision]:
        return self.by_verdict(Verdict.EVICT)

    @property
    def to_wait_for(self) -> list[PodDecision]:
        """Pods whose disappearance ends the drain: the evicted and the already terminating."""
        return [d for d in self.decisions if d.verdict in (Verdict.EVICT, Verdict.WAIT)]

    @property
    def refused(self) -> list[PodDecision]:
        return self.by_verdict(Verdict.REFUSE)

    @property
    def blocked(self) -> bool:
        return bool(self.refused)

    def refusal_message(self) -> str:
        """One sentence naming every refused pod and why (empty when nothing is refused)."""
        return "; ".join(f"{d.pod}: {d.reason}" for d in self.refused)


def _controller_kind(pod: PodModel) -> str | None:
    meta = pod.metadata
    for ref in (meta.ownerReferences if meta is not None else None) or []:
        if ref.controller:
            return str(ref.kind)
    return None


def pod_ref(pod: PodModel) -> PodRef:
    meta = pod.metadata
    if meta is None:
        return PodRef("", "", "")
    return PodRef(str(meta.namespace or ""), str(meta.name or ""), str(meta.uid or ""))


def decide_pod(pod: PodModel, *, force: bool) -> PodDecision:
    """The verdict for one pod; *force* is ``OS.spec.evictpodforce``."""
    ref = pod_ref(pod)
    meta = pod.metadata
    pod_labels = dict((meta.labels if meta is not None else None) or {})

    def verdict(v: Verdict, reason: str) -> PodDecision:
        return PodDecision(ref, v, reason, pod_labels)

    annotations = (meta.annotations if meta is not None else None) or {}
    if labels.ANNOTATION_MIRROR_POD in annotations:
        return verdict(Verdict.SKIP, "mirror pod (managed by its kubelet)")
    if meta is not None and meta.deletionTimestamp is not None:
        return verdict(Verdict.WAIT, "already terminating")
    phase = pod.status.phase if pod.status is not None else None
    if phase in FINISHED_PHASES:
        return verdict(Verdict.EVICT, f"finished ({phase})")
    controller = _controller_kind(pod)
    if controller == "DaemonSet":
        return verdict(Verdict.SKIP, "DaemonSet pod (would be recreated on this node)")
    volumes = (pod.spec.volumes if pod.spec is not None else None) or []
    empty_dirs = [str(v.name) for v in volumes if v.emptyDir is not None]
    problems: list[str] = []
    if empty_dirs:
        problems.append(f"uses emptyDir volume(s) {', '.join(empty_dirs)} whose data is lost")
    if controller is None:
        problems.append("has no controller to recreate it")
    if not problems:
        return verdict(Verdict.EVICT, f"controlled by a {controller}")
    text = " and ".join(problems)
    if force:
        return verdict(Verdict.EVICT, f"{text} (evicted because evictpodforce is set)")
    return verdict(Verdict.REFUSE, f"{text}; set evictpodforce to evict it")


def plan_drain(pods: Iterable[PodModel], *, force: bool) -> DrainPlan:
    """Verdicts for every pod of a node, in a stable order (namespace, name)."""
    decisions = [decide_pod(p, force=force) for p in pods]
    decisions.sort(key=lambda d: (d.pod.namespace, d.pod.name))
    return DrainPlan(tuple(decisions))


# -- who blocks a drain ---------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetView:
    """What a drain report needs of a PodDisruptionBudget."""

    namespace: str
    name: str
    selector: LabelSelector | None
    disruptions_allowed: int

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _requirement_matches(expr: Any, pod_labels: Mapping[str, str]) -> bool:
    key, operator, values = str(expr.key), str(expr.operator), list(expr.values or [])
    if operator == "In":
        return key in pod_labels and pod_labels[key] in values
    if operator == "NotIn":
        return key not in pod_labels or pod_labels[key] not in values
    if operator == "Exists":
        return key in pod_labels
    if operator == "DoesNotExist":
        return key not in pod_labels
    return False


def selector_matches(selector: LabelSelector | None, pod_labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics for PDBs: a nil selector matches nothing, an
    empty one (``{}``) matches every pod of the namespace (policy/v1)."""
    if selector is None:
        return False
    for key, value in (selector.matchLabels or {}).items():
        if pod_labels.get(key) != value:
            return False
    return all(_requirement_matches(e, pod_labels) for e in selector.matchExpressions or [])


def budgets_for(
    pod: PodDecision, budgets: Sequence[BudgetView]
) -> list[BudgetView]:
    """The PDBs that cover *pod*."""
    return [
        b
        for b in budgets
        if b.namespace == pod.pod.namespace and selector_matches(b.selector, pod.labels)
    ]


@dataclass(frozen=True)
class Blockage:
    """Why a drain did not finish: the pods still there and the budgets that protect them."""

    pods: tuple[str, ...]
    budgets: tuple[str, ...]
    detail: Mapping[str, str] = field(default_factory=dict)

    def message(self, timeout: float) -> str:
        head = f"drain did not finish within {timeout:g} s"
        parts = [f"{head}; pods still on the node: {', '.join(self.pods) or 'none'}"]
        if self.budgets:
            parts.append(f"PodDisruptionBudgets not allowing eviction: {', '.join(self.budgets)}")
        details = [f"{pod}: {why}" for pod, why in self.detail.items()]
        if details:
            parts.append("last errors: " + "; ".join(details))
        return "; ".join(parts)


def blockage(
    remaining: Sequence[PodDecision],
    budgets: Sequence[BudgetView],
    last_errors: Mapping[str, str] | None = None,
) -> Blockage:
    """Name the pods that are still there and the PDBs that cover them with no disruption left.

    A PDB that still allows disruptions is not named: it is not what blocks (the pod may be
    stuck terminating instead, which the per-pod detail then says).
    """
    blocking: dict[str, None] = {}
    for decision in remaining:
        for budget in budgets_for(decision, budgets):
            if budget.disruptions_allowed <= 0:
                blocking[str(budget)] = None
    errors = dict(last_errors or {})
    return Blockage(
        pods=tuple(str(d.pod) for d in remaining),
        budgets=tuple(blocking),
        detail={str(d.pod): errors[str(d.pod)] for d in remaining if str(d.pod) in errors},
    )
