"""Turn a pydantic model's JSON schema into a Kubernetes structural OpenAPI v3 schema.

Pydantic already knows every field's type, description, default, enum, pattern and bounds; the
API server wants the same facts in its own dialect: no `$ref`, no `title`, `nullable` instead of
a `null` branch, `x-kubernetes-*` extensions kept, and only scalar defaults. Doing the
translation here keeps one source of truth for the schema.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

JsonDict = dict[str, Any]

_DROP = {"title", "$defs", "additionalProperties", "discriminator"}


def structural_schema(model: type[BaseModel]) -> JsonDict:
    """Return the structural schema of `model` (validation mode, JSON field names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    defs: JsonDict = raw.get("$defs", {})
    return _convert(raw, defs)


def _resolve(node: JsonDict, defs: JsonDict) -> JsonDict:
    """Inline a `$ref`, keeping the sibling keys (pydantic puts description/default beside it)."""
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    merged = dict(defs[name])
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _convert(node: JsonDict, defs: JsonDict) -> JsonDict:
    node = _resolve(node, defs)
    int_or_string = bool(node.get("x-kubernetes-int-or-string"))
    out: JsonDict = {}

    branches = node.get("anyOf")
    if branches is not None and not int_or_string:
        # `X | None`: the API server spells the null branch `nullable: true`.
        non_null = [b for b in branches if b.get("type") != "null"]
        if len(non_null) != 1:
            raise ValueError(f"unsupported union in CRD schema: {branches!r}")
        inner = _convert(non_null[0], defs)
        out.update(inner)
        if len(non_null) != len(branches):
            out["nullable"] = True
        for key, value in node.items():
            if key not in {"anyOf", "default"} and key not in _DROP:
                out[key] = value
        _copy_scalar_default(node, out)
        return out

    for key, value in node.items():
        if key in _DROP or key in {"properties", "items", "required", "default", "anyOf"}:
            continue
        out[key] = value

    if int_or_string:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]

    if node.get("type") == "object" or "properties" in node:
        out["type"] = "object"
        props = node.get("properties", {})
        if props:
            out["properties"] = {name: _convert(sub, defs) for name, sub in props.items()}
        required = node.get("required")
        if required:
            out["required"] = list(required)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and not props:
            # A map such as labels: dict[str, str].
            out["additionalProperties"] = _convert(extra, defs)
    if node.get("type") == "array":
        out["items"] = _convert(node.get("items", {}), defs)
    if not node.get("type") and not int_or_string and "enum" not in node:
        # `Any`: keep whatever the user wrote (reference: setting values of any JSON type).
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in node and "type" not in node:
        out["type"] = "string"
    if node.get("format") == "date-time":
        out["type"] = "string"
    _copy_scalar_default(node, out)
    return out


def _copy_scalar_default(src: JsonDict, dst: JsonDict) -> None:
    """Keep defaults the API server can apply; drop null and container defaults."""
    if "default" in src and isinstance(src["default"], str | int | bool | float):
        dst["default"] = src["default"]
