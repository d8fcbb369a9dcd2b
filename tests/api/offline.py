"""Offline validation of objects against the generated CRD schema, for tests.

It re-enacts what the API server does with a CRD: apply defaults, check the structural schema
(types, enums, patterns, bounds, required), then evaluate the CEL rules
(`x-kubernetes-validations`) bottom-up. Errors are reported as "<field path>: <message>" so the
tests can assert that the offending field is named, as the real API server names it. The same
cases run against the real API server in the cluster tier.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import celpy
import jsonschema

from kubeos.api.crd import os_crd, osinstance_crd

_ENV = celpy.Environment()


def _schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def apply_defaults(schema: dict[str, Any], obj: Any) -> Any:
    """Fill in scalar defaults of present objects, recursively, as the API server does."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        for name, sub in schema.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = apply_defaults(sub, obj[name])
    elif isinstance(obj, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in obj]
    return obj


def _to_jsonschema(schema: Any) -> Any:
    """OpenAPI `nullable` and extensions -> plain JSON Schema."""
    if isinstance(schema, dict):
        out = {k: _to_jsonschema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if schema.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        out.pop("nullable", None)
        return out
    if isinstance(schema, list):
        return [_to_jsonschema(v) for v in schema]
    return schema


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _cel_errors(schema: dict[str, Any], obj: Any, path: str) -> list[str]:
    errors: list[str] = []
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in obj and obj[name] is not None:
                errors += _cel_errors(sub, obj[name], f"{path}.{name}" if path else name)
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            errors += _cel_errors(schema["items"], item, f"{path}[{i}]")
    for rule in schema.get("x-kubernetes-validations", []):
        program = _ENV.program(_ENV.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(obj)})
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            where = path + rule.get("fieldPath", "")
            errors.append(f"{where}: {rule['message']}")
    return errors


def validate(obj: dict[str, Any]) -> list[str]:
    """Errors the API server would report for `obj` (an OS or OSInstance), empty when valid."""
    crd = {"OS": os_crd(), "OSInstance": osinstance_crd()}[obj["kind"]]
    schema = _schema_of(crd)
    obj = apply_defaults(schema, copy.deepcopy(obj))
    validator = jsonschema.Draft7Validator(_to_jsonschema(schema))
    errors = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        parts = list(err.absolute_path)
        if err.validator == "required":
            # Name the missing field itself, as the API server does ("spec.osversion: Required").
            parts.append(err.message.split("'")[1])
        errors.append(f"{_path(parts)}: {err.message}")
    # The API server skips CEL rules when the structural schema already failed.
    return errors or _cel_errors(schema, obj, "")


def names_field(errors: list[str], field: str) -> bool:
    """True when some error is about `field` (a dotted path such as spec.imageurl)."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(field)}(?![\w\[])")
    return any(pattern.search(e) for e in errors)
