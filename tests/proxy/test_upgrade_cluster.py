"""The proxy against the real control plane, the kubelet stand-in and a real os-agent."""

from __future__ import annotations

import pytest
from lightkube import AsyncClient

from kubeos.api import labels
from kubeos.proxy.controller import ProxyController
from tests.proxy.conftest import (
    AgentHost,
    Operator,
    Payload,
    eventually,
    proxy_settings,
    running_proxy,
)

pytestmark = pytest.mark.cluster

TARGET = "KubeOS 2.0.0"


def upgrade_spec(payload: Payload, **extra: object) -> dict[str, object]:
    return {
        "osversion": TARGET, "opstype": "upgrade", "imagetype": "disk",
        "imageurl": payload.url, "checksum": payload.checksum, "cacert": "ca.crt",
        "draintimeout": 30, **extra,
    }


async def finished(operator: Operator, node: str, phase: str = "Succeeded") -> object:
    osi = await operator.osi(node)
    if osi.status is not None and osi.status.phase == phase and osi.spec.nodestatus == "idle":
        return osi
    return None


async def test_upgrade_with_real_agent(
    client: AsyncClient, namespace: str, operator: Operator, host_factory, payload: Payload,
    unique: str,
) -> None:
    host: AgentHost = await host_factory(f"n-{unique}")
    await operator.create_os(**upgrade_spec(payload))
    proxy = ProxyController(host.name, client, host.client,
                            settings=proxy_settings(namespace))
    async with running_proxy(proxy):
        await eventually(lambda: operator.maybe_osi(host.name))
        await operator.assign(host.name)
        osi = await eventually(lambda: finished(operator, host.name), timeout=120)
    node = await operator.node(host.name)
    assert node.status.nodeInfo.osImage == TARGET
    assert not node.spec.unschedulable
    assert labels.ANNOTATION_CORDONED_BY_US not in (node.metadata.annotations or {})
    assert labels.LABEL_UPGRADING not in (node.metadata.labels or {})
    assert osi.spec.namespacedname is None
    assert osi.status.currentVersion == TARGET and osi.status.bootSlot == "B"
    assert payload.downloads == 1
    assert len(host.reboots) == 1
    status = host.service.status([])
    assert status["committed_slot"] == "B" and status["trial_slot"] is None
    kinds = [a.kind.value for a in proxy.history]
    assert kinds[:4] == ["PrepareUpgrade", "Cordon", "Drain", "Reboot"], kinds
