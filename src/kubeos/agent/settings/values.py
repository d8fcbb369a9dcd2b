"""The "string form" of a JSON value, as the line-based models (sysctl, grub, limits) see it.

Kept identical to the reference (null → "", numbers and booleans → their JSON text) because
users' existing CRs rely on ``value: 0`` and ``value: "0"`` meaning the same thing in a
sysctl file.
"""

from __future__ import annotations

import json

from kubeos.agent.settings.request import JsonValue


def string_form(value: JsonValue) -> str | None:
    """Return the value as text, or None when it has no line form (lists and mappings)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None
