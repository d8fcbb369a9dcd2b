"""Small builders and calls for the two write styles controllers should use.

* JSON merge patches that carry ``metadata.resourceVersion``: the API server rejects them with
  409 Conflict when the object changed since we read it, which is optimistic concurrency
  without a full PUT (a PUT would overwrite fields other writers own, such as the kubelet's).
* Server-side apply with a named field manager, for objects we own outright.
"""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType


def label_patch(changes: dict[str, str | None]) -> dict[str, Any]:
    """A merge patch setting (value) or removing (None) labels; other labels are untouched."""
    return {"metadata": {"labels": dict(changes)}}


def annotation_patch(changes: dict[str, str | None]) -> dict[str, Any]:
    """A merge patch setting (value) or removing (None) annotations."""
    return {"metadata": {"annotations": dict(changes)}}


def with_precondition(patch: dict[str, Any], resource_version: str) -> dict[str, Any]:
    """Copy of *patch* that only applies if the object is still at *resource_version*."""
    out = dict(patch)
    meta = dict(out.get("metadata") or {})
    meta["resourceVersion"] = resource_version
    out["metadata"] = meta
    return out


def merge(*patches: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge several merge patches into one (later ones win), so one request suffices."""
    out: dict[str, Any] = {}
    for patch in patches:
        _merge_into(out, patch)
    return out


def _merge_into(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        elif isinstance(value, dict):
            target[key] = {}
            _merge_into(target[key], value)
        else:
            target[key] = value


async def merge_patch(
    client: AsyncClient,
    res: Any,
    name: str,
    patch: dict[str, Any],
    *,
    namespace: str | None = None,
    resource_version: str | None = None,
) -> Any:
    """Send a JSON merge patch, guarded by *resource_version* when given; returns the object."""
    body = with_precondition(patch, resource_version) if resource_version else patch
    return await client.patch(res, name, body, namespace=namespace, patch_type=PatchType.MERGE)


async def apply(client: AsyncClient, obj: Any, *, field_manager: str, force: bool = True) -> Any:
    """Server-side apply *obj* as *field_manager* (forcing takes over conflicting fields)."""
    return await client.apply(obj, field_manager=field_manager, force=force)


def is_conflict(error: BaseException) -> bool:
    """True for 409 Conflict: somebody else changed the object; re-read and decide again."""
    return isinstance(error, ApiError) and error.status.code == 409


def is_not_found(error: BaseException) -> bool:
    """True for 404 Not Found."""
    return isinstance(error, ApiError) and error.status.code == 404


def is_gone(error: BaseException) -> bool:
    """True for 410 Gone: a watch's resourceVersion is too old; list again."""
    return isinstance(error, ApiError) and error.status.code == 410
