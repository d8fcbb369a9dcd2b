"""The delete / update / add rules shared by the line-based models (sysctl.persist, grub).

They are the reference's rules, kept because users' CRs depend on them: deleting needs the
value to match what is in the file (so a stale CR cannot delete a setting someone changed),
an empty value never overwrites a value, and a bare key (``quiet``) is only valid on the kernel
command line. Each rule reports through ``warn`` instead of raising, because the reference
skipped these keys with a warning and went on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kubeos.agent.settings.errors import ValueTypeError
from kubeos.agent.settings.request import UPSERT_OPERATIONS, Content
from kubeos.agent.settings.values import string_form

Warn = Callable[[str, str], None]
"""``warn(key, message)``."""


@dataclass(frozen=True)
class Keep:
    """Sentinel result of :func:`update`: leave the line as it is."""


KEEP = Keep()


def delete(old: str | None, content: Content, warn: Warn) -> bool:
    """Whether a ``key`` (``old`` None) or ``key=old`` entry is deleted by ``content``."""
    new = string_form(content.value)
    if new is None:
        warn(content.key, "value must be a string, number, boolean or null; not deleted")
        return False
    if old is None:
        if new == "":
            return True
        warn(content.key, f"not deleted: file has the bare key, request says {new!r}")
        return False
    if old != new:
        warn(content.key, f"not deleted: file has value {old!r}, request says {new!r}")
        return False
    return True


def update(old: str | None, content: Content, warn: Warn) -> str | Keep | None:
    """The new value (None means bare key) for an existing entry, or KEEP."""
    _warn_unknown_operation(content, warn)
    new = string_form(content.value)
    if new is None:
        warn(content.key, "value must be a string, number, boolean or null; key skipped")
        return KEEP
    new = new.strip()
    if old is None:
        return None if new == "" else new
    if new == "":
        warn(content.key, "cannot update a key to an empty value; delete it, then add it")
        return KEEP
    return new


def add(content: Content, warn: Warn, *, bare_ok: bool) -> tuple[str, str | None] | None:
    """The ``(key, value)`` to append for a key not in the file, or None to skip it."""
    if content.is_delete:
        warn(content.key, "key not found, nothing to delete")
        return None
    key = content.key.strip()
    if not key or "=" in key or any(c.isspace() for c in key):
        warn(content.key, "empty key or key containing '=' or whitespace skipped")
        return None
    _warn_unknown_operation(content, warn)
    new = string_form(content.value)
    if new is None:
        warn(content.key, "value must be a string, number, boolean or null; key skipped")
        return None
    new = new.strip()
    if new == "":
        if bare_ok:
            return key, None
        warn(content.key, "cannot add a key with an empty value; key skipped")
        return None
    return key, new


def _warn_unknown_operation(content: Content, warn: Warn) -> None:
    if content.operation not in UPSERT_OPERATIONS:
        warn(content.key, f"unknown operation {content.operation!r}, treated as add/update")


#: Every character ``str.splitlines`` breaks at (the engine splits files with it), and NUL.
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029\0")


def reject_line_breaks(model: str, contents: tuple[Content, ...]) -> None:
    """Refuse line breaks in keys and values of line-based files: one would smuggle a second,
    unrequested setting (``"1\\nkernel.modules_disabled=1"``) into the file. Any character
    ``splitlines`` treats as a break counts, not only ``\\r`` and ``\\n``."""
    for content in contents:
        value = string_form(content.value) or ""
        for text in (content.key, value):
            found = next((c for c in text if c in LINE_BREAKS), None)
            if found is not None:
                raise ValueTypeError(f"line breaks are not allowed in keys or values "
                                     f"(found {found!r})", model=model, key=content.key)
