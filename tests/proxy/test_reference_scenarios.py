"""The reference proxy's test scenarios (kubeos-behavior.md §11), made correct, against the real
API server. The reference asserted exact HTTP call sequences with a mock API server; here the
outcome in the cluster is what counts.

The agent side is :class:`ScriptedAgent`, an in-process STAND-IN that records calls and
answers ``status`` like the real agent (no disk, no reboot): these scenarios are about the
proxy's decisions and writes. The real agent drives the upgrade tests in
``test_upgrade_cluster.py`` and the drain tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Event, Node
from lightkube.types import PatchType

from kubeos.agent.client import (
    AsyncAgentClient,
    ConfigureRequest,
    OperationResult,
    StatusResult,
    UpgradeRequest,
)
from kubeos.agent.messages import SlotStatus
from kubeos.api import labels
from kubeos.proxy.controller import ProxyController
from kubeos.sim.kubelet import KubeletStandIn
from tests.conftest import Deployed
from tests.proxy.conftest import Operator, eventually, proxy_settings, running_proxy

pytestmark = pytest.mark.cluster

OLD, NEW = "KubeOS 1.0.0", "KubeOS 2.0.0"


class ScriptedAgent:
    """Stand-in for the os-agent: records calls, keeps slot versions, never reboots."""

    def __init__(self, booted: str = "A", versions: dict[str, str | None] | None = None):
        self.booted = booted
        self.committed = booted
        self.versions: dict[str, str | None] = versions or {"A": "1.0.0", "B": None}
        self.staged: dict[str, Any] | None = None
        self.calls: list[tuple[str, Any]] = []

    def methods(self) -> list[str]:
        return [name for name, _ in self.calls]

    async def status(self) -> StatusResult:
        return StatusResult(
            agent_version="stand-in", booted_slot=self.booted, committed_slot=self.committed,
            trial_slot=None, commit_deadline=None,
            slots=[SlotStatus(n, f"/dev/{n}", v, v is not None)
                   for n, v in self.versions.items()],
            staged=self.staged, last_error=None, busy=None,
        )

    async def prepare_upgrade(self, request: UpgradeRequest) -> OperationResult:
        self.calls.append(("prepare_upgrade", request.to_json()))
        inactive = "B" if self.booted == "A" else "A"
        self.versions[inactive] = request.version
        self.staged = {"slot": inactive, "version": request.version}
        return OperationResult("UpgradeReady")

    async def upgrade(self, version: str | None = None) -> OperationResult:
        self.calls.append(("upgrade", version))
        return OperationResult("Upgraded")

    async def rollback(self, version: str | None = None) -> OperationResult:
        self.calls.append(("rollback", version))
        return OperationResult("Rollbacked")

    async def configure(self, request: ConfigureRequest) -> OperationResult:
        self.calls.append(("configure", request.to_json()))
        return OperationResult("Configured")

    async def commit(self) -> OperationResult:
        self.calls.append(("commit", None))
        return OperationResult("Committed")


def sysconfigs(version: str, *models: str) -> dict[str, Any]:
    return {"version": version, "configs": [
        {"model": m, "contents": [{"key": f"k-{i}", "value": "v"}]}
        for i, m in enumerate(models or ("kernel.sysctl",))
    ]}


async def setup(
    client: AsyncClient, deployed: Deployed, namespace: str, kubelet: KubeletStandIn,
    unique: str,
    agent: Any, *, image: str = OLD,
) -> tuple[str, ProxyController]:
    name = f"r-{unique}"
    await kubelet.add_node(name, os_image=image)
    proxy = ProxyController(name, await deployed.proxy(name), lambda: agent,
                            settings=proxy_settings(namespace))
    return name, proxy


async def osi_where(operator: Operator, node: str, check: Any) -> Any:
    async def probe() -> Any:
        osi = await operator.maybe_osi(node)
        if osi is None or osi.status is None:
            return None
        return osi if check(osi) else None

    return await eventually(probe, timeout=60)


async def test_creates_its_osinstance(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, ScriptedAgent())
    async with running_proxy(proxy):
        osi = await osi_where(operator, node, lambda o: o.status is not None)
    assert osi.metadata.labels[labels.LABEL_OSINSTANCE_NODE] == node
    assert osi.spec.nodestatus == "idle"
    assert osi.status.currentVersion == OLD and osi.status.bootSlot == "A"


async def test_upgrade_applies_upgradeconfigs_stages_then_cordons_and_drains(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    agent = ScriptedAgent()
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, agent)
    up = sysconfigs("u1")
    await operator.create_os(osversion=NEW, opstype="upgrade", imagetype="disk",
                             imageurl="https://h/k.tar", upgradeconfigs=up)
    async with running_proxy(proxy):
        await osi_where(operator, node, lambda o: True)
        await operator.assign(node, upgradeconfigs=up)
        osi = await osi_where(operator, node, lambda o: o.status.phase == "Rebooting")
    assert osi.status.upgradeconfigs.version == "u1"
    assert agent.methods() == ["configure", "prepare_upgrade", "upgrade"]
    assert agent.calls[1][1]["version"] == "2.0.0" and agent.calls[2][1] == "2.0.0"
    assert [a.kind.value for a in proxy.history] == [
        "ApplyUpgradeConfigs", "PrepareUpgrade", "Cordon", "Drain", "Reboot"]
    n = await operator.node(node)
    assert n.spec.unschedulable and labels.ANNOTATION_CORDONED_BY_US in n.metadata.annotations


async def test_config_on_a_node_at_another_version_fails_once(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    agent = ScriptedAgent()
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, agent)
    sc = sysconfigs("s2")
    await operator.create_os(osversion=NEW, opstype="config", sysconfigs=sc)
    async with running_proxy(proxy):
        await osi_where(operator, node, lambda o: True)
        await operator.assign(node, nodestatus="config", sysconfigs=sc)
        osi = await osi_where(operator, node, lambda o: o.status.phase == "Failed")
        await asyncio.sleep(2)
    assert "upgrade it first" in osi.status.lastError
    assert agent.calls == []  # the reference looped on this error every second
    assert [a.kind.value for a in proxy.history] == ["Fail"]


async def test_upgradeconfigs_changed_releases_the_node(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, ScriptedAgent())
    await operator.create_os(osversion=NEW, opstype="upgrade", imagetype="disk",
                             imageurl="https://h/k.tar", upgradeconfigs=sysconfigs("u2"))
    async with running_proxy(proxy):
        await osi_where(operator, node, lambda o: True)
        await operator.assign(node, upgradeconfigs=sysconfigs("u1"))
        await asyncio.sleep(1)
        osi = await osi_where(operator, node, lambda o: o.spec.nodestatus == "idle"
                              and o.status.phase == "Idle" and o.spec.namespacedname is None)
    n = await operator.node(node)
    assert labels.LABEL_UPGRADING not in (n.metadata.labels or {})
    # Released as soon as the assignment is seen, and once more for the label the operator
    # adds right after: nothing but releases, and nothing applied.
    assert {a.kind.value for a in proxy.history} == {"Release"}
    assert osi.status.upgradeconfigs is None


async def test_idle_node_with_a_label_loses_the_label_but_keeps_an_admin_cordon(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, ScriptedAgent())
    await client.patch(Node, node, {"metadata": {"labels": {labels.LABEL_UPGRADING: ""}},
                                    "spec": {"unschedulable": True}},
                       patch_type=PatchType.MERGE)
    async with running_proxy(proxy):

        async def label_gone() -> bool:
            n = await operator.node(node)
            return labels.LABEL_UPGRADING not in (n.metadata.labels or {})

        await eventually(label_gone)
    n = await operator.node(node)
    assert n.spec.unschedulable is True  # the reference uncordoned it


async def test_config_applies_sysconfigs_then_goes_idle(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    agent = ScriptedAgent()
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, agent, image=NEW)
    sc = sysconfigs("s2")
    await operator.create_os(osversion=NEW, opstype="config", sysconfigs=sc)
    async with running_proxy(proxy):
        await osi_where(operator, node, lambda o: True)
        await operator.assign(node, nodestatus="config", sysconfigs=sc)
        osi = await osi_where(operator, node, lambda o: o.spec.nodestatus == "idle"
                              and o.status.phase == "Succeeded")
    assert osi.status.sysconfigs.version == "s2" and osi.spec.namespacedname is None
    assert agent.calls == [("configure", {"configs": [{
        "model": "kernel.sysctl", "config_path": "",
        "contents": {"k-0": {"value": "v", "operation": ""}}}]})]
    n = await operator.node(node)
    assert labels.LABEL_CONFIGURING not in (n.metadata.labels or {})
    assert not n.spec.unschedulable  # config never cordons
    events = [e async for e in client.list(Event, namespace=namespace)]
    reasons = {e.reason for e in events if e.involvedObject.name == node}
    assert {"Configured", "Succeeded"} <= reasons


async def test_sysconfigs_changed_during_config_releases_for_reassignment(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    agent = ScriptedAgent()
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, agent, image=NEW)
    await operator.create_os(osversion=NEW, opstype="config", sysconfigs=sysconfigs("s3"))
    async with running_proxy(proxy):
        await osi_where(operator, node, lambda o: True)
        await operator.assign(node, nodestatus="config", sysconfigs=sysconfigs("s2"))
        await osi_where(operator, node, lambda o: o.spec.nodestatus == "idle")
    assert agent.calls == []


async def test_sysconfigs_changed_during_upgrade_are_copied_with_the_grub_swap(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    agent = ScriptedAgent()
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, agent, image=NEW)
    await operator.create_os(
        osversion=NEW, opstype="upgrade", imagetype="disk", imageurl="https://h/k.tar",
        sysconfigs=sysconfigs("s2", "grub.cmdline.current", "grub.cmdline.next"),
    )
    async with running_proxy(proxy):
        await osi_where(operator, node, lambda o: True)
        await operator.assign(node, sysconfigs=sysconfigs("s1"))
        osi = await osi_where(operator, node, lambda o: o.spec.nodestatus == "idle"
                              and o.status.phase == "Succeeded")
    assert osi.spec.sysconfigs.version == "s2"
    assert [c.model for c in osi.spec.sysconfigs.configs] == [
        "grub.cmdline.next", "grub.cmdline.current"]  # the reference copied it unswapped
    assert agent.methods() == ["configure"]
    assert [c["model"] for c in agent.calls[0][1]["configs"]] == [
        "grub.cmdline.next", "grub.cmdline.current"]


async def test_rollback_cordons_drains_and_asks_for_the_other_slot(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str,
) -> None:
    agent = ScriptedAgent(versions={"A": "2.0.0", "B": "1.0.0"})
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, agent, image=NEW)
    await operator.create_os(osversion=OLD, opstype="rollback")
    async with running_proxy(proxy):
        await osi_where(operator, node, lambda o: True)
        await operator.assign(node)
        await osi_where(operator, node, lambda o: o.status.phase == "Rebooting")
    assert agent.calls == [("rollback", "1.0.0")]  # no download for a rollback
    assert [a.kind.value for a in proxy.history] == ["Cordon", "Drain", "Reboot"]


async def test_unreachable_agent_is_a_condition_not_a_crash(
    deployed: Deployed,
    client: AsyncClient, namespace: str, kubelet: KubeletStandIn, operator: Operator,
    unique: str, tmp_path: Path,
) -> None:
    missing = AsyncAgentClient(tmp_path / "nobody.sock", connect_timeout=1, call_timeout=1)
    node, proxy = await setup(client, deployed, namespace, kubelet, unique, missing)
    await operator.create_os(osversion=NEW, opstype="upgrade", imagetype="disk",
                             imageurl="https://h/k.tar")
    async with running_proxy(proxy) as task:
        await osi_where(operator, node, lambda o: True)
        await operator.assign(node)
        osi = await osi_where(operator, node, lambda o: o.status is not None and any(
            c.type == "AgentReachable" and c.status == "False" for c in o.status.conditions))
        await asyncio.sleep(2)
        assert not task.done()
    cond = next(c for c in osi.status.conditions if c.type == "AgentReachable")
    assert "Cannot connect to KubeOS os-agent" in cond.message
    n = await operator.node(node)
    assert not n.spec.unschedulable  # nothing was started without the agent
    assert proxy.history == []
