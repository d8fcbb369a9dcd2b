"""The control plane itself: it starts, serves our CRDs, applies, updates status, watches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from lightkube import AsyncClient, Client
from lightkube.resources.core_v1 import Namespace
from lightkube.types import PatchType

from kubeos.sim.controlplane import ControlPlane

from .resources import OS

pytestmark = pytest.mark.cluster

CRD_NAMES = {"os.upgrade.openeuler.org", "osinstances.upgrade.openeuler.org"}


def _os(name: str, osversion: str = "KubeOS 1.0.2") -> dict[str, Any]:
    return {
        "apiVersion": "upgrade.openeuler.org/v1alpha1",
        "kind": "OS",
        "metadata": {"name": name},
        "spec": {
            "imagetype": "containerd",
            "opstype": "upgrade",
            "osversion": osversion,
            "maxunavailable": 2,
            "containerimage": "registry.example.internal/kubeos:1.0.2",
            "evictpodforce": False,
            "imageurl": "",
            "checksum": "",
            "flagSafe": False,
            "mtls": False,
        },
    }


def test_control_plane_serves_and_has_our_crds(
    control_plane: ControlPlane, sync_client: Client
) -> None:
    assert control_plane.server_url.startswith("https://127.0.0.1:")
    assert control_plane.kubeconfig_path.is_file()
    assert sync_client.get(Namespace, "default").metadata is not None
    assert set(control_plane.installed_crds) >= CRD_NAMES


def test_server_side_apply_and_status_subresource(sync_client: Client, namespace: str) -> None:
    applied = sync_client.apply(
        OS.from_dict(_os("ssa")), namespace=namespace, field_manager="test", force=True
    )
    assert applied.spec["osversion"] == "KubeOS 1.0.2"
    managers = {m.manager for m in applied.metadata.managedFields}
    assert "test" in managers

    # Re-applying a changed field updates it and bumps the generation.
    changed = sync_client.apply(
        OS.from_dict(_os("ssa", "KubeOS 1.0.3")), namespace=namespace, field_manager="test"
    )
    assert changed.spec["osversion"] == "KubeOS 1.0.3"
    assert changed.metadata.generation == applied.metadata.generation + 1

    # Status goes through the subresource; writing it through the main resource is ignored.
    status = {"observedGeneration": changed.metadata.generation, "nodes": 3, "updated": 1}
    sync_client.patch(
        OS, "ssa", {"status": {"nodes": 99}}, namespace=namespace, patch_type=PatchType.MERGE
    )
    assert (sync_client.get(OS, "ssa", namespace=namespace).status or {}).get("nodes") != 99
    with_status = sync_client.patch(
        OS.Status, "ssa", {"status": status}, namespace=namespace, patch_type=PatchType.MERGE
    )
    assert with_status.status["nodes"] == 3
    again = sync_client.get(OS, "ssa", namespace=namespace)
    assert again.status["updated"] == 1
    assert again.metadata.generation == changed.metadata.generation  # status is not spec


async def test_watch_sees_a_change(client: AsyncClient, namespace: str) -> None:
    created = await client.create(OS.from_dict(_os("watched")))
    seen: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def watch() -> None:
        async for event, obj in client.watch(
            OS, namespace=namespace, resource_version=created.metadata.resourceVersion
        ):
            await seen.put((event, obj.spec["osversion"]))

    task = asyncio.create_task(watch())
    try:
        await client.patch(
            OS, "watched", {"spec": {"osversion": "KubeOS 9"}}, patch_type=PatchType.MERGE
        )
        event, osversion = await asyncio.wait_for(seen.get(), timeout=10)
        assert (event, osversion) == ("MODIFIED", "KubeOS 9")
    finally:
        task.cancel()
