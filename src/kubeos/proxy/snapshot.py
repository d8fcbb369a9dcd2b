"""The inputs of the node state machine, as small immutable views.

The state machine (:mod:`kubeos.proxy.state`) decides only from what the API server and the
agent say *now* (safety rule 7: a restarted proxy resumes from there, not from memory). These
views hold exactly that: the Node, the OSInstance with the progress the proxy recorded in its
status conditions, the bound OS, and the agent's ``status`` answer. Building them from lightkube
objects is pure too, so the tests build snapshots the same way the controller does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube.models.core_v1 import Node as NodeModel

from kubeos.agent.client import StatusResult
from kubeos.api import labels
from kubeos.api.models import OS, Condition, OSInstance, OSInstanceStatus

# Condition types the proxy writes on its OSInstance.
COND_PROGRESSING = "Progressing"  # reason = phase; lastTransitionTime = when it was entered
COND_REBOOT = "RebootRequested"  # the durable record that we asked the agent to switch slots
COND_AGENT = "AgentReachable"


def agent_version(osversion: str) -> str:
    """The version as the agent names it: ``PRETTY_NAME`` without the ``KubeOS`` prefix.

    The OS and the Node speak in ``osImage`` strings ("KubeOS 1.0.2"); the agent reads a slot's
    version from its os-release the same way and drops the prefix ("1.0.2").
    """
    text = osversion.strip()
    return text[len("KubeOS ") :].strip() if text.startswith("KubeOS ") else text


def other_slot(slot: str | None) -> str | None:
    return {"A": "B", "B": "A"}.get(slot or "")


@dataclass(frozen=True)
class NodeView:
    """What the proxy needs of its Node."""

    name: str
    os_image: str = ""
    ready: bool = False
    boot_id: str = ""
    unschedulable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str = ""

    @property
    def cordoned_by_us(self) -> bool:
        return labels.ANNOTATION_CORDONED_BY_US in self.annotations

    @property
    def has_ops_label(self) -> bool:
        return labels.LABEL_UPGRADING in self.labels or labels.LABEL_CONFIGURING in self.labels

    @classmethod
    def from_node(cls, node: NodeModel) -> NodeView:
        meta = node.metadata
        status = node.status
        info = status.nodeInfo if status is not None else None
        ready = any(
            c.type == "Ready" and c.status == "True"
            for c in ((status.conditions if status is not None else None) or [])
        )
        return cls(
            name=str(meta.name if meta is not None else ""),
            os_image=str(info.osImage if info is not None else ""),
            ready=ready,
            boot_id=str(info.bootID if info is not None else ""),
            unschedulable=bool(node.spec.unschedulable if node.spec is not None else False),
            labels=dict((meta.labels if meta is not None else None) or {}),
            annotations=dict((meta.annotations if meta is not None else None) or {}),
            resource_version=str((meta.resourceVersion if meta is not None else "") or ""),
        )


@dataclass(frozen=True)
class AgentView:
    """The agent's ``status`` answer, or why there is none (``reachable`` False)."""

    reachable: bool
    error: str = ""
    booted_slot: str | None = None
    committed_slot: str | None = None
    trial_slot: str | None = None
    slot_versions: Mapping[str, str | None] = field(default_factory=dict)
    staged_version: str | None = None
    busy: str | None = None
    last_error: str | None = None
    legacy: bool = False  # an agent without the additive status/commit methods

    @classmethod
    def unreachable(cls, error: str) -> AgentView:
        return cls(reachable=False, error=error)

    @classmethod
    def from_status(cls, status: StatusResult) -> AgentView:
        staged: Any = status.staged
        staged_version = None
        if isinstance(staged, Mapping):
            value = staged.get("version")
            staged_version = str(value) if value else None
        return cls(
            reachable=True,
            booted_slot=status.booted_slot,
            committed_slot=status.committed_slot,
            trial_slot=status.trial_slot,
            slot_versions={s.name: s.version for s in status.slots},
            staged_version=staged_version,
            busy=status.busy,
            last_error=status.last_error,
        )

    @property
    def inactive_slot(self) -> str | None:
        return other_slot(self.booted_slot)

    @property
    def inactive_version(self) -> str | None:
        slot = self.inactive_slot
        return self.slot_versions.get(slot) if slot else None

    def holds_staged(self, osversion: str) -> bool:
        """Whether the inactive slot already holds *osversion*: then no download is needed."""
        wanted = agent_version(osversion)
        return any(
            v is not None and agent_version(v) == wanted
            for v in (self.staged_version, self.inactive_version)
        )

    def inactive_holds_other_than(self, osversion: str) -> bool:
        """The inactive slot is known to hold a version other than *osversion*."""
        held = self.inactive_version
        return held is not None and agent_version(held) != agent_version(osversion)

    @property
    def committed(self) -> bool:
        """The booted slot is the committed one and no trial waits for a commit."""
        if self.legacy:
            return True
        return (
            self.booted_slot is not None
            and self.committed_slot == self.booted_slot
            and self.trial_slot in (None, "")
        )


@dataclass(frozen=True)
class RebootRecord:
    """What we wrote before asking the agent to switch slots, to recognise the reboot later."""

    op: str  # "upgrade" or "rollback"
    target: str
    boot_id: str
    slot: str
    since: datetime  # the first request: the reboot timeout counts from here
    asks: int = 1  # how many times the agent was asked (re-asks are spaced out, with backoff)
    last_ask: datetime | None = None  # the latest request; None: ``since``

    _FORMAT = re.compile(
        r"target=(?P<target>.*?); bootID=(?P<boot>[^;\s]*); slot=(?P<slot>[^;\s]*)"
        r"(?:; asks=(?P<asks>\d+); lastAsk=(?P<last>\S+))?$"
    )

    def message(self) -> str:
        base = f"target={self.target}; bootID={self.boot_id}; slot={self.slot}"
        if self.asks <= 1 or self.last_ask is None:
            return base
        return f"{base}; asks={self.asks}; lastAsk={self.last_ask.isoformat()}"

    def asked_again(self, now: datetime) -> RebootRecord:
        """The record of one more request, made at ``now`` (kept in status before asking)."""
        return dataclasses.replace(self, asks=self.asks + 1, last_ask=now.replace(microsecond=0))

    @classmethod
    def from_condition(cls, condition: Condition) -> RebootRecord | None:
        match = cls._FORMAT.fullmatch(condition.message)
        if condition.status != "True" or match is None:
            return None
        last = None
        if match["last"]:
            with contextlib.suppress(ValueError):
                last = datetime.fromisoformat(match["last"])
        return cls(
            op=condition.reason.lower(),
            target=match["target"],
            boot_id=match["boot"],
            slot=match["slot"],
            since=condition.lastTransitionTime or datetime.fromtimestamp(0, UTC),
            asks=int(match["asks"]) if match["asks"] else 1,
            last_ask=last,
        )


def find_condition(status: OSInstanceStatus | None, kind: str) -> Condition | None:
    if status is None:
        return None
    return next((c for c in status.conditions if c.type == kind), None)


@dataclass(frozen=True)
class Progress:
    """The progress the proxy recorded on the OSInstance."""

    phase: str
    since: datetime | None
    generation: int
    reboot: RebootRecord | None

    @classmethod
    def from_osinstance(cls, osi: OSInstance) -> Progress:
        status = osi.status or OSInstanceStatus()
        progressing = find_condition(status, COND_PROGRESSING)
        reboot = find_condition(status, COND_REBOOT)
        since = None
        generation = 0
        if progressing is not None and progressing.reason == status.phase:
            since = progressing.lastTransitionTime
            generation = progressing.observedGeneration
        return cls(
            phase=status.phase,
            since=since,
            generation=generation,
            reboot=RebootRecord.from_condition(reboot) if reboot is not None else None,
        )


@dataclass(frozen=True)
class Snapshot:
    """Everything one decision looks at."""

    node: NodeView | None
    osi: OSInstance
    os: OS | None
    agent: AgentView
    now: datetime

    @property
    def progress(self) -> Progress:
        return Progress.from_osinstance(self.osi)
