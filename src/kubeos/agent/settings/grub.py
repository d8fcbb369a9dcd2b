"""``grub.cmdline.current`` / ``grub.cmdline.next``: kernel parameters of the A and B entries.

Which entry is "current" depends on the slot the node booted from (the caller says which).
Entries are found by their GRUB id (``menuentry ... --id A``) or title (``menuentry 'A'``);
a grub.cfg without either falls back to the reference rule: the first ``linux ... root=``
line is slot A and every later one is slot B.

Only the edited parameters change: the line keeps its indentation and the spacing between
tokens (the reference rebuilt it as eight spaces and single-spaced tokens), and blank lines
elsewhere in the file stay (the reference dropped them). A parameter given twice on the line
(``console=tty0 console=ttyS0``) is updated at its first occurrence unless one occurrence
already has the requested value, and deleted wherever its value matches.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Literal

from kubeos.agent.settings import grub_syntax, rules
from kubeos.agent.settings.errors import MissingFileError, ParseError, ValueTypeError
from kubeos.agent.settings.lines import split_lines
from kubeos.agent.settings.model import Context, Outcome, Slot
from kubeos.agent.settings.paths import node_path, real_path
from kubeos.agent.settings.request import ConfigRequest, Content
from kubeos.agent.settings.result import NEXT_BOOT, FileChange, SettingsWarning
from kubeos.agent.settings.values import string_form

DEFAULT_GRUB_CFG = "/boot/efi/EFI/openEuler/grub.cfg"
LEGACY_GRUB_CFG = "/boot/grub2/grub.cfg"

_MENUENTRY = re.compile(r"^\s*menuentry\s+(?P<args>.*?)\s*\{?\s*$")
_LINUX = re.compile(r"^\s*(linux|linuxefi|linux16)\s")
_LINUX_WITH_ROOT = re.compile(r"^\s*linux.*root=.*")
# A token is a run of non-space characters, where a double-quoted part may contain spaces.
_TOKEN = re.compile(r'(\s*)((?:[^\s"]+|"[^"]*")+)')


class GrubCmdline:
    """Edits the ``linux`` line of the current or the next slot's menu entry."""

    effect = NEXT_BOOT

    def __init__(self, which: Literal["current", "next"]) -> None:
        self.name = f"grub.cmdline.{which}"
        self.which = which

    def target_slot(self, booted: Slot) -> Slot:
        if self.which == "current":
            return booted
        return "B" if booted == "A" else "A"

    def apply(self, config: ConfigRequest, ctx: Context) -> Outcome:
        rules.reject_line_breaks(self.name, config.contents)
        check_arguments(self.name, config.contents)
        out = Outcome()
        if _dm_verity(ctx):
            out.warnings.append(SettingsWarning(
                self.name, "", "dm-verity root: the kernel command line is signed, not edited"))
            return out
        node = self._grub_cfg(config, ctx)
        text = ctx.stage.read(node, model=self.name)
        if text is None:
            raise MissingFileError("grub.cfg not found", model=self.name, file=node)

        def warn(key: str, message: str) -> None:
            out.warnings.append(SettingsWarning(self.name, key, message, node))

        slot = self.target_slot(ctx.booted_slot)
        lines = split_lines(text)
        indexes = linux_lines(lines).get(slot)
        if not indexes:
            raise ParseError(f"no 'linux' line for the menu entry of slot {slot}",
                             model=self.name, file=node)
        report: rules.Warn = warn
        for index in indexes:
            body, ending = lines[index]
            lines[index] = (edit_cmdline(body, config.contents, report), ending)
            report = _silent  # warn once, for the first line edited
        after = "".join(body + ending for body, ending in lines)
        broken = grub_syntax.new_errors(text, after)
        if broken is not None:
            raise ParseError(f"the edited grub.cfg would not parse ({broken}); nothing written",
                             model=self.name, file=node)
        ctx.stage.write(node, after, model=self.name)
        out.files.append(FileChange(node, text, after))
        return out

    def _grub_cfg(self, config: ConfigRequest, ctx: Context) -> PurePosixPath:
        if config.configpath:
            return node_path(self.name, config.configpath, DEFAULT_GRUB_CFG)
        default = PurePosixPath(DEFAULT_GRUB_CFG)
        legacy = PurePosixPath(LEGACY_GRUB_CFG)
        if not ctx.stage.exists(default) and ctx.stage.exists(legacy):
            return legacy
        return default


def check_arguments(model: str, contents: tuple[Content, ...]) -> None:
    """Refuse any key or value that would not stay one kernel argument on the GRUB line."""
    for content in contents:
        key = content.key.strip()
        value = None if content.is_delete else string_form(content.value)
        problem = grub_syntax.check_argument(key, value or None)
        if problem is not None and key:
            raise ValueTypeError(problem, model=model, key=content.key)


def linux_lines(lines: list[tuple[str, str]]) -> dict[Slot, list[int]]:
    """Indexes of the ``linux`` lines of slots A and B (see the module docstring)."""
    by_entry: dict[Slot, list[int]] = {}
    entry: Slot | None = None
    for index, (body, _) in enumerate(lines):
        match = _MENUENTRY.match(body)
        if match:
            entry = _entry_slot(match.group("args"))
            continue
        if entry is not None and _LINUX.match(body) and entry not in by_entry:
            by_entry[entry] = [index]
    if by_entry:
        return by_entry
    matching = [i for i, (body, _) in enumerate(lines) if _LINUX_WITH_ROOT.match(body)]
    return {"A": matching[:1], "B": matching[1:]}


def _entry_slot(args: str) -> Slot | None:
    try:
        words = shlex.split(args)
    except ValueError:
        return None
    ident = None
    for i, word in enumerate(words):
        if word in ("--id", "$menuentry_id_option") and i + 1 < len(words):
            ident = words[i + 1]
        elif word.startswith("--id="):
            ident = word.removeprefix("--id=")
    for candidate in (ident, words[0] if words else None):
        if candidate == "A":
            return "A"
        if candidate == "B":
            return "B"
    return None


def edit_cmdline(body: str, contents: tuple[Content, ...], warn: rules.Warn) -> str:
    """Apply ``contents`` to one ``linux`` line, keeping its whitespace."""
    tokens = [(m.group(1), m.group(2)) for m in _TOKEN.finditer(body)]
    trailing = body[len("".join(ws + tok for ws, tok in tokens)):]
    head, params = tokens[:2], tokens[2:]
    wanted = {c.key.strip(): c for c in contents if c.key.strip()}
    occurrences: dict[str, list[int]] = {}
    for i, (_, token) in enumerate(params):
        occurrences.setdefault(_split(token)[0], []).append(i)

    drop: set[int] = set()
    for key, content in wanted.items():
        where = occurrences.get(key)
        if not where:
            continue
        if content.is_delete:
            matches = [i for i in where if rules.delete(_split(params[i][1])[1], content, _silent)]
            if not matches:
                rules.delete(_split(params[where[0]][1])[1], content, warn)
            drop.update(matches)
            continue
        first = where[0]
        new = rules.update(_split(params[first][1])[1], content, warn)
        if isinstance(new, rules.Keep):
            continue
        token = key if new is None else f"{key}={_quote(new)}"
        if any(params[i][1] == token for i in where):
            continue
        params[first] = (params[first][0], token)

    kept = [p for i, p in enumerate(params) if i not in drop]
    for content in contents:
        if content.key.strip() in occurrences:
            continue
        added = rules.add(content, warn, bare_ok=True)
        if added is not None:
            key, value = added
            kept.append((" ", key if value is None else f"{key}={_quote(value)}"))
    return "".join(ws + tok for ws, tok in head + kept) + trailing


def _split(token: str) -> tuple[str, str | None]:
    """``key=value`` → (key, value without surrounding double quotes); ``key`` → (key, None)."""
    key, sep, value = token.partition("=")
    if not sep:
        return key, None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return key, value


def _quote(value: str) -> str:
    """Double-quote a value with spaces, as the kernel's command-line parser expects."""
    return f'"{value}"' if any(c.isspace() for c in value) else value


def _silent(key: str, message: str) -> None:
    """A warn callback that discards: used where a later call reports the outcome."""


def _dm_verity(ctx: Context) -> bool:
    """A dm-verity root carries ``dmvroothash=`` on its command line; its grub.cfg is signed."""
    try:
        cmdline = real_path(ctx.stage.root, PurePosixPath("/proc/cmdline")).read_text()
    except OSError:
        return False
    return any(word.startswith("dmvroothash=") for word in cmdline.split())
