"""Telling an object's intent apart from its status, for watch handlers.

Why: with a status subresource, a controller's own status write comes back to it as a
MODIFIED event. Every os-proxy watches the OS objects and the operator rewrites an OS's status
whenever a node moves, so reacting to status-only events would cost every node a full pass per
node transition anywhere in the fleet (quadratic in the fleet size). What a decision depends on
is the spec, the generation, deletion and finalizers; only a change there needs a new pass.
"""

from __future__ import annotations

from typing import Any


def intent_of(obj: Any) -> tuple[Any, ...]:
    """The parts of a generic (dict) object that a reconcile depends on besides status."""
    meta = obj.get("metadata") or {}
    return (meta.get("generation"), meta.get("deletionTimestamp"),
            tuple(meta.get("finalizers") or ()), repr(obj.get("spec")))


def intent_changed(event: str, new: Any, old: Any) -> bool:
    """False only for a MODIFIED event that left everything but status (and metadata noise)."""
    if event != "MODIFIED" or new is None or old is None:
        return True
    return intent_of(new) != intent_of(old)
