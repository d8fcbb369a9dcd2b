"""``container.containerd``: dotted keys in containerd's TOML config, edited with tomlkit.

tomlkit keeps comments, ordering, quoting and number formats, so only the edited keys change
(the reference re-serialised the whole file and lost every comment); a replaced literal
string stays literal. New keys take the
indentation of their siblings, so an edit in ``containerd config default`` output does not
stand out. Integers outside TOML's signed 64-bit range are rejected (the reference panicked);
``null`` and mappings have no TOML form and are skipped with a warning, as in the reference.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, InlineTable, Item, String, Table

from kubeos.agent.settings import rules, tree
from kubeos.agent.settings.errors import ParseError, ValueTypeError
from kubeos.agent.settings.model import Context, Outcome
from kubeos.agent.settings.paths import node_path
from kubeos.agent.settings.request import ConfigRequest, Content, JsonValue
from kubeos.agent.settings.result import FileChange, SettingsWarning, restart

DEFAULT_CONTAINERD_CONFIG = "/etc/containerd/config.toml"
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


class ContainerContainerd:
    """Edits containerd's config.toml (created if missing); containerd must then restart."""

    name = "container.containerd"
    effect = restart("containerd")

    def apply(self, config: ConfigRequest, ctx: Context) -> Outcome:
        node = node_path(self.name, config.configpath, DEFAULT_CONTAINERD_CONFIG)
        out = Outcome()

        def warn(key: str, message: str) -> None:
            out.warnings.append(SettingsWarning(self.name, key, message, node))

        before = ctx.stage.read(node, model=self.name)
        try:
            after = edit_toml(before or "", config.contents, warn)
        except TOMLKitError as exc:
            raise ParseError(f"cannot parse TOML: {exc}", model=self.name, file=node,
                             line=getattr(exc, "line", None)) from exc
        except ValueTypeError as exc:
            raise ValueTypeError(exc.detail, model=self.name, key=exc.key, file=node) from exc
        ctx.stage.write(node, after, model=self.name)
        out.files.append(FileChange(node, before, after))
        return out


def edit_toml(text: str, contents: tuple[Content, ...], warn: rules.Warn) -> str:
    """Apply ``contents`` to TOML text; unchanged documents come back byte for byte."""
    doc = tomlkit.parse(text)
    ops = tree.TreeOps(convert=_convert, nest=_nest, assign=_assign, null_is_mapping=False,
                       appendable=lambda existing: not isinstance(existing, AoT))
    if not tree.apply_contents(doc, contents, ops, warn):
        return text
    return tomlkit.dumps(doc)


def _convert(value: JsonValue, key: str) -> Any:
    if value is None:
        raise tree.Skip("null has no TOML form")
    if isinstance(value, dict):
        raise tree.Skip("a mapping value has no TOML form here; set its keys one by one")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        raise ValueTypeError("integer outside TOML's 64-bit range", key=key)
    if isinstance(value, list):
        out = []
        for element in value:
            try:
                out.append(_convert(element, key))
            except tree.Skip:
                continue  # the reference drops unconvertible elements
        return out
    return value


def _assign(parent: MutableMapping[Any, Any], segment: str, value: Any) -> None:
    """Replace a value; a literal ('...') string stays literal when the new text allows it."""
    existing = parent[segment]
    if (isinstance(existing, String) and isinstance(value, str) and existing.type.is_literal()
            and "'" not in value and "\n" not in value):
        value = tomlkit.string(value, literal=True)
    parent[segment] = value


def _nest(parent: MutableMapping[Any, Any], segments: tuple[str, ...], value: Any) -> None:
    """Insert ``a.b.c = value`` below ``parent`` as table ``[..a.b]`` holding ``c``.

    Intermediate tables are super tables (no header of their own), as TOML writers do; the
    new header and key are indented like the file's existing sibling tables.
    """
    if len(segments) == 1:
        parent[segments[0]] = value
        _indent_like_siblings(parent, segments[0])
        return
    if isinstance(parent, InlineTable):
        inline = tomlkit.inline_table()
        _nest(inline, segments[1:], value)
        parent[segments[0]] = inline
        return
    header_indent, step = _child_table_indent(parent), _step(parent)
    leaf = tomlkit.table()
    leaf[segments[-1]] = value
    leaf.trivia.indent = header_indent
    item = _item(leaf, segments[-1])
    if item is not None:
        item.trivia.indent = header_indent + step
    if not isinstance(parent, tomlkit.TOMLDocument):
        leaf.add(tomlkit.nl())
    table = leaf
    for segment in reversed(segments[1:-1]):
        outer = tomlkit.table(is_super_table=True)
        outer[segment] = table
        table = outer
    parent[segments[0]] = table


def _indent_like_siblings(parent: MutableMapping[Any, Any], key: str) -> None:
    indent = _key_indent(parent, exclude=key)
    if indent is None:
        return
    item = _item(parent, key)
    if item is not None:
        item.trivia.indent = indent


def _body(parent: MutableMapping[Any, Any]) -> list[tuple[Any, Any]]:
    container = parent.value if isinstance(parent, Table) else parent
    body = getattr(container, "body", None)
    return list(body) if body is not None else []


def _item(parent: MutableMapping[Any, Any], key: str) -> Item | None:
    for k, item in _body(parent):
        if k is not None and k.key == key and isinstance(item, Item):
            return item
    return None


def _key_indent(parent: MutableMapping[Any, Any], *, exclude: str | None = None) -> str | None:
    for k, item in _body(parent):
        if (k is not None and k.key != exclude and isinstance(item, Item)
                and not isinstance(item, Table | AoT)):
            return item.trivia.indent
    return None


def _child_table_indent(parent: MutableMapping[Any, Any]) -> str:
    for k, item in _body(parent):
        if k is not None and isinstance(item, Table) and not item.is_super_table():
            return item.trivia.indent
    if isinstance(parent, Table):
        return _key_indent(parent) or ""
    return ""


def _step(parent: MutableMapping[Any, Any]) -> str:
    """The extra indentation of keys under a header, as the file's existing tables use it."""
    if isinstance(parent, Table):
        keys = _key_indent(parent)
        if keys is not None and len(keys) > len(parent.trivia.indent):
            return keys[len(parent.trivia.indent):]
    for _, item in _body(parent):
        if isinstance(item, Table):
            keys = _key_indent(item)
            if keys is not None and len(keys) > len(item.trivia.indent):
                return keys[len(item.trivia.indent):]
    return ""
