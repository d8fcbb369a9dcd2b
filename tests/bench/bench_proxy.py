"""Benchmark of the proxy: drain throughput and the API cost of an idle node controller.

Run: ``PYTHONPATH=. .venv/bin/python tests/bench/bench_proxy.py [--pods 60] [--idle 20]``
(or ``pytest -m bench -s tests/bench/bench_proxy.py``).

On a real control plane with the kubelet stand-in:

* drain of ``--pods`` ReplicaSet-owned pods through the Eviction API at concurrency 5 (the
  default) and 20, against a baseline measured in the same run: concurrency 1 (one eviction at
  a time, waiting for each pod to go);
* an idle ``ProxyController``: API requests per minute after start-up (watches only wake it;
  a resync pass every ``Timing.resync`` seconds), the figure that bounds how many simulated
  nodes one process can carry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace
from tests.proxy.workloads import create_owner, create_pod

from kubeos.kube.client import on_request
from kubeos.proxy.controller import ProxyController, ProxySettings
from kubeos.proxy.drain import DrainSettings, drain_node
from kubeos.proxy.state import Timing
from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.kubelet import KubeletStandIn


async def _drain_once(cp: ControlPlane, pods: int, concurrency: int) -> float:
    ns = f"b-{uuid.uuid4().hex[:8]}"
    node = f"bench-{uuid.uuid4().hex[:6]}"
    async with cp.async_client(namespace=ns) as client:
        await client.create(Namespace(metadata=ObjectMeta(name=ns)))
        async with KubeletStandIn(client, heartbeat_interval=5, status_interval=30) as kubelet:
            await kubelet.add_node(node)
            owner = await create_owner(client, "ReplicaSet", "app", ns)
            for i in range(pods):
                await create_pod(client, ns, node, f"app-{i}", app="app", owner=owner)
            settings = DrainSettings(concurrency=concurrency, poll_interval=0.1)
            started = time.perf_counter()
            result = await drain_node(client, node, force=False, timeout=300, settings=settings)
            elapsed = time.perf_counter() - started
            assert result.finished, result.message
            await kubelet.remove_node(node)
        await client.delete(Namespace, ns)
    return elapsed


async def _idle_requests(cp: ControlPlane, seconds: float) -> tuple[int, int]:
    ns = f"b-{uuid.uuid4().hex[:8]}"
    node = f"idle-{uuid.uuid4().hex[:6]}"
    counts = {"total": 0}

    def count(method: str, path: str) -> None:
        counts["total"] += 1

    async with cp.async_client(namespace=ns) as client:
        await client.create(Namespace(metadata=ObjectMeta(name=ns)))
        async with cp.async_client() as proxy_client, \
                KubeletStandIn(client, heartbeat_interval=5, status_interval=30) as kubelet:
            await kubelet.add_node(node)
            on_request(proxy_client, count)
            proxy = ProxyController(
                node, proxy_client, lambda: _NoAgent(),
                settings=ProxySettings(namespace=ns, timing=Timing(resync=60.0)),
            )
            task = asyncio.create_task(proxy.run())
            await asyncio.sleep(3)
            startup = counts["total"]
            await asyncio.sleep(seconds)
            steady = counts["total"] - startup
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await kubelet.remove_node(node)
        await client.delete(Namespace, ns)
    return startup, steady


class _NoAgent:
    """An agent that is never there (an idle node does not need it)."""

    async def status(self) -> object:
        raise OSError("no agent in this benchmark")


def bench(pods: int = 60, idle: float = 20.0) -> dict[str, float]:
    cp = ControlPlane()
    cp.start()
    try:
        async def run() -> dict[str, float]:
            out: dict[str, float] = {}
            for c in (1, 5, 20):
                out[f"drain_c{c}"] = await _drain_once(cp, pods, c)
            startup, steady = await _idle_requests(cp, idle)
            out["idle_startup_requests"] = startup
            out["idle_requests_per_min"] = steady * 60.0 / idle
            return out

        return asyncio.run(run())
    finally:
        cp.stop()


def report(figures: dict[str, float], pods: int) -> None:
    load = os.getloadavg()
    base = figures["drain_c1"]
    print(f"\nproxy benchmark ({pods} pods; load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    for c in (1, 5, 20):
        t = figures[f"drain_c{c}"]
        print(f"  drain, concurrency {c:>2}: {t:6.2f} s  {pods / t:6.1f} pods/s  "
              f"x{base / t:.2f} vs concurrency 1")
    print(f"  idle proxy: {figures['idle_startup_requests']:.0f} requests to start, "
          f"{figures['idle_requests_per_min']:.1f} requests/min after")


@pytest.mark.bench
def test_bench_proxy() -> None:
    figures = bench()
    report(figures, 60)
    assert figures["drain_c5"] <= figures["drain_c1"] * 1.2


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=60)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    report(bench(args.pods, args.idle), args.pods)
