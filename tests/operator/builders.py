"""Small builders for policy tests (plain values, no API server)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubeos.api import labels
from kubeos.api.models import OS
from kubeos.operator.plan import Snapshot
from kubeos.operator.snapshot import InstanceView, NodeView

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)  # a Thursday


def make_os(name: str = "os1", namespace: str = "default", generation: int = 1,
            status: dict[str, Any] | None = None, deleting: bool = False,
            **spec: Any) -> OS:
    body: dict[str, Any] = {
        "osversion": "KubeOS v2",
        "opstype": "upgrade",
        "maxunavailable": 2,
        "imagetype": "docker",
        "containerimage": "repo/os:v2",
        "nodeselector": labels.SELECTOR_ALL,
        "timeinterval": 0,
    }
    body.update(spec)
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return OS.model_validate({"metadata": meta, "spec": body, "status": status})


def node(name: str, image: str = "KubeOS v1", *, selector: str | None = None,
         upgrading: bool = False, configuring: bool = False, serial: bool = False,
         control_plane: bool = False, unschedulable: bool = False, ready: bool | None = True,
         cordoned_by_us: bool = False) -> NodeView:
    lab: dict[str, str] = {}
    if selector is not None:
        lab[labels.LABEL_NODE_SELECTOR] = selector
    if upgrading:
        lab[labels.LABEL_UPGRADING] = ""
    if configuring:
        lab[labels.LABEL_CONFIGURING] = ""
    if serial:
        lab[labels.LABEL_SERIAL] = ""
    if control_plane:
        lab[labels.LABEL_CONTROL_PLANE] = ""
    ann = {labels.ANNOTATION_CORDONED_BY_US: "true"} if cordoned_by_us else {}
    return NodeView(name, lab, ann, image, unschedulable, ready)


def inst(name: str, *, status: str = "idle", owner: tuple[str, str] | None = None,
         phase: str = "", sys_spec: str = "", sys_status: str = "") -> InstanceView:
    return InstanceView(name=name, resource_version="7", nodestatus=status, owner=owner,
                        phase=phase, spec_sys_version=sys_spec, status_sys_version=sys_status)


def snap(nodes: list[NodeView], instances: list[InstanceView] | None = None,
         all_os: list[OS] | None = None, now: datetime = NOW,
         last_round: datetime | None = None) -> Snapshot:
    if instances is None:
        instances = [inst(n.name) for n in nodes]
    return Snapshot(nodes=nodes, instances={i.name: i for i in instances},
                    all_os=all_os or [], now=now, last_round=last_round)
