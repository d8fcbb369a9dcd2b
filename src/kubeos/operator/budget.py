"""How many selected nodes may be unavailable at once.

``maxunavailable`` is an integer or a percentage of the selected nodes, rounded down but at
least 1 (a percentage must never stall a small group), and never more than the group. The
reference left it unvalidated; here a malformed value raises ``ValueError`` so the caller can
report it instead of guessing.
"""

from __future__ import annotations

import math


def max_unavailable(value: int | str, selected: int) -> int:
    """The number of nodes that may be unavailable among *selected* nodes."""
    if selected <= 0:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"maxunavailable must be an integer or a percentage, not {value!r}")
    if isinstance(value, int):
        count = value
    else:
        text = value.strip()
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError as error:
                raise ValueError(f"maxunavailable {value!r} is not a percentage") from error
            if not 0 < percent <= 100:
                raise ValueError(f"maxunavailable {value!r} must be between 1% and 100%")
            count = max(1, math.floor(selected * percent / 100))
        else:
            try:
                count = int(text)
            except ValueError as error:
                raise ValueError(
                    f"maxunavailable {value!r} is neither an integer nor a percentage"
                ) from error
    if count < 1:
        raise ValueError(f"maxunavailable must be at least 1, got {value!r}")
    return min(count, selected)
