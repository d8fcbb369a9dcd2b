"""``pam.limits``: ``<domain> <type> <item> <value>`` lines of /etc/security/limits.conf.

Key is the domain, value is ``type.item.value`` where ``_`` keeps the file's field. Like the
reference, an update of a domain edits one of its lines and a delete needs the exact
``type.item.value``. Better than the reference: fields may be separated by any run of spaces
or tabs (the reference failed on tabs) and keep their separators, trailing ``#`` comments are
kept, an update prefers the domain's line with the same type and item (so ``*: hard.nofile.N``
no longer rewrites an unrelated ``* soft core`` line that happens to come first), and a
delete removes the matching line wherever it is among the domain's lines.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from kubeos.agent.settings import rules
from kubeos.agent.settings.errors import MissingFileError, ParseError, ValueTypeError
from kubeos.agent.settings.lines import append_lines, split_lines
from kubeos.agent.settings.model import Context, Outcome
from kubeos.agent.settings.paths import node_path
from kubeos.agent.settings.request import UPSERT_OPERATIONS, ConfigRequest, Content
from kubeos.agent.settings.result import NEXT_LOGIN, FileChange, SettingsWarning
from kubeos.agent.settings.values import string_form

DEFAULT_LIMITS_CONF = "/etc/security/limits.conf"
KEEP_FIELD = "_"

_FIELD = re.compile(r"(\s*)(\S+)")


class _Line:
    """A parsed limits line: four (separator, field) pairs, plus what follows them."""

    def __init__(self, fields: list[tuple[str, str]], rest: str, ending: str) -> None:
        self.fields = fields
        self.rest = rest
        self.ending = ending

    @property
    def domain(self) -> str:
        return self.fields[0][1]

    @property
    def spec(self) -> tuple[str, str, str]:
        return self.fields[1][1], self.fields[2][1], self.fields[3][1]

    def render(self) -> str:
        return "".join(ws + f for ws, f in self.fields) + self.rest + self.ending


class PamLimits:
    """Edits a limits.conf-format file (default /etc/security/limits.conf, which must exist)."""

    name = "pam.limits"
    effect = NEXT_LOGIN

    def apply(self, config: ConfigRequest, ctx: Context) -> Outcome:
        node = node_path(self.name, config.configpath, DEFAULT_LIMITS_CONF)
        rules.reject_line_breaks(self.name, config.contents)
        _reject_comment_marks(config.contents)
        out = Outcome()

        def warn(key: str, message: str) -> None:
            out.warnings.append(SettingsWarning(self.name, key, message, node))

        before = ctx.stage.read(node, model=self.name)
        if before is None and not config.configpath:
            raise MissingFileError("file not found", model=self.name, file=node)
        after = edit_limits(before or "", config.contents, warn, node=node)
        ctx.stage.write(node, after, model=self.name)
        out.files.append(FileChange(node, before, after))
        return out


def _reject_comment_marks(contents: tuple[Content, ...]) -> None:
    """A ``#`` starts a comment in limits.conf: in a domain or value it would cut the line
    short, and the truncated line would make every later edit of the file fail to parse."""
    for content in contents:
        value = string_form(content.value) or ""
        if "#" in content.key or "#" in value:
            where = "key" if "#" in content.key else "value"
            raise ValueTypeError(f"'#' is not allowed in the {where}: it starts a comment in "
                                 "limits.conf", model=PamLimits.name, key=content.key)


def edit_limits(
    text: str, contents: tuple[Content, ...], warn: rules.Warn, *, node: PurePosixPath
) -> str:
    """Apply ``contents`` to limits.conf text; see the module docstring."""
    lines: list[_Line | str] = [_parse(body, ending, number, node)
                                for number, (body, ending) in enumerate(split_lines(text), 1)]
    by_domain: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        if isinstance(line, _Line):
            by_domain.setdefault(line.domain, []).append(i)
    additions: list[str] = []
    for content in contents:
        domain = content.key.strip()
        mine = [i for i in by_domain.get(domain, []) if isinstance(lines[i], _Line)]
        if not mine:
            added = _add(content, warn)
            if added:
                additions.append(added)
        elif content.is_delete:
            _delete(lines, mine, content, warn)
        else:
            _update(lines, mine, content, warn)
    rendered = "".join(line if isinstance(line, str) else line.render() for line in lines)
    return append_lines(rendered, additions)


def _parse(body: str, ending: str, number: int, node: PurePosixPath) -> _Line | str:
    stripped = body.strip()
    if not stripped or stripped.startswith("#"):
        return body + ending
    code, hash_, comment = body.partition("#")
    fields = [(m.group(1), m.group(2)) for m in _FIELD.finditer(code)]
    if len(fields) != 4:
        raise ParseError(f"cannot parse line {body!r} (want domain, type, item, value)",
                         model=PamLimits.name, file=node, line=number)
    consumed = len("".join(ws + f for ws, f in fields))
    return _Line(fields, code[consumed:] + hash_ + comment, ending)


def _spec(content: Content, warn: rules.Warn) -> list[str] | None:
    value = string_form(content.value)
    if value is None:
        warn(content.key, "value must be a string like 'soft.nofile.1024'; key skipped")
        return None
    if not value.strip():
        warn(content.key, "empty value; key skipped")
        return None
    parts = [p.strip() for p in value.strip().split(".")]
    if len(parts) != 3 or not all(parts) or any(c.isspace() for p in parts for c in p):
        warn(content.key, f"value {value!r} is not 'type.item.value'; key skipped")
        return None
    return parts


def _delete(lines: list[_Line | str], mine: list[int], content: Content,
            warn: rules.Warn) -> None:
    wanted = string_form(content.value)
    matches = [i for i in mine if ".".join(_as_line(lines[i]).spec) == wanted]
    if not matches:
        old = ".".join(_as_line(lines[mine[0]]).spec)
        warn(content.key, f"not deleted: file has {old!r}, request says {wanted!r}")
    for i in matches:
        lines[i] = ""


def _update(lines: list[_Line | str], mine: list[int], content: Content,
            warn: rules.Warn) -> None:
    if content.operation not in UPSERT_OPERATIONS:
        warn(content.key, f"unknown operation {content.operation!r}, treated as add/update")
    parts = _spec(content, warn)
    if parts is None:
        return
    same_item = [i for i in mine if KEEP_FIELD not in parts[:2]
                 and _as_line(lines[i]).spec[:2] == (parts[0], parts[1])]
    line = _as_line(lines[(same_item or mine)[0]])
    for n, part in enumerate(parts, start=1):
        if part != KEEP_FIELD:
            line.fields[n] = (line.fields[n][0], part)


def _add(content: Content, warn: rules.Warn) -> str | None:
    if content.is_delete:
        warn(content.key, "domain not found, nothing to delete")
        return None
    domain = content.key.strip()
    if not domain or any(c.isspace() for c in domain):
        warn(content.key, "empty key or key containing whitespace skipped")
        return None
    if content.operation not in UPSERT_OPERATIONS:
        warn(content.key, f"unknown operation {content.operation!r}, treated as add/update")
    parts = _spec(content, warn)
    if parts is None:
        return None
    if KEEP_FIELD in parts:
        warn(content.key, "'_' (keep) is meaningless for a new line; key skipped")
        return None
    return " ".join([domain, *parts])


def _as_line(line: _Line | str) -> _Line:
    assert isinstance(line, _Line)
    return line
