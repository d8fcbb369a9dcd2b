"""``kubernetes.kubelet``: dotted keys in the kubelet's YAML config, edited with ruamel.yaml.

The round-trip loader keeps comments, key order, quoting and blank lines, and the dumper is set
to the file's own indentation and never re-wraps long lines. What ruamel still re-formats
(spacing after ``:``, inside flow collections, indentation of blocks) is undone line by line by
:func:`keep_untouched_lines`, so only the edited keys' lines change (the reference
re-serialised the document and lost every comment). A file that nothing in the request changes
is not rewritten at all. A replaced string keeps its quoting style.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import MutableMapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import ScalarString

from kubeos.agent.settings import rules, tree
from kubeos.agent.settings.errors import ParseError
from kubeos.agent.settings.model import Context, Outcome
from kubeos.agent.settings.paths import node_path
from kubeos.agent.settings.request import ConfigRequest, Content, JsonValue
from kubeos.agent.settings.result import FileChange, SettingsWarning, restart

DEFAULT_KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
_NO_WRAP = 1 << 16


class KubernetesKubelet:
    """Edits the kubelet config (created if missing); the kubelet must then restart."""

    name = "kubernetes.kubelet"
    effect = restart("kubelet")

    def apply(self, config: ConfigRequest, ctx: Context) -> Outcome:
        node = node_path(self.name, config.configpath, DEFAULT_KUBELET_CONFIG)
        out = Outcome()

        def warn(key: str, message: str) -> None:
            out.warnings.append(SettingsWarning(self.name, key, message, node))

        before = ctx.stage.read(node, model=self.name)
        try:
            after = edit_yaml(before or "", config.contents, warn)
        except YAMLError as exc:
            line = None
            if isinstance(exc, MarkedYAMLError) and exc.problem_mark is not None:
                line = exc.problem_mark.line + 1
            raise ParseError(f"cannot parse YAML: {_first_line(exc)}", model=self.name,
                             file=node, line=line) from exc
        except _NotAMapping as exc:
            raise ParseError(str(exc), model=self.name, file=node) from exc
        ctx.stage.write(node, after, model=self.name)
        out.files.append(FileChange(node, before, after))
        return out


class _NotAMapping(Exception):
    pass


def edit_yaml(text: str, contents: tuple[Content, ...], warn: rules.Warn) -> str:
    """Apply ``contents`` to YAML text; unchanged documents come back byte for byte."""
    yaml = _yaml(text)
    doc = yaml.load(text)
    prefix = ""
    if doc is None:
        # Empty or comments only: keep those comments above the new keys.
        doc = CommentedMap()
        prefix = text if not text or text.endswith("\n") else text + "\n"
        if prefix.strip() == "":
            prefix = ""
    if not isinstance(doc, MutableMapping):
        raise _NotAMapping(f"top level is a {type(doc).__name__}, not a mapping")
    ops = tree.TreeOps(convert=_convert, nest=_nest, assign=_assign, null_is_mapping=True)
    if not tree.apply_contents(doc, contents, ops, warn):
        return text
    buffer = io.StringIO()
    yaml.dump(doc, buffer)
    if prefix:
        return prefix + buffer.getvalue()
    return keep_untouched_lines(text, _restore_head(text, buffer.getvalue()))


def keep_untouched_lines(original: str, dumped: str) -> str:
    """Undo ruamel's re-formatting of lines the request did not touch.

    The dumper normalises spacing (``a:   1`` → ``a: 1``, ``[x,   y]`` → ``[x, y]``) and
    indentation of whole blocks. Where a dumped line differs from its original only in
    whitespace (lines are paired by a diff of their whitespace-free forms), the original line
    is kept. The merged text is accepted only if it loads to the same data as the dumped text;
    otherwise the dumped text is used as is.
    """
    old, new = original.splitlines(keepends=True), dumped.splitlines(keepends=True)
    old_bare, new_bare = ["".join(ln.split()) for ln in old], ["".join(ln.split()) for ln in new]
    if len(old) == len(new):
        # Updates in place (the common case): compare line by line, in linear time.
        pairs = [(i, i) for i in range(len(old)) if old_bare[i] == new_bare[i]]
    else:
        matcher = difflib.SequenceMatcher(a=old_bare, b=new_bare, autojunk=False)
        pairs = [(block.a + k, block.b + k) for block in matcher.get_matching_blocks()
                 for k in range(block.size)]
    merged = list(new)
    kept = False
    for i, j in pairs:
        if old[i] != new[j]:
            merged[j] = old[i]
            kept = True
    if not kept:
        return dumped
    result = "".join(merged)
    try:
        same = _data(result) == _data(dumped)
    except YAMLError:
        same = False
    return result if same else dumped


def _data(text: str) -> Any:
    return YAML(typ="safe").load(text)


def _head(text: str) -> tuple[str, str]:
    """Split off the leading blank and comment lines (and a ``---`` line) of a document."""
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and (not lines[n].strip() or lines[n].lstrip().startswith("#")
                              or lines[n].rstrip() == "---"):
        n += 1
    return "".join(lines[:n]), "".join(lines[n:])


def _restore_head(original: str, dumped: str) -> str:
    """Put back the original's leading blank lines and comments, which ruamel may drop."""
    head, _ = _head(original)
    return head + _head(dumped)[1]


def _yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = _NO_WRAP
    mapping, sequence, offset = _guess_indent(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    if text.lstrip().startswith("---"):
        yaml.explicit_start = True
    return yaml


def _guess_indent(text: str) -> tuple[int, int, int]:
    """``(mapping, sequence, offset)`` indentation as the file uses it (ruamel's defaults when
    the file shows none), so re-dumping does not re-indent untouched blocks.

    A line-based guess, not ruamel's ``load_yaml_guess_indent``: that parses the whole document
    a second time and mistakes the sequence indent for the mapping indent.
    """
    mapping: int | None = None
    sequence: tuple[int, int] | None = None
    previous: tuple[int, str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if previous is not None and previous[1].endswith(":"):
            if stripped.startswith("- ") and sequence is None:
                offset = indent - previous[0]
                after_dash = len(stripped[1:]) - len(stripped[1:].lstrip(" "))
                sequence = (offset + 1 + after_dash, offset)
            elif (indent > previous[0] and mapping is None and not stripped.startswith("- ")
                  and not previous[1].startswith("- ")):
                mapping = indent - previous[0]
        if mapping is not None and sequence is not None:
            break
        previous = (indent, stripped.split(" #")[0].rstrip())
    seq, offset = sequence if sequence is not None else (2, 0)
    return mapping or 2, max(seq, offset + 2), offset


def _convert(value: JsonValue, key: str) -> Any:
    if isinstance(value, dict):
        mapping = CommentedMap()
        for k, v in value.items():
            mapping[k] = _convert(v, key)
        return mapping
    if isinstance(value, list):
        return CommentedSeq(_convert(v, key) for v in value)
    return value


def _assign(parent: MutableMapping[Any, Any], segment: str, value: Any) -> None:
    existing = parent[segment]
    if isinstance(existing, ScalarString) and isinstance(value, str):
        value = type(existing)(value)
    parent[segment] = value


def _nest(parent: MutableMapping[Any, Any], segments: tuple[str, ...], value: Any) -> None:
    for segment in reversed(segments[1:]):
        mapping = CommentedMap()
        mapping[segment] = value
        value = mapping
    parent[segments[0]] = value


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
