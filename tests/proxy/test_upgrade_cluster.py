"""The proxy against the real control plane, the kubelet stand-in and a real os-agent."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from lightkube import AsyncClient
from lightkube.types import PatchType

from kubeos.api import labels
from kubeos.proxy.controller import ProxyController
from kubeos.proxy.state import Timing
from tests.conftest import Deployed
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
    deployed: Deployed,
    client: AsyncClient, namespace: str, operator: Operator, host_factory, payload: Payload,
    unique: str,
) -> None:
    host: AgentHost = await host_factory(f"n-{unique}")
    await operator.create_os(**upgrade_spec(payload))
    proxy = ProxyController(host.name, await deployed.proxy(host.name), host.client,
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


class Crash(BaseException):
    """The proxy process dies here (BaseException: nothing in the proxy may swallow it)."""


async def test_killed_at_every_step_resumes_without_second_download_or_reboot(
    deployed: Deployed,
    client: AsyncClient, namespace: str, operator: Operator, host_factory, payload: Payload,
    unique: str,
) -> None:
    host: AgentHost = await host_factory(f"n-{unique}")
    await operator.create_os(**upgrade_spec(payload, sysconfigs={
        "version": "s1", "configs": [{"model": "kernel.sysctl.persist",
                                      "contents": [{"key": "vm.swappiness", "value": "10"}]}]}))
    seen: set[str] = set()
    crashes: list[str] = []

    async def checkpoint(name: str) -> None:
        if name not in seen:
            seen.add(name)
            crashes.append(name)
            raise Crash(name)

    proxy_client = await deployed.proxy(host.name)

    def new_proxy() -> ProxyController:
        return ProxyController(host.name, proxy_client, host.client,
                               settings=proxy_settings(namespace), checkpoint=checkpoint)

    proxy = new_proxy()
    task = asyncio.create_task(proxy.run())
    await eventually(lambda: operator.maybe_osi(host.name))
    sysconfigs = {"version": "s1", "configs": [{"model": "kernel.sysctl.persist", "contents": [
        {"key": "vm.swappiness", "value": "10"}]}]}
    await operator.assign(host.name, sysconfigs=sysconfigs)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    restarts = 0
    try:
        while await finished(operator, host.name) is None:
            assert loop.time() < deadline, (
                f"not finished; crashes so far: {crashes}; last: {proxy.last_action}"
            )
            if task.done():
                assert isinstance(task.exception(), BaseExceptionGroup | Crash)
                restarts += 1
                proxy = new_proxy()
                task = asyncio.create_task(proxy.run())
            await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    for step in ("PrepareUpgrade:before", "PrepareUpgrade:after", "Cordon:before",
                 "Cordon:after", "Drain:before", "Drain:after", "Reboot:before",
                 "Reboot:recorded", "Reboot:after", "Verify:before", "Verify:after",
                 "Commit:before", "Commit:after", "ApplySysConfigs:before",
                 "ApplySysConfigs:after", "Finish:before", "Finish:node", "Finish:status"):
        assert step in crashes, (step, crashes)
    assert restarts >= len(crashes) - 1
    assert payload.downloads == 1
    assert len(host.reboots) == 1, host.reboots
    node = await operator.node(host.name)
    assert node.status.nodeInfo.osImage == TARGET and not node.spec.unschedulable
    assert "vm.swappiness=10" in (host.paths.root / "etc/sysctl.conf").read_text()
    status = host.service.status([])
    assert status["committed_slot"] == "B"


async def test_admin_cordoned_node_stays_cordoned(
    deployed: Deployed,
    client: AsyncClient, namespace: str, operator: Operator, host_factory, payload: Payload,
    unique: str,
) -> None:
    host: AgentHost = await host_factory(f"n-{unique}")
    await client.patch(type(await operator.node(host.name)), host.name,
                       {"spec": {"unschedulable": True}}, patch_type=_merge())
    await operator.create_os(**upgrade_spec(payload))
    proxy = ProxyController(host.name, await deployed.proxy(host.name), host.client,
                            settings=proxy_settings(namespace))
    async with running_proxy(proxy):
        await eventually(lambda: operator.maybe_osi(host.name))
        await operator.assign(host.name)
        await eventually(lambda: finished(operator, host.name), timeout=120)
    node = await operator.node(host.name)
    assert node.status.nodeInfo.osImage == TARGET
    assert node.spec.unschedulable is True
    assert labels.ANNOTATION_CORDONED_BY_US not in (node.metadata.annotations or {})
    assert "Cordon" not in [a.kind.value for a in proxy.history]


async def test_trial_boot_that_falls_back_is_failed_not_retried(
    deployed: Deployed,
    client: AsyncClient, namespace: str, operator: Operator, host_factory, payload: Payload,
    unique: str,
) -> None:
    host: AgentHost = await host_factory(f"n-{unique}")
    host.fail_next_trial = True
    await operator.create_os(**upgrade_spec(payload))
    proxy = ProxyController(host.name, await deployed.proxy(host.name), host.client,
                            settings=proxy_settings(namespace))
    async with running_proxy(proxy):
        await eventually(lambda: operator.maybe_osi(host.name))
        await operator.assign(host.name)
        osi = await eventually(lambda: failed(operator, host.name), timeout=120)
        await asyncio.sleep(3)  # and it stays that way: no second attempt
    assert "came back on 'KubeOS 1.0.0'" in osi.status.lastError
    assert "trial boot of slot B failed" in osi.status.lastError
    assert osi.spec.nodestatus == "upgrade"  # the operator counts it as failed
    node = await operator.node(host.name)
    assert not node.spec.unschedulable  # we cordoned it, so we uncordon it
    assert len(host.reboots) == 1 and payload.downloads == 1
    assert host.service.status([])["booted_slot"] == "A"


async def test_health_window_failure_is_reported_and_not_committed(
    deployed: Deployed,
    client: AsyncClient, namespace: str, operator: Operator, host_factory, payload: Payload,
    unique: str, kubelet,
) -> None:
    host: AgentHost = await host_factory(f"n-{unique}")
    await operator.create_os(**upgrade_spec(payload))
    timing = Timing(health_window=30.0, reboot_timeout=60.0, reissue_after=10.0, poll=0.5)
    proxy = ProxyController(host.name, await deployed.proxy(host.name), host.client,
                            settings=proxy_settings(namespace, timing=timing))
    async with running_proxy(proxy):
        await eventually(lambda: operator.maybe_osi(host.name))
        await operator.assign(host.name)

        async def verifying() -> bool:
            osi = await operator.osi(host.name)
            return osi.status is not None and osi.status.phase == "Verifying"

        await eventually(verifying, timeout=120)
        await kubelet.set_ready(host.name, False)
        osi = await eventually(lambda: failed(operator, host.name), timeout=30)
        await asyncio.sleep(1)
    assert "health window failed" in osi.status.lastError
    status = host.service.status([])
    assert status["trial_slot"] == "B" and status["committed_slot"] == "A"  # agent falls back


async def failed(operator: Operator, node: str) -> object:
    osi = await operator.osi(node)
    if osi.status is not None and osi.status.phase == "Failed":
        return osi
    return None


def _merge() -> object:
    return PatchType.MERGE


async def test_killed_during_the_download_waits_for_it_instead_of_downloading_again(
    deployed: Deployed,
    client: AsyncClient, namespace: str, operator: Operator, host_factory, tmp_path,
    pki, unique: str,
) -> None:
    from tests.agent.core.support import Route, make_root_tree, make_rootfs_tar, serve_files

    tree = make_root_tree(tmp_path / "tree-big", "2.0.0", extra_mib=6)
    tar = make_rootfs_tar(tree, tmp_path / "big.tar")
    host: AgentHost = await host_factory(f"n-{unique}")
    with serve_files(pki, tmp_path / "srv-slow") as srv:
        srv.routes["/kubeos.tar"] = Route(file=tar, delay_per_mib=0.5)
        slow = Payload(srv, tar, "2.0.0")
        await operator.create_os(**upgrade_spec(slow))
        first = ProxyController(host.name, await deployed.proxy(host.name), host.client,
                                settings=proxy_settings(namespace))
        async with running_proxy(first):
            await eventually(lambda: operator.maybe_osi(host.name))
            await operator.assign(host.name)

            async def downloading() -> bool:
                return host.service.status([])["busy"] == "prepare_upgrade"

            await eventually(downloading, timeout=60, interval=0.05)
        # the first proxy is gone mid-download; the agent goes on
        second = ProxyController(host.name, await deployed.proxy(host.name), host.client,
                                 settings=proxy_settings(namespace))
        async with running_proxy(second):
            await eventually(lambda: finished(operator, host.name), timeout=120)
        assert slow.downloads == 1
    assert [a.kind.value for a in second.history][:1] == ["Cordon"]
    assert len(host.reboots) == 1
