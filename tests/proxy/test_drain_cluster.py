"""Drains against the real API server and controller-manager (PDB status from the real
disruption controller), with pods made Running/Ready by the kubelet stand-in."""

from __future__ import annotations

import asyncio
import time

import pytest
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Event
from lightkube.resources.policy_v1 import PodDisruptionBudget

from kubeos.api import labels
from kubeos.kube.client import make_client
from kubeos.proxy.controller import ProxyController
from kubeos.proxy.drain import DrainSettings, drain_node
from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.kubelet import KubeletStandIn
from tests.conftest import Deployed
from tests.proxy.conftest import (
    AgentHost,
    Operator,
    Payload,
    eventually,
    proxy_settings,
    running_proxy,
)
from tests.proxy.workloads import (
    ReplicaSetStandIn,
    create_owner,
    create_pdb,
    create_pod,
    pdb_allows,
    pods_on,
    ready_count,
    reference_workloads,
)

pytestmark = pytest.mark.cluster

SETTINGS = DrainSettings(poll_interval=0.2, backoff_base=0.2, backoff_cap=1.0)


async def settled(client: AsyncClient, ns: str, node: str, expected: int) -> None:
    """All pods Running/Ready and the PDB status computed by the disruption controller."""

    async def ready() -> bool:
        pods = await pods_on(client, ns, node)
        all_ready = len(pods) == expected and all(
            any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
            for p in pods.values() if p.status is not None
        )
        return all_ready and await pdb_allows(client, ns, "web-pdb") == 1

    await eventually(ready, timeout=60)


async def test_reference_drain_without_evictpodforce_is_refused_and_evicts_nothing(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, unique: str,
) -> None:
    node = f"d-{unique}"
    await kubelet.add_node(node)
    await reference_workloads(client, namespace, node)
    await settled(client, namespace, node, 6)
    before = set(await pods_on(client, namespace, node))
    result = await drain_node(await deployed.proxy(node), node, force=False, timeout=20,
                              settings=SETTINGS)
    assert result.refused and not result.finished
    assert f"{namespace}/bare: has no controller" in result.message
    assert f"{namespace}/cache-pod: uses emptyDir volume(s) scratch" in result.message
    assert "ds-pod" not in result.message  # DaemonSet pods are skipped, not an error
    assert set(await pods_on(client, namespace, node)) == before


@pytest.mark.parametrize("as_node", [False, True], ids=["serviceaccount", "node-identity"])
async def test_reference_drain_with_evictpodforce_keeps_the_pdb_and_leaves_daemonsets(
    deployed: Deployed, control_plane: ControlPlane,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, unique: str, as_node: bool,
) -> None:
    """With ``as_node`` the pods are listed and evicted with the kubelet's identity
    (config/components/node-evictions), as ``os-proxy --eviction-kubeconfig`` does."""
    node, spare = f"d-{unique}", f"s-{unique}"
    await kubelet.add_node(node)
    await kubelet.add_node(spare)
    owners = await reference_workloads(client, namespace, node)
    await settled(client, namespace, node, 6)
    rs = ReplicaSetStandIn(client, namespace, "web", owners["web"], 2, spare)
    min_ready = 2

    async def watch_web() -> None:
        nonlocal min_ready
        while True:
            min_ready = min(min_ready, await ready_count(client, namespace, "web"))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_web())
    async with rs.running():
        started = time.monotonic()
        evictor = (make_client(control_plane.node_kube_config(node), field_manager="os-proxy")
                   if as_node else None)
        try:
            result = await drain_node(await deployed.proxy(node), node, force=True,
                                      timeout=60, settings=SETTINGS, evictor=evictor)
        finally:
            if evictor is not None:
                await evictor.close()
        elapsed = time.monotonic() - started
    watcher.cancel()
    assert result.finished, result.message
    assert sorted(await pods_on(client, namespace, node)) == ["ds-pod"]
    assert sorted(result.evicted) == sorted(
        f"{namespace}/{n}" for n in ("bare", "big-pod", "cache-pod", "web-0", "web-1")
    )
    assert min_ready >= 1, "the PDB (minAvailable 1) was violated"
    assert rs.created, "replacements were needed for the second web eviction"
    print(f"\nreference drain with evictpodforce: {elapsed:.2f} s, {len(result.evicted)} evicted")


async def test_pdb_that_never_allows_eviction_ends_in_drain_blocked(
    deployed: Deployed,
    client: AsyncClient, namespace: str, operator: Operator, host_factory, payload: Payload,
    unique: str,
) -> None:
    host: AgentHost = await host_factory(f"n-{unique}")
    web = await create_owner(client, "ReplicaSet", "web", namespace)
    for i in range(2):
        await create_pod(client, namespace, host.name, f"web-{i}", app="web", owner=web)
    other = await create_owner(client, "ReplicaSet", "other", namespace)
    await create_pod(client, namespace, host.name, "other-0", app="other", owner=other)
    await create_pdb(client, namespace, "web-pdb", "web", maxUnavailable=0)

    async def pdb_observed() -> bool:
        pdb = await client.get(PodDisruptionBudget, "web-pdb", namespace=namespace)
        return pdb.status is not None and (pdb.status.currentHealthy or 0) == 2

    await eventually(pdb_observed, timeout=60)
    await operator.create_os(
        osversion="KubeOS 2.0.0", opstype="upgrade", imagetype="disk", imageurl=payload.url,
        checksum=payload.checksum, cacert="ca.crt", draintimeout=5,
    )
    proxy = ProxyController(host.name, await deployed.proxy(host.name), host.client,
                            settings=proxy_settings(namespace))
    async with running_proxy(proxy):
        await eventually(lambda: operator.maybe_osi(host.name))
        await operator.assign(host.name)

        async def blocked() -> object:
            osi = await operator.osi(host.name)
            return osi if osi.status and osi.status.phase == "DrainBlocked" else None

        osi = await eventually(blocked, timeout=90)
        drain = next(a for a in proxy.history if a.kind.value == "Drain")
        assert drain is not None
        error = osi.status.lastError
        assert "within 5 s" in error and f"{namespace}/web-pdb" in error, error
        assert f"{namespace}/web-0" in error and f"{namespace}/web-1" in error
        assert "uncordoned" in error
        node = await operator.node(host.name)
        assert not node.spec.unschedulable
        assert labels.ANNOTATION_CORDONED_BY_US not in (node.metadata.annotations or {})
        remaining = await pods_on(client, namespace, host.name)
        assert {"web-0", "web-1"} <= set(remaining)  # nothing the PDB protects was evicted
        assert "other-0" not in remaining  # the unprotected pod was evicted
        events = [e async for e in client.list(Event, namespace=namespace)]
        assert any(e.reason == "DrainBlocked" for e in events)

        # Blocked for this generation: it stays so. Then the admin fixes the budget and bumps
        # the OS; the proxy tries again and reuses the staged image (one download in all).
        await asyncio.sleep(2)
        assert (await operator.osi(host.name)).status.phase == "DrainBlocked"
        await client.delete(PodDisruptionBudget, "web-pdb", namespace=namespace)
        await operator.update_os("os1", draintimeout=30)

        async def succeeded() -> object:
            osi = await operator.osi(host.name)
            ok = osi.status and osi.status.phase == "Succeeded" and osi.spec.nodestatus == "idle"
            return osi if ok else None

        await eventually(succeeded, timeout=120)
    assert payload.downloads == 1
    assert [a.kind.value for a in proxy.history].count("PrepareUpgrade") == 1
