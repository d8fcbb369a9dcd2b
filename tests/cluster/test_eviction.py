"""The Eviction API with a PodDisruptionBudget, decided by the real API server and the real
disruption controller: what drains in the proxy rely on."""

from __future__ import annotations

import asyncio
import time

import pytest
from lightkube import ApiError, AsyncClient
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.policy_v1 import PodDisruptionBudgetSpec
from lightkube.resources.core_v1 import Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget

from kubeos.sim.kubelet import KubeletStandIn

pytestmark = pytest.mark.cluster

APP = {"app": "protected"}


def _pod(name: str, node: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, labels=APP),
        spec=PodSpec(
            nodeName=node,
            containers=[Container(name="app", image="registry.example.internal/app:1")],
            terminationGracePeriodSeconds=30,
        ),
    )


async def _pdb_status(
    client: AsyncClient, want_healthy: int, want_allowed: int, timeout: float = 30
) -> None:
    """Wait until the controller-manager reports the expected PDB status."""
    deadline = time.monotonic() + timeout
    while True:
        pdb = await client.get(PodDisruptionBudget, "protect")
        status = pdb.status
        if (
            status is not None
            and status.currentHealthy == want_healthy
            and status.disruptionsAllowed == want_allowed
            and status.observedGeneration == pdb.metadata.generation
        ):
            return
        assert time.monotonic() < deadline, f"PDB status never reached: {status}"
        await asyncio.sleep(0.1)


async def _evict(client: AsyncClient, name: str) -> None:
    await client.create(Pod.Eviction(metadata=ObjectMeta(name=name)), name)


async def _wait_gone(client: AsyncClient, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.get(Pod, name)
        except ApiError as error:
            if error.status.code == 404:
                return
            raise
        assert time.monotonic() < deadline, f"pod {name} was never deleted"
        await asyncio.sleep(0.1)


async def test_eviction_respects_pdb(
    client: AsyncClient, kubelet: KubeletStandIn, unique: str
) -> None:
    node = f"evict-{unique}"
    await kubelet.add_node(node)
    for name in ("p1", "p2"):
        await client.create(_pod(name, node))
    await client.create(
        PodDisruptionBudget(
            metadata=ObjectMeta(name="protect"),
            spec=PodDisruptionBudgetSpec(minAvailable=2, selector=LabelSelector(matchLabels=APP)),
        )
    )
    # minAvailable equals the ready replicas: no disruption allowed.
    await _pdb_status(client, want_healthy=2, want_allowed=0)
    with pytest.raises(ApiError) as refused:
        await _evict(client, "p1")
    assert refused.value.status.code == 429
    assert "disruption budget" in (refused.value.status.message or "")
    assert (await client.get(Pod, "p1")).metadata.deletionTimestamp is None

    # A third ready replica gives the budget room for one eviction.
    await client.create(_pod("p3", node))
    await _pdb_status(client, want_healthy=3, want_allowed=1)
    await _evict(client, "p1")
    # The kubelet stand-in finishes the graceful deletion the API server started.
    await _wait_gone(client, "p1")
    await _pdb_status(client, want_healthy=2, want_allowed=0)
    with pytest.raises(ApiError) as refused_again:
        await _evict(client, "p2")
    assert refused_again.value.status.code == 429
