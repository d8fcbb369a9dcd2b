"""The reference envtest scenarios (kubeos-behavior.md §3.6), made correct, on a real
API server: OSInstances in the operator's configured namespace, CRD defaults applied, valid
enums."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lightkube import AsyncClient

from kubeos.api import labels
from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.kubelet import KubeletStandIn
from tests.conftest import Deployed

from .harness import Bed
from .standins import create_instance, wait_for

pytestmark = pytest.mark.cluster

SYSCTL_V2 = {"version": "v2", "configs": [{"model": "kernel.sysctl", "contents": [
    {"key": "key1", "value": "a"}, {"key": "key2", "value": "b"}]}]}
V1 = {"version": "v1", "configs": []}


@pytest.fixture
async def bed(control_plane: ControlPlane, client: AsyncClient, kubelet: KubeletStandIn,
              namespace: str, unique: str, deployed: Deployed
              ) -> AsyncIterator[Bed]:
    yield Bed(control_plane, client, kubelet, namespace, unique, deployed)


async def nodestatus(bed: Bed, node: str) -> str:
    return str((await bed.instance(node))["spec"]["nodestatus"])


async def test_rollback(bed: Bed) -> None:
    nodes = await bed.add_nodes(2, image="KubeOS v2")
    await bed.create_os(opstype="rollback", osversion="KubeOS v1", maxunavailable=3)
    async with bed.operator():
        await wait_for(lambda: bed.labelled(labels.LABEL_UPGRADING), timeout=10)

        async def both() -> bool:
            return all([await nodestatus(bed, n) == "upgrade" for n in nodes])

        await wait_for(both)
        assert await bed.labelled(labels.LABEL_UPGRADING) == set(nodes)
        inst = await bed.instance(nodes[0])
        assert inst["spec"]["namespacedname"] == {"name": "os1", "namespace": bed.ns}


async def test_config(bed: Bed) -> None:
    nodes = await bed.add_nodes(2, instance_spec={"nodestatus": "idle", "sysconfigs": V1},
                                instance_status={"sysconfigs": V1})
    await bed.create_os(opstype="config", osversion="KubeOS v1", imagetype="",
                        containerimage="", sysconfigs=SYSCTL_V2)
    async with bed.operator():
        async def both() -> bool:
            return await bed.labelled(labels.LABEL_CONFIGURING) == set(nodes)

        await wait_for(both)
        for node in nodes:
            inst = await bed.instance(node)
            assert inst["spec"]["nodestatus"] == "config"
            assert inst["spec"]["sysconfigs"]["version"] == "v2"
            assert [c["key"] for c in inst["spec"]["sysconfigs"]["configs"][0]["contents"]] == [
                "key1", "key2"]


async def test_node_without_osinstance_is_not_labelled_until_it_has_one(bed: Bed) -> None:
    (node,) = await bed.add_nodes(1, instances=False)
    await bed.create_os()
    async with bed.operator():
        async def waiting() -> bool:
            return "NoOSInstance" in (await bed.condition("Progressing")).get("message", "")

        await wait_for(waiting)
        assert await bed.labelled(labels.LABEL_UPGRADING) == set()
        # The reference retried forever in a hot loop; here the OSInstance's creation
        # (by the proxy) is an event that starts the node.
        await create_instance(bed.client, node, bed.ns)
        await wait_for(lambda: bed.labelled(labels.LABEL_UPGRADING))


async def test_grub_swap_on_upgrade(bed: Bed) -> None:
    (node,) = await bed.add_nodes(1)
    sysconfigs = {"version": "v2", "configs": [
        {"model": "grub.cmdline.current", "contents": [{"key": "a", "value": ""}]},
        {"model": "grub.cmdline.next", "contents": [{"key": "b", "value": ""}]}]}
    upgradeconfigs = {"version": "v2", "configs": [
        {"model": "kernel.sysctl", "contents": [{"key": "c", "value": "1"}]}]}
    await bed.create_os(sysconfigs=sysconfigs, upgradeconfigs=upgradeconfigs)
    async with bed.operator():
        await wait_for(lambda: bed.labelled(labels.LABEL_UPGRADING))
    spec = (await bed.instance(node))["spec"]
    assert spec["nodestatus"] == "upgrade"
    assert [(c["model"], c["contents"][0]["key"]) for c in spec["sysconfigs"]["configs"]] == [
        ("grub.cmdline.next", "a"), ("grub.cmdline.current", "b")]
    assert spec["upgradeconfigs"] == {
        "version": "v2", "configs": [{"model": "kernel.sysctl", "configpath": "",
                                      "contents": [{"key": "c", "value": "1",
                                                    "operation": ""}]}]}
    os_spec = (await bed.os())["spec"]
    assert os_spec["sysconfigs"]["configs"][0]["model"] == "grub.cmdline.current"


@pytest.mark.parametrize("opstype", ["upgrade", "config"])
async def test_nodeselector(bed: Bed, opstype: str) -> None:
    v1 = {"nodestatus": "idle", "sysconfigs": V1, "upgradeconfigs": V1}
    (chosen,) = await bed.add_nodes(1, extra_labels={}, instance_spec=v1,
                                    instance_status={"sysconfigs": V1})
    # The other node carries a different selector value (so no other test selects it).
    await bed.kubelet.add_node(f"other-{bed.unique}", os_image="KubeOS v1",
                               labels={labels.LABEL_NODE_SELECTOR: f"x-{bed.unique}"})
    other = f"other-{bed.unique}"
    await create_instance(bed.client, other, bed.ns, v1, {"sysconfigs": V1})
    if opstype == "upgrade":
        await bed.create_os(sysconfigs=SYSCTL_V2, upgradeconfigs=SYSCTL_V2)
        label, status = labels.LABEL_UPGRADING, "upgrade"
    else:
        await bed.create_os(opstype="config", osversion="KubeOS v1", sysconfigs=SYSCTL_V2)
        label, status = labels.LABEL_CONFIGURING, "config"
    async with bed.operator():
        await wait_for(lambda: bed.labelled(label))
    chosen_inst = await bed.instance(chosen)
    assert chosen_inst["spec"]["nodestatus"] == status
    assert chosen_inst["spec"]["sysconfigs"]["version"] == "v2"
    if opstype == "upgrade":
        assert chosen_inst["spec"]["upgradeconfigs"]["version"] == "v2"
    other_inst = await bed.instance(other)
    assert other_inst["spec"]["nodestatus"] == "idle"
    assert other_inst["spec"]["sysconfigs"]["version"] == "v1"
    assert label not in await bed.node_labels(other)
