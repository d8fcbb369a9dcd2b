"""Typed models of the `OS` and `OSInstance` custom resources.

Every spec field of the reference keeps its JSON name and meaning (including the camelCase
`flagSafe`), so the reference's YAML applies unchanged. New fields are additive and optional.
The CRD schema in `config/crd/bases` is generated from these classes (`kubeos.api.crd`), so a
field's description, default, enum and pattern here are what `kubectl explain` shows and what the
API server enforces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from kubeos.api import labels

OpsType = Literal["upgrade", "config", "rollback"]
ImageType = Literal["docker", "disk", "containerd", ""]
ExecutionMode = Literal["serial", "parallel"]
NodeStatus = Literal["idle", "upgrade", "config", "rollback"]
Operation = Literal["", "add", "update", "delete"]
ConfigModel = Literal[
    "kernel.sysctl",
    "kernel.sysctl.persist",
    "grub.cmdline.current",
    "grub.cmdline.next",
    "kubernetes.kubelet",
    "container.containerd",
    "pam.limits",
]
Phase = Literal[
    "Idle",
    "Configuring",
    "Preparing",
    "Draining",
    "Upgrading",
    "Rebooting",
    "Verifying",
    "Succeeded",
    "Failed",
    "DrainBlocked",
]
Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

# Reference formats of timewindow bounds: "YYYY-MM-DD hh:mm:ss" or "hh:mm:ss".
TIME_PATTERN = (
    r"^$|^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$|^[0-9]{2}:[0-9]{2}:[0-9]{2}$"
)
# The reference's container image reference rule: repository/name with :tag or @sha256:digest.
IMAGE_PATTERN = (
    r"^$|^(([A-Za-z0-9_.-]+)(:[0-9]+)?/)*([A-Za-z0-9_.-]+)"
    r"((:[A-Za-z0-9_.-]+)?|(@sha256:[a-fA-F0-9]+)?)$"
)
CHECKSUM_PATTERN = r"^((sha256:)?[0-9a-fA-F]{64})?$"
# A label value, or the special selector words (which are valid label values too).
SELECTOR_PATTERN = r"^$|^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
# Certificate names are file names inside /etc/KubeOS/certs: no directories, no "..".
CERT_NAME_PATTERN = r"^$|^[A-Za-z0-9_][A-Za-z0-9_.-]*$"

# CEL cost estimation needs bounded strings.
_SHORT = 253
_URL = 4096


def _rule(rule: str, message: str, field_path: str | None = None) -> JsonValue:
    """One `x-kubernetes-validations` entry; `fieldPath` makes the API error name the field."""
    out: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class _Model(BaseModel):
    """Base: accept JSON names and Python names, ignore unknown fields from newer servers."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class Content(_Model):
    """One setting: a key, its value and what to do with it."""

    key: str = Field(
        default="",
        max_length=1024,
        description="Name of the setting; the form depends on the model (for example a sysctl "
        "name, a dotted YAML or TOML path, or a limits.conf domain).",
    )
    value: Any = Field(
        default=None,
        description="Value of the setting: string, number, boolean, null or array, as the model "
        "allows.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    operation: Operation = Field(
        default="",
        description='"delete" removes the setting; anything else ("", "add", "update") adds or '
        "updates it.",
    )


class SysConfig(_Model):
    """Settings of one model (one file or one kernel interface)."""

    model: ConfigModel = Field(description="Which kind of setting this is.")
    configpath: str = Field(
        default="",
        max_length=4096,
        description="Absolute path of the file to edit, for the models that take one; empty "
        "means the model's default file.",
    )
    contents: list[Content] = Field(
        default_factory=list, description="Settings, applied in this order."
    )


class SysConfigs(_Model):
    """A versioned set of settings. A node applies it when the version differs from its own."""

    version: str = Field(
        default="",
        max_length=_SHORT,
        description="Version of this set; compared as a plain string with what the node applied.",
    )
    configs: list[SysConfig] = Field(default_factory=list, description="Settings per model.")


class TimeWindow(_Model):
    """When new nodes may start. Nodes already in progress always finish."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "(self.starttime == '') == (self.endtime == '')",
                    "timewindow.starttime and timewindow.endtime must both be set or both empty",
                ),
                _rule(
                    "size(self.starttime) == size(self.endtime)",
                    "timewindow.starttime and timewindow.endtime must use the same format "
                    '("YYYY-MM-DD hh:mm:ss" or "hh:mm:ss")',
                ),
                _rule(
                    "self.starttime == '' || self.starttime != self.endtime",
                    "timewindow.starttime and timewindow.endtime must differ",
                ),
            ]
        }
    )

    starttime: str = Field(
        default="",
        max_length=19,
        pattern=TIME_PATTERN,
        description='Start, "YYYY-MM-DD hh:mm:ss" or daily "hh:mm:ss".',
    )
    endtime: str = Field(
        default="",
        max_length=19,
        pattern=TIME_PATTERN,
        description="End, in the format of starttime. A daily window may cross midnight.",
    )
    days: list[Weekday] = Field(
        default_factory=list,
        max_length=7,
        description="Days of the week on which a daily window opens (empty: every day).",
    )
    timezone: str = Field(
        default="",
        max_length=64,
        description="IANA time zone of the window, such as Europe/Berlin (empty: the "
        "operator's local time, as the reference).",
    )


class NamespacedName(_Model):
    """Reference from an OSInstance to the OS that owns its current operation."""

    name: str = Field(default="", max_length=_SHORT)
    namespace: str = Field(default="", max_length=_SHORT)


class Condition(_Model):
    """A standard Kubernetes condition."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    observedGeneration: int = Field(default=0, ge=0)
    lastTransitionTime: datetime | None = None
    reason: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=32768)


_SPEC_RULES: list[JsonValue] = [
    _rule(
        "self.opstype != 'upgrade' || self.imagetype != ''",
        "imagetype must be docker, containerd or disk when opstype is upgrade",
        ".imagetype",
    ),
    _rule(
        "self.opstype != 'upgrade' || self.imagetype != 'disk' || self.imageurl != ''",
        "imageurl is required for an upgrade with imagetype disk",
        ".imageurl",
    ),
    _rule(
        "self.opstype != 'upgrade' || self.imagetype != 'disk' || self.imageurl == '' || "
        "self.imageurl.startsWith('https://') || self.imageurl.startsWith('http://')",
        "imageurl must start with https:// or http://",
        ".imageurl",
    ),
    _rule(
        "self.opstype != 'upgrade' || self.imagetype != 'disk' || "
        "!self.imageurl.startsWith('http://') || self.flagSafe",
        "flagSafe must be true to download over plain http:// (prefer https://)",
        ".flagSafe",
    ),
    _rule(
        "self.opstype != 'upgrade' || self.imagetype != 'disk' || !self.mtls || "
        "(self.clientcert != '' && self.clientkey != '')",
        "clientcert and clientkey are required when mtls is true",
        ".mtls",
    ),
    _rule(
        "self.opstype != 'upgrade' || !(self.imagetype in ['docker', 'containerd']) || "
        "self.containerimage != ''",
        "containerimage is required for an upgrade with imagetype docker or containerd",
        ".containerimage",
    ),
    _rule(
        "self.opstype != 'config' || has(self.sysconfigs)",
        "sysconfigs is required when opstype is config",
        ".sysconfigs",
    ),
]


class OSSpec(_Model):
    """Cluster intent: which OS version and settings the selected nodes should have."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    osversion: str = Field(
        max_length=_SHORT,
        description="Target OS, compared with the node's osImage (os-release PRETTY_NAME), for "
        'example "KubeOS 1.0.2".',
    )
    opstype: OpsType = Field(description="upgrade, config or rollback.")
    maxunavailable: int | str = Field(
        description="How many selected nodes may be in progress at once: a number >= 1 or a "
        'percentage of the selected nodes such as "25%".',
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [
                _rule(
                    "type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",
                    'maxunavailable must be an integer >= 1 or a percentage from "1%" to "100%"',
                )
            ],
        },
    )
    imagetype: ImageType = Field(
        default="",
        description='Where the new OS comes from: "disk" (imageurl), "docker" or "containerd" '
        '(containerimage). May be "" for config and rollback.',
    )
    imageurl: str = Field(
        default="",
        max_length=_URL,
        description="URL of the root filesystem tar (kbimg's kubeos.tar) for imagetype disk.",
    )
    containerimage: str = Field(
        default="",
        max_length=_URL,
        pattern=IMAGE_PATTERN,
        description="Container image holding the OS, repository/name[:tag|@sha256:digest].",
    )
    checksum: str = Field(
        default="",
        max_length=71,
        pattern=CHECKSUM_PATTERN,
        description="SHA-256 of the disk image, or the container image digest (with or without "
        "the sha256: prefix).",
    )
    flagSafe: bool = Field(
        default=False, description="Must be true to allow downloading over plain http://."
    )
    mtls: bool = Field(
        default=False,
        description="Authenticate to imageurl with a client certificate (clientcert, clientkey).",
    )
    cacert: str = Field(
        default="",
        max_length=_SHORT,
        pattern=CERT_NAME_PATTERN,
        description="File name of the CA certificate in /etc/KubeOS/certs on the node.",
    )
    clientcert: str = Field(
        default="",
        max_length=_SHORT,
        pattern=CERT_NAME_PATTERN,
        description="File name of the client certificate in /etc/KubeOS/certs on the node.",
    )
    clientkey: str = Field(
        default="",
        max_length=_SHORT,
        pattern=CERT_NAME_PATTERN,
        description="File name of the client key in /etc/KubeOS/certs on the node.",
    )
    evictpodforce: bool = Field(
        default=False,
        description="Also evict pods with emptyDir volumes and pods without a controller, as "
        "kubectl drain --force --delete-emptydir-data does.",
    )
    sysconfigs: SysConfigs | None = Field(
        default=None,
        description="Settings for opstype config, or applied after the reboot of an upgrade or "
        "rollback.",
    )
    upgradeconfigs: SysConfigs | None = Field(
        default=None, description="Settings applied before an upgrade or rollback."
    )
    nodeselector: str = Field(
        default=labels.SELECTOR_NONE,
        max_length=63,
        pattern=SELECTOR_PATTERN,
        description='Which worker nodes: "all-label" (all), "no-label" (those without the '
        "upgrade.openeuler.org/node-selector label), or a value of that label.",
    )
    timewindow: TimeWindow | None = Field(default=None, description="When new nodes may start.")
    timeinterval: int = Field(
        default=15, ge=0, description="Seconds between two scheduling rounds."
    )
    executionmode: ExecutionMode = Field(
        default="parallel",
        description="parallel: keep maxunavailable nodes in progress; serial: one node at a "
        "time, in batches of maxunavailable.",
    )
    paused: bool = Field(
        default=False, description="Stop starting new nodes; nodes in progress finish."
    )
    maxfailures: int = Field(
        default=0,
        ge=0,
        description="Failed nodes tolerated before the rollout halts (0: halt at the first).",
    )
    draintimeout: int = Field(
        default=600,
        ge=0,
        description="Seconds a drain may take before the node is reported DrainBlocked "
        "(0: no limit).",
    )


class OSStatus(_Model):
    """Progress of the rollout, written by the operator."""

    observedGeneration: int = Field(default=0, ge=0)
    nodes: int = Field(default=0, ge=0, description="Nodes selected by this OS.")
    updated: int = Field(default=0, ge=0, description="Selected nodes at the target.")
    inProgress: int = Field(default=0, ge=0, description="Selected nodes being changed.")
    failed: int = Field(default=0, ge=0, description="Selected nodes that failed.")
    failedNodes: list[str] = Field(default_factory=list, description="Names of failed nodes.")
    conditions: list[Condition] = Field(default_factory=list)


class ObjectMeta(_Model):
    """The part of Kubernetes object metadata that our components read."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    name: str = ""
    namespace: str = ""
    uid: str = ""
    resourceVersion: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    deletionTimestamp: datetime | None = None


class OS(_Model):
    """Cluster intent for a group of nodes (namespaced, one rollout per selector)."""

    apiVersion: Literal["upgrade.openeuler.org/v1alpha1"] = "upgrade.openeuler.org/v1alpha1"
    kind: Literal["OS"] = "OS"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: OSSpec
    status: OSStatus | None = None


class OSInstanceSpec(_Model):
    """What the operator asks of one node."""

    nodestatus: NodeStatus = Field(
        default="idle", description="idle, or the operation the node is assigned."
    )
    namespacedname: NamespacedName | None = Field(
        default=None, description="The OS that owns the node's current operation."
    )
    sysconfigs: SysConfigs | None = None
    upgradeconfigs: SysConfigs | None = None


class OSInstanceStatus(_Model):
    """What the node reports, written by its proxy."""

    sysconfigs: SysConfigs | None = Field(
        default=None, description="Last settings applied after boot or by a config operation."
    )
    upgradeconfigs: SysConfigs | None = Field(
        default=None, description="Last settings applied before an upgrade."
    )
    phase: Phase = Field(default="Idle", description="Step of the node's current operation.")
    currentVersion: str = Field(default="", max_length=_SHORT, description="Booted OS version.")
    bootSlot: Literal["A", "B", ""] = Field(default="", description="Booted root partition.")
    lastError: str = Field(default="", max_length=32768, description="Why the last step failed.")
    conditions: list[Condition] = Field(default_factory=list)


class OSInstance(_Model):
    """One node's assignment and state (name = node name)."""

    apiVersion: Literal["upgrade.openeuler.org/v1alpha1"] = "upgrade.openeuler.org/v1alpha1"
    kind: Literal["OSInstance"] = "OSInstance"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: OSInstanceSpec = Field(default_factory=OSInstanceSpec)
    status: OSInstanceStatus | None = None
