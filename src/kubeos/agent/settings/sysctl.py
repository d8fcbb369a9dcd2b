"""``kernel.sysctl`` (live values under /proc/sys) and ``kernel.sysctl.persist`` (sysctl.conf).

The persist editor changes only the lines it must: untouched lines, blank lines and comments
stay byte for byte (the reference rewrote every line as ``key=value`` and dropped blank lines),
an updated line keeps its spacing around ``=``, and every occurrence of a key is edited, not
just the first (sysctl applies the last one, so editing only the first did nothing).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from kubeos.agent.settings import rules
from kubeos.agent.settings.errors import ParseError, SysctlKeyError
from kubeos.agent.settings.lines import append_lines, split_lines
from kubeos.agent.settings.model import Context, Outcome
from kubeos.agent.settings.paths import node_path
from kubeos.agent.settings.persist_path import check_on_disk, check_persist_path
from kubeos.agent.settings.request import ConfigRequest, Content
from kubeos.agent.settings.result import LIVE, NEXT_BOOT, FileChange, SettingsWarning
from kubeos.agent.settings.values import string_form

PROC_SYS = PurePosixPath("/proc/sys")
DEFAULT_SYSCTL_CONF = "/etc/sysctl.conf"


def sysctl_segments(key: str) -> tuple[str, ...]:
    """A sysctl name's path segments, by sysctl.d(5)'s rule: if the first separator is ``/``,
    only ``/`` separates; if it is ``.``, dots separate and a ``/`` stands for a literal dot
    (``net.ipv4.conf.eth0/10.rp_filter`` is ``net/ipv4/conf/eth0.10/rp_filter``)."""
    key = key.strip()
    first = next((c for c in key if c in "./"), ".")
    if first == "/":
        return tuple(key.split("/"))
    return tuple(part.replace("/", ".") for part in key.split("."))


def proc_path(key: str) -> PurePosixPath | None:
    """/proc/sys path of a key, or None when the key cannot name a file there."""
    parts = sysctl_segments(key)
    if not parts or any(p in ("", ".", "..") for p in parts):
        return None
    return PROC_SYS.joinpath(*parts)


class KernelSysctl:
    """Live kernel parameters: written to /proc/sys, in force at once, lost at reboot."""

    name = "kernel.sysctl"
    effect = LIVE

    def apply(self, config: ConfigRequest, ctx: Context) -> Outcome:
        rules.reject_line_breaks(self.name, config.contents)
        out = Outcome()
        for content in config.contents:
            node = self._target(content, out)
            if node is None:
                continue
            value = string_form(content.value) or ""
            if not ctx.stage.exists(node):
                raise SysctlKeyError("no such kernel parameter", model=self.name,
                                     key=content.key, file=node)
            before = ctx.stage.read_live(node, model=self.name)
            if before is not None and before.split() == value.split():
                continue
            after = value + "\n"
            ctx.stage.write_live(node, after, model=self.name)
            out.files.append(FileChange(node, before, after))
        return out

    def _target(self, content: Content, out: Outcome) -> PurePosixPath | None:
        """The proc file to write, or None (with a warning) for keys the reference skips."""
        def warn(message: str) -> None:
            out.warnings.append(SettingsWarning(self.name, content.key, message))

        value = string_form(content.value)
        if value is None:
            warn("value must be a string, number, boolean or null; key skipped")
        elif content.is_delete:
            warn("kernel.sysctl cannot delete a parameter; key skipped")
        elif content.operation:
            warn(f"kernel.sysctl takes no operation (got {content.operation!r}); key skipped")
        elif not value.strip():
            warn("empty value; key skipped")
        elif not content.key.strip() or "=" in content.key:
            warn("empty key or key containing '=' skipped")
        else:
            node = proc_path(content.key)
            if node is None:
                raise SysctlKeyError("malformed kernel parameter name", model=self.name,
                                     key=content.key)
            return node
        return None


class KernelSysctlPersist:
    """Persistent kernel parameters in a sysctl.conf-format file, read at boot."""

    name = "kernel.sysctl.persist"
    effect = NEXT_BOOT

    def apply(self, config: ConfigRequest, ctx: Context) -> Outcome:
        node = node_path(self.name, config.configpath, DEFAULT_SYSCTL_CONF)
        check_persist_path(self.name, node, ctx.persist_dirs)
        check_on_disk(self.name, node, ctx.stage.root, ctx.stage.real(node), ctx.persist_dirs)
        rules.reject_line_breaks(self.name, config.contents)
        out = Outcome()

        def warn(key: str, message: str) -> None:
            out.warnings.append(SettingsWarning(self.name, key, message, node))

        before = ctx.stage.read(node, model=self.name)
        after = edit_sysctl_conf(before or "", config.contents, warn, node=node)
        ctx.stage.write(node, after, model=self.name)
        out.files.append(FileChange(node, before, after))
        return out


def edit_sysctl_conf(
    text: str, contents: tuple[Content, ...], warn: rules.Warn, *, node: PurePosixPath
) -> str:
    """Apply ``contents`` to sysctl.conf text; see the module docstring for what is kept."""
    wanted = {sysctl_segments(c.key): c for c in contents if c.key.strip()}
    found: set[tuple[str, ...]] = set()
    out: list[str] = []
    for number, (body, ending) in enumerate(split_lines(text), start=1):
        stripped = body.strip()
        if not stripped or stripped[0] in "#;":
            out.append(body + ending)
            continue
        name, sep, raw_value = body.partition("=")
        if not sep:
            raise ParseError(f"cannot parse line {body!r} (no '=')", model=KernelSysctlPersist.name,
                             file=node, line=number)
        key = sysctl_segments(name.strip().removeprefix("-"))
        content = wanted.get(key)
        if content is None:
            out.append(body + ending)
            continue
        found.add(key)
        old = raw_value.strip()
        if content.is_delete:
            if not rules.delete(old, content, warn):
                out.append(body + ending)
            continue
        new = rules.update(old, content, warn)
        if isinstance(new, rules.Keep) or new is None or new == old:
            out.append(body + ending)
            continue
        lead = raw_value[: len(raw_value) - len(raw_value.lstrip())]
        trail = raw_value[len(raw_value.rstrip()):]
        out.append(f"{name}={lead}{new}{trail}{ending}")
    additions = []
    for content in contents:
        if content.key.strip() and sysctl_segments(content.key) in found:
            continue
        added = rules.add(content, warn, bare_ok=False)
        if added is not None:
            additions.append(f"{added[0]}={added[1]}")
    return append_lines("".join(out), additions)
