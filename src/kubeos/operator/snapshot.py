"""Plain, immutable views of the cluster objects the policy reads.

Why: policy functions must be pure and cheap to test; they take these small values instead of
lightkube objects, and the controller converts its caches into them (``node_view``,
``instance_view``) in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeos.api import labels
from kubeos.api.models import OS

OSKey = tuple[str, str]  # (namespace, name)


def os_key(os: OS) -> OSKey:
    return (os.metadata.namespace, os.metadata.name)


@dataclass(frozen=True)
class NodeView:
    """What the operator needs from a Node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    os_image: str = ""
    unschedulable: bool = False
    ready: bool | None = None  # None: the node reports no Ready condition

    @property
    def control_plane(self) -> bool:
        return labels.LABEL_CONTROL_PLANE in self.labels

    @property
    def op_labelled(self) -> bool:
        return labels.LABEL_UPGRADING in self.labels or labels.LABEL_CONFIGURING in self.labels

    @property
    def serial(self) -> bool:
        return labels.LABEL_SERIAL in self.labels

    @property
    def cordoned_by_us(self) -> bool:
        return labels.ANNOTATION_CORDONED_BY_US in self.annotations


@dataclass(frozen=True)
class InstanceView:
    """What the operator needs from an OSInstance (named after its node)."""

    name: str
    namespace: str = labels.DEFAULT_OSINSTANCE_NAMESPACE
    resource_version: str = ""
    nodestatus: str = "idle"
    owner: OSKey | None = None
    spec_sys_version: str = ""
    spec_upg_version: str = ""
    status_sys_version: str = ""
    status_upg_version: str = ""
    phase: str = ""
    last_error: str = ""

    def bound_to(self, key: OSKey) -> bool:
        return self.owner == key and self.nodestatus != "idle"

    @property
    def bound(self) -> bool:
        return self.owner is not None and self.nodestatus != "idle"


def node_view(node: Any) -> NodeView:
    """Convert a lightkube ``Node``."""
    meta = node.metadata
    spec = node.spec
    status = node.status
    os_image = ""
    ready: bool | None = None
    if status is not None:
        if status.nodeInfo is not None:
            os_image = status.nodeInfo.osImage or ""
        for condition in status.conditions or []:
            if condition.type == "Ready":
                ready = condition.status == "True"
    return NodeView(
        name=meta.name,
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        os_image=os_image,
        unschedulable=bool(spec.unschedulable) if spec is not None else False,
        ready=ready,
    )


def _version(section: Any) -> str:
    if isinstance(section, dict):
        return str(section.get("version") or "")
    return ""


def instance_view(obj: Mapping[str, Any]) -> InstanceView:
    """Convert a generic OSInstance (a dict as lightkube returns it)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ref = spec.get("namespacedname")
    owner: OSKey | None = None
    if isinstance(ref, dict) and ref.get("name"):
        owner = (str(ref.get("namespace") or ""), str(ref["name"]))
    return InstanceView(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        resource_version=str(meta.get("resourceVersion", "")),
        nodestatus=str(spec.get("nodestatus") or "idle"),
        owner=owner,
        spec_sys_version=_version(spec.get("sysconfigs")),
        spec_upg_version=_version(spec.get("upgradeconfigs")),
        status_sys_version=_version(status.get("sysconfigs")),
        status_upg_version=_version(status.get("upgradeconfigs")),
        phase=str(status.get("phase") or ""),
        last_error=str(status.get("lastError") or ""),
    )
