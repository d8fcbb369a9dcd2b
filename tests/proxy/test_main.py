"""``os-proxy`` as a process: NODE_NAME from the environment, a kubeconfig, SIGINT or SIGTERM
to stop (SIGTERM is what the kubelet sends)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.credentials import PROXY_ACCOUNT, Access
from kubeos.sim.kubelet import KubeletStandIn
from tests.proxy.conftest import Operator, eventually

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_os_proxy_command_creates_its_osinstance_and_stops_cleanly(
    access: Access, control_plane: ControlPlane,
    kubelet: KubeletStandIn, operator: Operator, namespace: str,
    unique: str, tmp_path: Path, stop: signal.Signals,
) -> None:
    node = f"m-{unique}"
    await kubelet.add_node(node)
    env = {**os.environ, "NODE_NAME": node}
    kubeconfig = access.write_kubeconfig(
        access.token(PROXY_ACCOUNT, access.proxy_pod(node)), tmp_path / "kubeconfig")
    kubelet_conf = tmp_path / "kubelet.conf"  # --eviction-kubeconfig: the node's identity
    kubelet_conf.write_text(yaml.safe_dump(control_plane.node_kubeconfig(node)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubeos.proxy.main", "--kubeconfig",
         str(kubeconfig), "--namespace", namespace, "--eviction-kubeconfig", str(kubelet_conf),
         "--agent-socket", str(tmp_path / "absent.sock"), "--agent-connect-timeout", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        osi = await eventually(lambda: operator.maybe_osi(node), timeout=60)
        assert osi.metadata.labels["upgrade.openeuler.org/osinstance-node"] == node

        async def agent_reported() -> bool:
            current = await operator.osi(node)
            return current.status is not None and any(
                c.type == "AgentReachable" and c.status == "False"
                for c in current.status.conditions)

        await eventually(agent_reported, timeout=30)
        assert proc.poll() is None
    finally:
        proc.send_signal(stop)
        try:
            out, _ = await asyncio.to_thread(proc.communicate, timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "created OSInstance" in out
    assert "forbidden" not in out.lower(), out
