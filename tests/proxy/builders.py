"""Builders of state-machine snapshots for the table-driven tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kubeos.api import labels
from kubeos.api.models import (
    OS,
    Condition,
    OSInstance,
    OSInstanceStatus,
    OSSpec,
    SysConfigs,
)
from kubeos.proxy.report import with_phase, with_reboot
from kubeos.proxy.snapshot import AgentView, NodeView, RebootRecord, Snapshot

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
OLD, NEW = "KubeOS v1", "KubeOS v2"


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def node(
    *,
    image: str = OLD,
    ready: bool = True,
    boot: str = "boot-0",
    cordoned: bool = False,
    ours: bool = False,
    label: str | None = labels.LABEL_UPGRADING,
) -> NodeView:
    return NodeView(
        name="n1", os_image=image, ready=ready, boot_id=boot, unschedulable=cordoned,
        labels={label: ""} if label else {},
        annotations={labels.ANNOTATION_CORDONED_BY_US: "true"} if ours else {},
    )


def configs(version: str, model: str = "kernel.sysctl") -> SysConfigs:
    return SysConfigs.model_validate(
        {"version": version, "configs": [{"model": model, "contents": [{"key": "a",
                                                                        "value": "1"}]}]}
    )


def os_(
    op: str = "upgrade", *, target: str = NEW, generation: int = 1,
    sys: str | None = None, up: str | None = None,
) -> OS:
    spec: dict[str, Any] = {"osversion": target, "opstype": op, "maxunavailable": 1,
                            "imagetype": "disk" if op == "upgrade" else "",
                            "imageurl": "https://x/y.tar" if op == "upgrade" else ""}
    if sys is not None:
        spec["sysconfigs"] = configs(sys).model_dump()
    if up is not None:
        spec["upgradeconfigs"] = configs(up).model_dump()
    return OS.model_validate({"metadata": {"name": "os1", "namespace": "default",
                                           "generation": generation},
                              "spec": OSSpec.model_validate(spec).model_dump()})


def osi(
    nodestatus: str = "upgrade",
    *,
    phase: str = "Idle",
    since: datetime | None = None,
    generation: int = 1,
    reboot: RebootRecord | None = None,
    spec_sys: str | None = None,
    status_sys: str | None = None,
    spec_up: str | None = None,
    status_up: str | None = None,
) -> OSInstance:
    status = OSInstanceStatus(
        sysconfigs=configs(status_sys) if status_sys else None,
        upgradeconfigs=configs(status_up) if status_up else None,
    )
    if phase != "Idle":
        status = with_phase(status, phase, since or ago(1), generation=generation)  # type: ignore[arg-type]
    status = with_reboot(status, reboot)
    return OSInstance.model_validate({
        "metadata": {"name": "n1", "namespace": "default"},
        "spec": {
            "nodestatus": nodestatus,
            "namespacedname": None if nodestatus == "idle" else {"name": "os1",
                                                                 "namespace": "default"},
            "sysconfigs": configs(spec_sys).model_dump() if spec_sys else None,
            "upgradeconfigs": configs(spec_up).model_dump() if spec_up else None,
        },
        "status": status.model_dump(),
    })


def agent(
    *, booted: str = "A", committed: str = "A", trial: str | None = None,
    versions: dict[str, str | None] | None = None, staged: str | None = None,
    busy: str | None = None, last_error: str | None = None,
) -> AgentView:
    return AgentView(
        reachable=True, booted_slot=booted, committed_slot=committed, trial_slot=trial,
        slot_versions=versions if versions is not None else {"A": OLD, "B": None},
        staged_version=staged, busy=busy, last_error=last_error,
    )


def rebooted_from(slot: str = "A", *, boot: str = "boot-0", seconds_ago: float = 10,
                  op: str = "upgrade", target: str = NEW) -> RebootRecord:
    return RebootRecord(op=op, target=target, boot_id=boot, slot=slot, since=ago(seconds_ago))


def snap(
    n: NodeView | None = None, i: OSInstance | None = None, o: OS | None = None,
    a: AgentView | None = None, *, no_os: bool = False,
) -> Snapshot:
    return Snapshot(
        node=n if n is not None else node(),
        osi=i if i is not None else osi(),
        os=None if no_os else (o if o is not None else os_()),
        agent=a if a is not None else agent(),
        now=NOW,
    )


def condition(status: OSInstanceStatus, kind: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == kind), None)
