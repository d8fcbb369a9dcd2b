"""Parsed form of a settings request, from either wire shape.

Two shapes reach the agent: the OS custom resource's ``sysconfigs`` (``configs`` is a list and
each config's ``contents`` is a *list* of ``{key, value, operation}``, path in ``configpath``)
and the reference agent's ``configure`` RPC (``contents`` is a *map* ``{key: {value,
operation}}``, path in ``config_path``). Both become the same immutable
:class:`ConfigRequest`, keeping the order the user wrote, because the reference lost that order
(map iteration) and with it any predictable append order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from kubeos.agent.settings.errors import DuplicateKeyError, RequestError

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"

DELETE = "delete"
#: Operations that mean "add or update"; anything else is accepted with a warning and treated
#: the same way, as the reference does, so CRs written for the reference keep working.
UPSERT_OPERATIONS = frozenset({"", "add", "update"})


@dataclass(frozen=True)
class Content:
    """One key of a config. ``operation`` is normalised (stripped, lower case)."""

    key: str
    value: JsonValue = None
    operation: str = ""

    @property
    def is_delete(self) -> bool:
        return self.operation == DELETE


@dataclass(frozen=True)
class ConfigRequest:
    """One entry of ``configs``: a model, an optional file path and its keys in request order."""

    model: str
    configpath: str = ""
    contents: tuple[Content, ...] = ()


@dataclass(frozen=True)
class SettingsRequest:
    """A whole request: the ``version`` (used by the proxy for change detection) and configs."""

    version: str
    configs: tuple[ConfigRequest, ...]


def parse_request(data: object) -> SettingsRequest:
    """Parse a ``sysconfigs`` mapping, an RPC ``ConfigureRequest`` or a whole OS CR.

    A whole OS custom resource (``spec.sysconfigs``) is accepted too, so the CLI can be pointed
    at the manifest a user applies to the cluster.
    """
    if not isinstance(data, Mapping):
        raise RequestError(f"request must be a mapping, not {_type_name(data)}")
    spec = data.get("spec")
    if "configs" not in data and isinstance(spec, Mapping) and "sysconfigs" in spec:
        data = spec["sysconfigs"]
        if not isinstance(data, Mapping):
            raise RequestError("spec.sysconfigs must be a mapping")
    version = data.get("version", "")
    if version is None:
        version = ""
    if not isinstance(version, str | int | float):
        raise RequestError(f"version must be a string, not {_type_name(version)}")
    return SettingsRequest(version=str(version), configs=parse_configs(data.get("configs")))


def parse_configs(configs: object) -> tuple[ConfigRequest, ...]:
    """Parse the ``configs`` list; each entry may use either wire shape."""
    if configs is None:
        return ()
    if not isinstance(configs, Sequence) or isinstance(configs, str | bytes):
        raise RequestError(f"configs must be a list, not {_type_name(configs)}")
    return tuple(parse_config(item, index) for index, item in enumerate(configs))


def parse_config(item: object, index: int = 0) -> ConfigRequest:
    """Parse one config entry (CR shape or RPC shape, detected from ``contents``)."""
    where = f"configs[{index}]"
    if not isinstance(item, Mapping):
        raise RequestError(f"{where} must be a mapping, not {_type_name(item)}")
    model = item.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError(f"{where}.model must be a non-empty string")
    model = model.strip()
    path = item.get("configpath", item.get("config_path", ""))
    if path is None:
        path = ""
    if not isinstance(path, str):
        raise RequestError(f"{where}.configpath must be a string", model=model)
    raw = item.get("contents")
    if raw is None:
        contents: list[Content] = []
    elif isinstance(raw, Mapping):
        contents = [_content_from_rpc(model, key, info) for key, info in raw.items()]
    elif isinstance(raw, Sequence) and not isinstance(raw, str | bytes):
        contents = [_content_from_cr(model, f"{where}.contents[{i}]", c) for i, c in enumerate(raw)]
    else:
        raise RequestError(f"{where}.contents must be a list or a mapping", model=model)
    _reject_duplicates(model, contents)
    return ConfigRequest(model=model, configpath=path.strip(), contents=tuple(contents))


def _content_from_cr(model: str, where: str, item: object) -> Content:
    if not isinstance(item, Mapping):
        raise RequestError(f"{where} must be a mapping with key, value, operation", model=model)
    key = item.get("key", "")
    return _content(model, where, key, item.get("value"), item.get("operation", ""))


def _content_from_rpc(model: str, key: object, info: object) -> Content:
    where = f"contents[{key!r}]"
    if not isinstance(info, Mapping):
        raise RequestError(f"{where} must be a mapping with value, operation", model=model)
    return _content(model, where, key, info.get("value"), info.get("operation", ""))


def _content(model: str, where: str, key: object, value: object, operation: object) -> Content:
    if key is None:
        key = ""
    if not isinstance(key, str):
        raise RequestError(f"{where}.key must be a string, not {_type_name(key)}", model=model)
    if operation is None:
        operation = ""
    if not isinstance(operation, str):
        raise RequestError(f"{where}.operation must be a string", model=model, key=key)
    value = _json_value(model, key, value)
    return Content(key=key, value=value, operation=operation.strip().lower())


def _json_value(model: str, key: str, value: object) -> JsonValue:
    """Check that a value is plain JSON, so every model can rely on the same few types."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestError("value must be a finite number", model=model, key=key)
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return [_json_value(model, key, v) for v in value]
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise RequestError("mapping keys in values must be strings", model=model, key=key)
            out[k] = _json_value(model, key, v)
        return out
    raise RequestError(
        f"value must be null, a string, number, boolean, list or mapping, not {_type_name(value)}",
        model=model,
        key=key,
    )


def _reject_duplicates(model: str, contents: Sequence[Content]) -> None:
    """Refuse a key given twice: the reference silently edited one of them (map semantics).

    Empty keys are exempt: they are skipped with a warning anyway, and the user guide's own
    examples use ``key: ""`` as a placeholder.
    """
    seen: set[str] = set()
    for content in contents:
        if not content.key:
            continue
        if content.key in seen:
            raise DuplicateKeyError("key given more than once in one config", model=model,
                                    key=content.key)
        seen.add(content.key)


def _type_name(value: object) -> str:
    return type(value).__name__
