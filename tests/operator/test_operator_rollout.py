"""Rollouts end to end on the real control plane: the operator in this process, the kubelet
stand-in as nodes, and a proxy stand-in finishing nodes (tests/operator/standins.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node

from kubeos.api import labels
from kubeos.kube.resources import OSInstanceResource, OSResource
from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.kubelet import KubeletStandIn
from tests.conftest import Deployed

from .harness import Bed, FakeClock
from .standins import InFlightWatcher, ProxyStandIn, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
async def bed(control_plane: ControlPlane, client: AsyncClient, kubelet: KubeletStandIn,
              namespace: str, unique: str, deployed: Deployed
              ) -> AsyncIterator[Bed]:
    yield Bed(control_plane, client, kubelet, namespace, unique, deployed)


def proxy(bed: Bed, per_node: float = 0.2, fail: set[str] | None = None,
          target: str = "KubeOS v2") -> ProxyStandIn:
    return ProxyStandIn(bed.client, namespace=bed.ns, selector=bed.sel,
                        target=lambda: target, set_os_image=bed.kubelet.set_os_image,
                        per_node=per_node, fail=fail)


def watcher(bed: Bed) -> InFlightWatcher:
    return InFlightWatcher(bed.client, namespace=bed.ns, selector=bed.sel)


async def completed(bed: Bed, name: str = "os1") -> bool:
    return (await bed.condition("Completed", name)).get("status") == "True"


async def test_parallel_rollout_completes_within_maxunavailable(bed: Bed) -> None:
    nodes = await bed.add_nodes(8)
    await bed.create_os(maxunavailable="25%")  # 2 of 8
    async with watcher(bed) as w, proxy(bed) as px, bed.operator():
        await wait_for(lambda: completed(bed), timeout=30)
        assert sorted(px.finished) == nodes
    assert 1 <= w.peak <= 2, w.counts()
    status = (await bed.os())["status"]
    assert (status["nodes"], status["updated"], status["inProgress"], status["failed"]) == (
        8, 8, 0, 0)
    assert status["observedGeneration"] == (await bed.os())["metadata"]["generation"]
    assert await bed.events("NodesAssigned")
    await wait_for(lambda: bed.events("RolloutCompleted"), timeout=5)


async def test_cordoned_node_counts_as_unavailable(bed: Bed) -> None:
    nodes = await bed.add_nodes(4)
    await bed.client.patch(Node, nodes[0], {"spec": {"unschedulable": True}})
    await bed.create_os(maxunavailable=2)
    async with watcher(bed) as w, proxy(bed), bed.operator():
        async def three_done() -> bool:
            return (await bed.os()).get("status", {}).get("updated") == 3

        await wait_for(three_done, timeout=30)
    assert w.peak == 1, "one slot is taken by the administrator's cordon"
    assert "NodeUnavailable" in (await bed.condition("Progressing"))["message"]


async def test_serial_mode_one_at_a_time_in_batches(bed: Bed) -> None:
    await bed.add_nodes(5)
    await bed.create_os(executionmode="serial", maxunavailable=2)
    batches: list[set[str]] = []

    async def sample_serial() -> None:
        while True:
            serial = await bed.labelled(labels.LABEL_SERIAL)
            if serial and (not batches or batches[-1] != serial):
                batches.append(serial)
            await asyncio.sleep(0.05)

    async with watcher(bed) as w, proxy(bed, per_node=0.3), bed.operator():
        sampler = asyncio.create_task(sample_serial())
        await wait_for(lambda: completed(bed), timeout=40)
        sampler.cancel()
    assert w.peak == 1, w.counts()
    assert all(len(b) <= 2 for b in batches), batches
    await wait_for(lambda: _no_serial(bed))


async def _no_serial(bed: Bed) -> bool:
    return not await bed.labelled(labels.LABEL_SERIAL)


async def test_time_window_with_injected_clock(bed: Bed) -> None:
    await bed.add_nodes(2)
    clock = FakeClock(datetime(2026, 11, 26, 9, 0, tzinfo=UTC))  # Thursday 09:00 UTC
    await bed.create_os(timewindow={"starttime": "22:00:00", "endtime": "02:00:00",
                                    "days": ["Thu"], "timezone": "UTC"})
    async with bed.operator(clock=clock, resync=0.2):
        async def outside() -> bool:
            return (await bed.condition("Progressing")).get("reason") == "OutsideTimeWindow"

        await wait_for(outside)
        await asyncio.sleep(0.5)
        assert await bed.labelled(labels.LABEL_UPGRADING) == set()
        clock.now = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)  # inside, opened on Thursday
        await wait_for(lambda: bed.labelled(labels.LABEL_UPGRADING), timeout=10)


async def test_pause_stops_new_assignments_and_resume_continues(bed: Bed) -> None:
    nodes = await bed.add_nodes(4)
    await bed.create_os(maxunavailable=1, paused=True)
    async with proxy(bed) as px, bed.operator():
        async def paused() -> bool:
            return (await bed.condition("Progressing")).get("reason") == "Paused"

        await wait_for(paused)
        await asyncio.sleep(0.5)
        assert px.finished == []
        await bed.patch_os("os1", {"paused": False})
        await wait_for(lambda: completed(bed), timeout=30)
        assert sorted(px.finished) == nodes


@pytest.mark.parametrize("maxfailures", [0, 1])
async def test_maxfailures(bed: Bed, maxfailures: int) -> None:
    nodes = await bed.add_nodes(4)
    await bed.create_os(maxunavailable=1, maxfailures=maxfailures)
    async with proxy(bed, fail={nodes[0]}) as px, bed.operator():
        async def degraded() -> bool:
            return (await bed.condition("Degraded")).get("status") == "True"

        await wait_for(degraded)
        if maxfailures == 0:
            await asyncio.sleep(1.0)
            cond = await bed.condition("Degraded")
            assert cond["reason"] == "MaxFailuresReached"
            assert nodes[0] in cond["message"] and "simulated failure" in cond["message"]
            assert px.finished == [], "the rollout halts at the first failure"
            assert (await bed.condition("Progressing"))["reason"] == "MaxFailuresReached"
            assert await bed.events("NodeFailed")
        else:
            # The failed node is back in service (not cordoned): it takes no slot.
            async def rest_done() -> bool:
                return sorted(px.finished) == nodes[1:]

            await wait_for(rest_done, timeout=30)

            async def counted() -> bool:
                status = (await bed.os())["status"]
                return bool(status["failedNodes"] == [nodes[0]] and status["updated"] == 3)

            await wait_for(counted)


async def test_selector_overlap_reported_on_both(bed: Bed) -> None:
    await bed.add_nodes(2)
    await bed.create_os("os1")
    await bed.create_os("os2", nodeselector=labels.SELECTOR_ALL)
    async with bed.operator():
        for name in ("os1", "os2"):
            async def overlap(name: str = name) -> bool:
                return (await bed.condition("Degraded", name)).get("reason") == "SelectorOverlap"

            await wait_for(overlap)
        assert await bed.labelled(labels.LABEL_UPGRADING) == set()
        assert "os2" in (await bed.condition("Degraded", "os1"))["message"]
        await bed.client.delete(OSResource, "os2", namespace=bed.ns)
        await wait_for(lambda: bed.labelled(labels.LABEL_UPGRADING))


async def test_node_deletion_deletes_its_osinstance(bed: Bed) -> None:
    nodes = await bed.add_nodes(2)
    async with bed.operator():
        await bed.kubelet.remove_node(nodes[0])

        async def gone() -> bool:
            try:
                await bed.instance(nodes[0])
                return False
            except ApiError as error:
                return error.status.code == 404

        await wait_for(gone)
        assert (await bed.instance(nodes[1]))["metadata"]["name"] == nodes[1]


async def test_os_deletion_mid_rollout_leaves_nothing_behind(bed: Bed) -> None:
    nodes = await bed.add_nodes(3)
    await bed.create_os(maxunavailable=2)
    async with bed.operator():
        async def two_in_flight() -> bool:
            return len(await bed.labelled(labels.LABEL_UPGRADING)) == 2

        await wait_for(two_in_flight)
        await bed.client.delete(OSResource, "os1", namespace=bed.ns)
        await wait_for(lambda: _not(bed.os_exists()), timeout=15)
    assert await bed.labelled(labels.LABEL_UPGRADING) == set()
    for node in nodes:
        spec = (await bed.instance(node))["spec"]
        assert spec["nodestatus"] == "idle" and spec.get("namespacedname") is None


async def _not(value: object) -> bool:
    return not await value  # type: ignore[misc]


async def test_opstype_change_mid_rollout_releases_and_reassigns(bed: Bed) -> None:
    nodes = await bed.add_nodes(3)
    await bed.create_os(maxunavailable=2)
    async with bed.operator():
        async def two_upgrading() -> bool:
            return len(await bed.labelled(labels.LABEL_UPGRADING)) == 2

        await wait_for(two_upgrading)
        await bed.patch_os("os1", {
            "opstype": "config", "osversion": "KubeOS v1",
            "sysconfigs": {"version": "v2", "configs": [
                {"model": "kernel.sysctl", "contents": [{"key": "a", "value": "1"}]}]}})

        async def switched() -> bool:
            return (not await bed.labelled(labels.LABEL_UPGRADING)
                    and len(await bed.labelled(labels.LABEL_CONFIGURING)) == 2)

        await wait_for(switched, timeout=15)
    statuses = sorted([(await bed.instance(n))["spec"]["nodestatus"] for n in nodes])
    assert statuses == ["config", "config", "idle"]


async def test_instances_in_default_compatible_namespace_are_read_from_config(
        bed: Bed) -> None:
    # The OSInstance namespace is the operator's setting, not the OS CR's (reference bug).
    nodes = await bed.add_nodes(1)
    await bed.create_os()
    async with bed.operator() as controller:
        assert controller.config.instance_namespace == bed.ns
        await wait_for(lambda: bed.labelled(labels.LABEL_UPGRADING))
    inst = await bed.client.get(OSInstanceResource, nodes[0], namespace=bed.ns)
    assert inst["spec"]["nodestatus"] == "upgrade"
