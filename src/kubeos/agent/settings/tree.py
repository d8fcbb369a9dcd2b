"""Walking a parsed YAML or TOML tree along a dotted key: the logic kubelet and containerd share.

Semantics are the reference's, except that deleting a key whose parent is missing now stops
(the reference went on matching later segments at the same level, so ``delete a.b`` with no
``a`` deleted a top-level ``b``). Lists are *appended to* (the user guide documents it:
duplicates allowed; to replace a list, delete it and add it again), so applying a request with
a list twice appends twice; every other value is replaced only when it differs, so re-applying
a request changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, MutableSequence
from dataclasses import dataclass
from typing import Any

from kubeos.agent.settings import rules
from kubeos.agent.settings.keypath import split_key
from kubeos.agent.settings.request import UPSERT_OPERATIONS, Content, JsonValue


@dataclass
class TreeOps:
    """Format-specific hooks: how to convert a value, make a nested mapping, set a value."""

    convert: Callable[[JsonValue, str], Any]
    """``convert(value, key)`` → format value, or raise :class:`Skip`."""
    nest: Callable[[MutableMapping[Any, Any], tuple[str, ...], Any], None]
    """``nest(parent, segments, value)`` inserts ``segments`` as nested mappings ending in value."""
    assign: Callable[[MutableMapping[Any, Any], str, Any], None]
    """``assign(parent, segment, value)`` replaces an existing value, keeping its style."""
    null_is_mapping: bool
    """Whether a null intermediate value may become a mapping (YAML: yes)."""
    appendable: Callable[[Any], bool] = lambda existing: True
    """Whether request lists may be appended to this existing list."""


class Skip(Exception):
    """Raised by ``convert`` for a value the format cannot hold; the key is skipped."""


def apply_contents(
    doc: MutableMapping[Any, Any], contents: tuple[Content, ...], ops: TreeOps, warn: rules.Warn
) -> bool:
    """Apply every content to ``doc``; return whether anything changed."""
    changed = False
    for content in contents:
        segments = split_key(content.key) if content.key.strip() else ()
        if not segments:
            warn(content.key, "empty key skipped")
            continue
        if content.operation not in UPSERT_OPERATIONS and not content.is_delete:
            warn(content.key, f"unknown operation {content.operation!r}, treated as add/update")
        try:
            changed |= _apply_one(doc, segments, content, ops, warn)
        except Skip as skip:
            warn(content.key, f"{skip}; key skipped")
    return changed


def _apply_one(doc: MutableMapping[Any, Any], segments: tuple[str, ...], content: Content,
               ops: TreeOps, warn: rules.Warn) -> bool:
    node = doc
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment not in node:
            if content.is_delete:
                warn(content.key, "key not found, nothing to delete")
                return False
            ops.nest(node, segments[i:], ops.convert(content.value, content.key))
            return True
        if last:
            return _set_or_delete(node, segment, content, ops, warn)
        child = node[segment]
        if child is None and content.is_delete:
            warn(content.key, "key not found, nothing to delete")
            return False
        if child is None and ops.null_is_mapping:
            ops.nest(node, segments[i:], ops.convert(content.value, content.key))
            return True
        if not isinstance(child, MutableMapping):
            path = ".".join(segments[: i + 1])
            warn(content.key, f"{path!r} is not a mapping; key skipped")
            return False
        node = child
    return False


def _set_or_delete(node: MutableMapping[Any, Any], segment: str, content: Content,
                   ops: TreeOps, warn: rules.Warn) -> bool:
    if content.is_delete:
        del node[segment]
        return True
    existing = node[segment]
    new = ops.convert(content.value, content.key)
    if isinstance(existing, MutableSequence) and not isinstance(existing, str):
        if not ops.appendable(existing):
            warn(content.key, "this list cannot be appended to (TOML array of tables); skipped")
            return False
        if not isinstance(new, list):
            warn(content.key, "existing value is a list; a list value is appended, key skipped")
            return False
        existing.extend(new)
        return bool(new)
    if same_value(existing, new):
        return False
    ops.assign(node, segment, new)
    return True


def same_value(a: object, b: object) -> bool:
    """Equal *and* of the same kind, so ``"0"`` ≠ ``0``, ``1`` ≠ ``1.0`` and ``true`` ≠ ``1``."""
    kinds = (bool, str, float, int, MutableMapping, MutableSequence)
    for kind in kinds:
        if isinstance(a, kind) != isinstance(b, kind):
            return False
        if isinstance(a, kind):
            break
    if isinstance(a, MutableMapping) and isinstance(b, MutableMapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, MutableSequence) and isinstance(b, MutableSequence):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b
