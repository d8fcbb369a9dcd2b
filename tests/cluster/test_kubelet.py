"""The kubelet stand-in writes what a kubelet writes: node status, osImage, leases, pods."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from lightkube import AsyncClient
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, Pod

from kubeos.sim.kubelet import KubeletStandIn, os_image_from_os_release

pytestmark = pytest.mark.cluster


def _ready(node: Node) -> str | None:
    assert node.status is not None
    for condition in node.status.conditions or []:
        if condition.type == "Ready":
            return condition.status
    return None


async def test_node_has_labels_os_image_and_ready(
    client: AsyncClient, kubelet: KubeletStandIn, unique: str
) -> None:
    name = f"node-{unique}"
    await kubelet.add_node(name, os_image="KubeOS 1.0.1",
                           labels={"upgrade.openeuler.org/node-selector": "a"})
    node = await client.get(Node, name)
    assert node.metadata is not None and node.metadata.labels is not None
    assert node.metadata.labels["upgrade.openeuler.org/node-selector"] == "a"
    assert node.status is not None and node.status.nodeInfo is not None
    assert node.status.nodeInfo.osImage == "KubeOS 1.0.1"
    assert _ready(node) == "True"
    lease = await client.get(Lease, name, namespace="kube-node-lease")
    assert lease.spec is not None and lease.spec.holderIdentity == name

    await kubelet.set_os_image(name, "KubeOS 1.0.2")
    node = await client.get(Node, name)
    assert node.status is not None and node.status.nodeInfo is not None
    assert node.status.nodeInfo.osImage == "KubeOS 1.0.2"

    await kubelet.set_ready(name, False)
    assert _ready(await client.get(Node, name)) == "False"
    await kubelet.set_ready(name, True)
    assert _ready(await client.get(Node, name)) == "True"


async def test_pods_run_and_deletion_completes(
    client: AsyncClient, kubelet: KubeletStandIn, unique: str
) -> None:
    node = f"pods-{unique}"
    await kubelet.add_node(node)
    await client.create(Pod(
        metadata=ObjectMeta(name="web"),
        spec=PodSpec(nodeName=node, containers=[Container(name="c", image="img:1")]),
    ))
    deadline = time.monotonic() + 20
    while True:
        pod = await client.get(Pod, "web")
        if pod.status is not None and pod.status.phase == "Running":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    conditions = {c.type: c.status for c in pod.status.conditions or []}
    assert conditions["Ready"] == "True"

    await client.delete(Pod, "web")  # graceful: the stand-in must finish it
    deadline = time.monotonic() + 20
    while "web" in [p.metadata.name async for p in client.list(Pod) if p.metadata is not None]:
        assert time.monotonic() < deadline, "graceful deletion never completed"
        await asyncio.sleep(0.05)


def test_os_image_from_os_release(tmp_path: Path) -> None:
    path = tmp_path / "os-release"
    path.write_text('NAME="KubeOS"\nPRETTY_NAME="KubeOS 1.0.2"\n')
    assert os_image_from_os_release(path) == "KubeOS 1.0.2"
    assert os_image_from_os_release(path.with_name("missing")) == "Linux"
