"""Request and result types of the agent protocol, shared by the server and the client.

The wire format is the reference's (field names, positional params); these dataclasses add types
and a parser that names the offending field, so bad input is refused before anything changes.
The module imports only the stdlib: the proxy imports it through :mod:`kubeos.agent.client`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeos.agent.errors import INVALID_PARAMS, AgentResponseError, InvalidRequestError

JSONObject = dict[str, Any]

# Result statuses of the reference, kept verbatim.
UPGRADE_READY = "UpgradeReady"
UPGRADED = "Upgraded"
ROLLBACKED = "Rollbacked"
CONFIGURED = "Configured"
COMMITTED = "Committed"


def plain_version(version: str) -> str:
    """The version without the os-release "KubeOS " prefix.

    The reference proxy sends the OS CR's ``osversion`` as is ("KubeOS 1.0.2") while the agent
    reads "1.0.2" from a slot's os-release; both spellings must mean the same version so that
    a proxy of either implementation can drive this agent.
    """
    return version[len("KubeOS ") :].strip() if version.startswith("KubeOS ") else version

def _field(obj: Mapping[str, Any], name: str, kind: type, default: Any, where: str) -> Any:
    value = obj.get(name, default)
    if value is None:
        return default
    if kind is str and not isinstance(value, str):
        raise InvalidRequestError(f"{where}.{name} must be a string", code=INVALID_PARAMS)
    if kind is bool and not isinstance(value, bool):
        raise InvalidRequestError(f"{where}.{name} must be a boolean", code=INVALID_PARAMS)
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{where} must be an object", code=INVALID_PARAMS)
    return value


def _result(value: Any) -> Mapping[str, Any]:
    """A result object from the agent; anything else is the agent's fault, not the caller's."""
    if not isinstance(value, Mapping):
        raise AgentResponseError("Response is invalid: the result is not an object")
    return value


@dataclass(frozen=True)
class Certs:
    """Certificate file names, relative to ``/etc/KubeOS/certs``."""

    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str = "certs") -> Certs:
        o = _object(obj, where)
        return cls(
            ca_cert=_field(o, "ca_cert", str, "", where),
            client_cert=_field(o, "client_cert", str, "", where),
            client_key=_field(o, "client_key", str, "", where),
        )

    def to_json(self) -> JSONObject:
        return {
            "ca_cert": self.ca_cert,
            "client_cert": self.client_cert,
            "client_key": self.client_key,
        }


@dataclass(frozen=True)
class UpgradeRequest:
    """The reference ``UpgradeRequest``; ``check_sum`` is the sha256 of the payload (hex)."""

    version: str
    image_type: str
    image_url: str = ""
    check_sum: str = ""
    container_image: str = ""
    flag_safe: bool = False
    mtls: bool = False
    certs: Certs = field(default_factory=Certs)

    @classmethod
    def from_json(cls, obj: Any, where: str = "UpgradeRequest") -> UpgradeRequest:
        o = _object(obj, where)
        return cls(
            version=plain_version(_field(o, "version", str, "", where)),
            image_type=_field(o, "image_type", str, "", where),
            image_url=_field(o, "image_url", str, "", where),
            check_sum=_field(o, "check_sum", str, "", where),
            container_image=_field(o, "container_image", str, "", where),
            flag_safe=_field(o, "flag_safe", bool, False, where),
            mtls=_field(o, "mtls", bool, False, where),
            certs=Certs.from_json(o.get("certs") or {}, f"{where}.certs"),
        )

    def to_json(self) -> JSONObject:
        return {
            "version": self.version,
            "check_sum": self.check_sum,
            "image_type": self.image_type,
            "container_image": self.container_image,
            "image_url": self.image_url,
            "flag_safe": self.flag_safe,
            "mtls": self.mtls,
            "certs": self.certs.to_json(),
        }


@dataclass(frozen=True)
class KeyInfo:
    """One setting: its value (any JSON) and its operation (``""``, ``delete``, ...)."""

    value: Any = None
    operation: str = ""

    def to_json(self) -> JSONObject:
        return {"value": self.value, "operation": self.operation}


@dataclass(frozen=True)
class Sysconfig:
    """One ``configs`` entry. ``contents`` keeps insertion order on the wire."""

    model: str
    config_path: str = ""
    contents: Mapping[str, KeyInfo] = field(default_factory=dict)

    def to_json(self) -> JSONObject:
        return {
            "model": self.model,
            "config_path": self.config_path,
            "contents": {k: v.to_json() for k, v in self.contents.items()},
        }


@dataclass(frozen=True)
class ConfigureRequest:
    """The reference ``ConfigureRequest``; parsed on the server by the settings engine."""

    configs: list[Sysconfig] = field(default_factory=list)

    def to_json(self) -> JSONObject:
        return {"configs": [c.to_json() for c in self.configs]}


@dataclass(frozen=True)
class TargetRequest:
    """Additive optional parameter of ``upgrade``/``rollback``: the version the caller expects
    the target slot to hold. The switch is refused when the slot holds another one."""

    version: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str = "params[0]") -> TargetRequest:
        return cls(version=plain_version(_field(_object(obj, where), "version", str, "", where)))

    def to_json(self) -> JSONObject:
        return {"version": self.version}


@dataclass(frozen=True)
class OperationResult:
    """Result of an operation: ``status`` as in the reference plus additive details."""

    status: str
    details: JSONObject = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> OperationResult:
        o = _result(obj)
        status = o.get("status")
        if not isinstance(status, str):
            raise AgentResponseError("Response is invalid: result.status is not a string")
        return cls(status=status, details={k: v for k, v in o.items() if k != "status"})

    def to_json(self) -> JSONObject:
        return {"status": self.status, **self.details}


@dataclass(frozen=True)
class SlotStatus:
    """What the agent knows about one root slot."""

    name: str
    device: str | None
    version: str | None
    bootable: bool | None

    def to_json(self) -> JSONObject:
        return {
            "name": self.name,
            "device": self.device,
            "version": self.version,
            "bootable": self.bootable,
        }

    @classmethod
    def from_json(cls, obj: Any) -> SlotStatus:
        o = _result(obj)
        return cls(
            name=str(o.get("name", "")),
            device=o.get("device"),
            version=o.get("version"),
            bootable=o.get("bootable"),
        )


@dataclass(frozen=True)
class StatusResult:
    """Answer of the additive ``status`` method."""

    agent_version: str
    booted_slot: str | None
    committed_slot: str | None
    trial_slot: str | None
    commit_deadline: float | None
    slots: list[SlotStatus]
    staged: JSONObject | None
    last_error: str | None
    busy: str | None
    #: the reason of a reboot requested and not yet done by this agent process, or None
    reboot_pending: str | None = None

    def to_json(self) -> JSONObject:
        return {
            "reboot_pending": self.reboot_pending,
            "agent_version": self.agent_version,
            "booted_slot": self.booted_slot,
            "committed_slot": self.committed_slot,
            "trial_slot": self.trial_slot,
            "commit_deadline": self.commit_deadline,
            "slots": [s.to_json() for s in self.slots],
            "staged": self.staged,
            "last_error": self.last_error,
            "busy": self.busy,
        }

    @classmethod
    def from_json(cls, obj: Any) -> StatusResult:
        o = _result(obj)
        return cls(
            agent_version=str(o.get("agent_version", "")),
            booted_slot=o.get("booted_slot"),
            committed_slot=o.get("committed_slot"),
            trial_slot=o.get("trial_slot"),
            commit_deadline=o.get("commit_deadline"),
            slots=[SlotStatus.from_json(s) for s in o.get("slots") or []],
            staged=o.get("staged"),
            last_error=o.get("last_error"),
            busy=o.get("busy"),
            reboot_pending=o.get("reboot_pending"),
        )

    def slot(self, name: str) -> SlotStatus | None:
        return next((s for s in self.slots if s.name == name), None)
