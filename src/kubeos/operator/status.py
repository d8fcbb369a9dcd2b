"""``OS.status`` from a plan: counts, failed nodes and the three conditions.

* ``Completed``: every selected node is at the target.
* ``Progressing``: the rollout is moving, or why it is not (``Paused``,
  ``OutsideTimeWindow``, ``MaxFailuresReached``, ``SelectorOverlap``, ...).
* ``Degraded``: something needs a person: failed nodes (named, with their last error), an
  overlapping selector, an invalid spec or time window.

``lastTransitionTime`` only moves when a condition's status changes, as Kubernetes
conventions require; the result is plain JSON for a merge patch of the status subresource.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubeos.api.models import OS
from kubeos.operator import plan as p

_DEGRADING = (p.HALT_INVALID_SPEC, p.HALT_INVALID_WINDOW, p.HALT_OVERLAP)
_MAX_LISTED = 20


def _names(nodes: list[str]) -> str:
    shown = ", ".join(nodes[:_MAX_LISTED])
    return shown + (f" and {len(nodes) - _MAX_LISTED} more" if len(nodes) > _MAX_LISTED else "")


def _condition(
    previous: dict[str, Any],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    value = "True" if status else "False"
    old: dict[str, Any] = previous.get(type_) or {}
    changed = old.get("status") != value
    stamp = now if changed or not old.get("lastTransitionTime") else old["lastTransitionTime"]
    return {
        "type": type_,
        "status": value,
        "observedGeneration": generation,
        "lastTransitionTime": stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(stamp, datetime)
        else str(stamp),
        "reason": reason,
        "message": message[:32000],
    }


def compute(os: OS, plan: p.Plan, now: datetime) -> dict[str, Any]:
    """The status to write for *os* after *plan* (times in UTC)."""
    generation = os.metadata.generation
    previous: dict[str, Any] = {}
    if os.status is not None:
        for c in os.status.conditions:
            previous[c.type] = c.model_dump(mode="json")
    nodes = plan.selected
    updated = plan.count("updated")
    in_progress = plan.count("in_progress")
    failed = plan.failed_nodes
    summary = f"{updated}/{nodes} nodes updated, {in_progress} in progress, {len(failed)} failed"
    waiting = "; ".join(f"{why}: {_names(names)}" for why, names in sorted(plan.waiting.items()))

    complete = plan.complete and plan.category is not None
    if complete:
        reason = "NoNodesSelected" if nodes == 0 else "RolloutComplete"
        completed = _condition(previous, "Completed", True, reason, summary, generation, now)
        progressing = _condition(previous, "Progressing", False, reason, summary, generation, now)
    else:
        completed = _condition(
            previous, "Completed", False, "InProgress", summary, generation, now
        )
        halted = plan.halt and plan.halt != p.HALT_PACING
        if halted:
            progressing = _condition(
                previous, "Progressing", in_progress > 0, plan.halt,
                f"{plan.halt_message}; {summary}", generation, now,
            )
        else:
            message = summary + (f"; waiting: {waiting}" if waiting else "")
            progressing = _condition(
                previous, "Progressing", True, "RollingOut", message, generation, now
            )

    if plan.halt in _DEGRADING:
        degraded = _condition(
            previous, "Degraded", True, plan.halt, plan.halt_message, generation, now
        )
    elif failed:
        details = "; ".join(
            f"{name}: {plan.errors[name]}" if plan.errors.get(name) else name
            for name in failed[:_MAX_LISTED]
        )
        reason = "MaxFailuresReached" if plan.halt == p.HALT_FAILURES else "NodesFailed"
        degraded = _condition(
            previous, "Degraded", True, reason,
            f"{len(failed)} node(s) failed (maxfailures={os.spec.maxfailures}): {details}",
            generation, now,
        )
    else:
        degraded = _condition(previous, "Degraded", False, "AsExpected", "", generation, now)

    return {
        "observedGeneration": generation,
        "nodes": nodes,
        "updated": updated,
        "inProgress": in_progress,
        "failed": len(failed),
        "failedNodes": failed,
        "conditions": [progressing, completed, degraded],
    }


def same_status(current: Any, wanted: dict[str, Any]) -> bool:
    """Whether writing *wanted* would change nothing (so no request is sent)."""
    if not isinstance(current, dict):
        return False
    for key, value in wanted.items():
        if key == "conditions":
            have = {c.get("type"): c for c in current.get("conditions") or []}
            for cond in value:
                old = have.get(cond["type"])
                if old is None or any(
                    old.get(k) != cond[k] for k in ("status", "reason", "message",
                                                   "observedGeneration")
                ):
                    return False
        elif current.get(key) != value:
            return False
    return True


def same_conditions(current: Any, wanted: dict[str, Any]) -> bool:
    """Whether every condition keeps its status and reason (only counts or messages moved)."""
    if not isinstance(current, dict):
        return False
    have = {c.get("type"): c for c in current.get("conditions") or []}
    for cond in wanted["conditions"]:
        old = have.get(cond["type"])
        if old is None or (old.get("status"), old.get("reason")) != (cond["status"],
                                                                      cond["reason"]):
            return False
    return True
