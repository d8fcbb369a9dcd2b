"""Dotted keys with quoted segments, shared by the YAML (kubelet) and TOML (containerd) models.

``evictionHard."memory.available"`` is two segments. The splitting pattern is the reference's,
so keys that worked there split the same way; unlike the reference, single-quoted segments are
unquoted too (``a.'b.c'`` is ``a`` then ``b.c``), which is what TOML's literal keys mean.
"""

from __future__ import annotations

import re

_SEGMENT = re.compile(r"""[^."']+|"([^"]*)"|'([^']*)'""")


def split_key(key: str) -> tuple[str, ...]:
    """Split a dotted key into its segments, quotes removed."""
    parts: list[str] = []
    for match in _SEGMENT.finditer(key):
        if match.group(1) is not None:
            parts.append(match.group(1))
        elif match.group(2) is not None:
            parts.append(match.group(2))
        else:
            parts.append(match.group(0).strip())
    return tuple(parts)
