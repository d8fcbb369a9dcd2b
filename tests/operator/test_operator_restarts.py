"""maxunavailable holds while the operator process is SIGKILLed again and again mid-rollout.

The operator runs as a real ``os-operator`` process with leader election on a short Lease;
the test kills it at random moments (possibly between binding an OSInstance and labelling
its node) and starts a new one, while a watcher records the in-flight count at every
cluster revision.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lightkube import AsyncClient

from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.credentials import OPERATOR_ACCOUNT, SYSTEM_NAMESPACE, Access
from kubeos.sim.kubelet import KubeletStandIn
from tests.conftest import Deployed

from .harness import Bed
from .standins import InFlightWatcher, ProxyStandIn

pytestmark = pytest.mark.cluster

NODES = 30
MAX_UNAVAILABLE = 3


@pytest.fixture
async def bed(control_plane: ControlPlane, client: AsyncClient, kubelet: KubeletStandIn,
              namespace: str, unique: str, deployed: Deployed
              ) -> AsyncIterator[Bed]:
    yield Bed(control_plane, client, kubelet, namespace, unique, deployed)


def start_operator(kubeconfig: Path, namespace: str, log: Path, lease: str
                   ) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kubeos.operator.main",
             "--kubeconfig", str(kubeconfig),
             "--osinstance-namespace", namespace, "--watch-namespace", namespace,
             # the shipped Role allows Leases in the operator's namespace only
             "--leader-election-namespace", SYSTEM_NAMESPACE, "--leader-election-id", lease,
             "--lease-duration", "2", "--renew-deadline", "1.5", "--retry-period", "0.3",
             "--bind-address", "0", "--resync", "1"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


@pytest.mark.parametrize("replicas", [1, 2])
async def test_maxunavailable_holds_across_sigkill_restarts(
        bed: Bed, access: Access, tmp_path: Path, replicas: int) -> None:
    """With one replica each kill stops all work; with two, a standby takes the Lease over."""
    kubeconfig = access.write_kubeconfig(
        access.token(OPERATOR_ACCOUNT, access.operator_pod()), tmp_path / "kubeconfig")
    lease = f"os-operator-{bed.unique}-{replicas}"
    log = tmp_path / "operator.log"
    nodes = await bed.add_nodes(NODES)
    await bed.create_os(maxunavailable=MAX_UNAVAILABLE)
    rng = random.Random(7 + replicas)
    restarts = 0
    proxy = ProxyStandIn(bed.client, namespace=bed.ns, selector=bed.sel,
                         target=lambda: "KubeOS v2", set_os_image=bed.kubelet.set_os_image,
                         per_node=0.3)
    async with InFlightWatcher(bed.client, namespace=bed.ns, selector=bed.sel) as watcher, \
            proxy:
        processes = [start_operator(kubeconfig, bed.ns, log, lease) for _ in range(replicas)]
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 150
            while len(proxy.finished) < NODES:
                assert loop.time() < deadline, (
                    f"only {len(proxy.finished)} nodes finished; log:\n"
                    + log.read_text()[-3000:])
                await asyncio.sleep(rng.uniform(0.8, 2.5))
                if restarts < 8 and len(proxy.finished) < NODES - MAX_UNAVAILABLE:
                    victim = rng.randrange(replicas)
                    processes[victim].send_signal(signal.SIGKILL)
                    processes[victim].wait()
                    restarts += 1
                    processes[victim] = start_operator(kubeconfig, bed.ns, log, lease)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=10)
    counts = watcher.counts()
    assert sorted(proxy.finished) == nodes
    assert restarts >= (5 if replicas == 1 else 3), f"only {restarts} restarts happened"
    assert max(counts) <= MAX_UNAVAILABLE, f"in-flight peaked at {max(counts)}"
    assert max(counts) == MAX_UNAVAILABLE, "the budget was used"
    assert "forbidden" not in log.read_text().lower(), "the API server refused the operator"
