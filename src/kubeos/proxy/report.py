"""How the proxy's OSInstance status changes with each step (pure).

The status is both the report people read (``phase``, ``currentVersion``, ``bootSlot``,
``lastError``, conditions) and the proxy's only memory: the ``Progressing`` condition says when
the current phase began (drain timeout, health window) and for which OS generation a failure
holds; the ``RebootRequested`` condition records what a reboot must change. Keeping these
transitions here, away from I/O, lets tests check them and keeps the controller short.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kubeos.api.models import Condition, OSInstanceStatus, Phase
from kubeos.proxy.snapshot import (
    COND_AGENT,
    COND_PROGRESSING,
    COND_REBOOT,
    AgentView,
    NodeView,
    RebootRecord,
)

ACTIVE = frozenset({"Configuring", "Preparing", "Draining", "Upgrading", "Rebooting", "Verifying"})


def _second(now: datetime) -> datetime:
    return now.replace(microsecond=0)


def set_condition(status: OSInstanceStatus, new: Condition) -> OSInstanceStatus:
    """Replace the condition of the same type; keep its transition time if nothing changed."""
    out: list[Condition] = []
    found = False
    for old in status.conditions:
        if old.type != new.type:
            out.append(old)
            continue
        found = True
        if old.status == new.status and old.reason == new.reason:
            new = new.model_copy(update={"lastTransitionTime": old.lastTransitionTime})
        out.append(new)
    if not found:
        out.append(new)
    return status.model_copy(update={"conditions": out})


def drop_condition(status: OSInstanceStatus, kind: str) -> OSInstanceStatus:
    return status.model_copy(
        update={"conditions": [c for c in status.conditions if c.type != kind]}
    )


def with_phase(
    status: OSInstanceStatus,
    phase: Phase,
    now: datetime,
    *,
    message: str = "",
    generation: int = 0,
    last_error: str | None = None,
) -> OSInstanceStatus:
    """Enter *phase* (its ``Progressing`` time is kept when already in it)."""
    updated = status.model_copy(update={"phase": phase})
    if last_error is not None:
        updated = updated.model_copy(update={"lastError": last_error[:32000]})
    return set_condition(
        updated,
        Condition(
            type=COND_PROGRESSING,
            status="True" if phase in ACTIVE else "False",
            reason=phase,
            message=message[:32000],
            observedGeneration=max(generation, 0),
            lastTransitionTime=_second(now),
        ),
    )


def with_reboot(status: OSInstanceStatus, record: RebootRecord | None) -> OSInstanceStatus:
    """Record (or forget, with None) a requested slot switch; a re-issue keeps the first time."""
    if record is None:
        return drop_condition(status, COND_REBOOT)
    condition = Condition(
        type=COND_REBOOT,
        status="True",
        reason=record.op.capitalize(),
        message=record.message(),
        lastTransitionTime=_second(record.since),
    )
    existing = next((c for c in status.conditions if c.type == COND_REBOOT), None)
    if existing is not None and existing.message == condition.message:
        return status
    return set_condition(drop_condition(status, COND_REBOOT), condition)


def observed(
    status: OSInstanceStatus, node: NodeView | None, agent: AgentView, now: datetime
) -> OSInstanceStatus:
    """What the node and the agent report now: version, slot, agent reachability."""
    updated = status
    if node is not None and node.os_image:
        updated = updated.model_copy(update={"currentVersion": node.os_image[:253]})
    if agent.reachable and agent.booted_slot in ("A", "B"):
        updated = updated.model_copy(update={"bootSlot": agent.booted_slot})
    return set_condition(
        updated,
        Condition(
            type=COND_AGENT,
            status="True" if agent.reachable else "False",
            reason="Reachable" if agent.reachable else "Unreachable",
            message="" if agent.reachable else agent.error[:32000],
            lastTransitionTime=_second(now),
        ),
    )


def status_body(status: OSInstanceStatus) -> dict[str, Any]:
    """The status as a JSON merge patch body (``None`` fields delete what is there)."""
    return {"status": status.model_dump(mode="json", by_alias=True)}


def same(a: OSInstanceStatus, b: OSInstanceStatus) -> bool:
    return a.model_dump(mode="json") == b.model_dump(mode="json")
