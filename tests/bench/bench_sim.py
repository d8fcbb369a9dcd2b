"""Benchmark of the fleet simulator: 200 simulated nodes rolled with maxunavailable 20.

Run: ``.venv/bin/python -m pytest -m bench -s tests/bench/bench_sim.py`` or as a plain script,
``.venv/bin/python tests/bench/bench_sim.py [--nodes N] [--max-unavailable M]``.

Every node is a real proxy and a real agent (directory slots) in this process; the operator
is a real ``os-operator`` process; the control plane is real. First one node is upgraded
alone (``maxunavailable 1``) to measure the per-node time on this machine in this run; then N
nodes with ``maxunavailable M``. Printed: the N-node wall time against the ideal
``ceil(N / M) x per-node time``, API requests per node (proxies, kubelet stand-in, operator),
and peak memory (VmHWM) of the operator process and of the node process (all N nodes).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from typing import Any

import pytest

from kubeos.sim.demo import NEW_VERSION, OLD_VERSION, build_image, upgrade_spec
from kubeos.sim.fleet import Fleet, FleetOptions, peak_rss_mib
from kubeos.sim.imageserver import sha256_of
from kubeos.sim.rollout import run_rollout


async def _rollout(nodes: int, max_unavailable: int, timeout: float) -> dict[str, Any]:
    async with Fleet(FleetOptions(nodes=nodes, version=OLD_VERSION)) as fleet:
        tar = await asyncio.to_thread(build_image, fleet.work / "build", NEW_VERSION)
        spec = upgrade_spec(fleet.images.publish(tar), sha256_of(tar), NEW_VERSION,
                            max_unavailable)
        spec["timeinterval"] = 0
        memory_before = peak_rss_mib(os.getpid())
        requests_before = dict(fleet.requests)
        operator_before = fleet.operator_requests()
        cpu_before = time.process_time()
        result = await run_rollout(fleet, "bench", spec, title=f"{nodes} nodes",
                                   timeout=timeout)
        if not result.complete:
            raise AssertionError(f"rollout ended with {result.outcome}: {result.failed_nodes}")
        wrong = [r.name for r in result.nodes.values() if r.os_image != f"KubeOS {NEW_VERSION}"]
        if wrong:
            raise AssertionError(f"nodes not on {NEW_VERSION}: {wrong[:10]}")
        return {
            "nodes": nodes,
            "max_unavailable": max_unavailable,
            "seconds": result.seconds,
            "batches": len(result.batches),
            "startup": dict(fleet.startup),
            "proxy_requests": fleet.requests["proxy"] - requests_before.get("proxy", 0),
            "kubelet_requests": fleet.requests["kubelet"] - requests_before.get("kubelet", 0),
            "operator_requests": fleet.operator_requests() - operator_before,
            "operator_peak_mib": fleet.operator_peak_mib(),
            "nodes_peak_mib": peak_rss_mib(os.getpid()),
            "nodes_mib_before_rollout": memory_before,
            "cpu_seconds_this_process": time.process_time() - cpu_before,
            "downloads": fleet.images.downloads(),
            "load_average": os.getloadavg()[0],
        }


def bench(nodes: int = 200, max_unavailable: int = 20, timeout: float = 900.0
          ) -> dict[str, Any]:
    single = asyncio.run(_rollout(1, 1, 120.0))
    fleet = asyncio.run(_rollout(nodes, max_unavailable, timeout))
    ideal = math.ceil(nodes / max_unavailable) * single["seconds"]
    return {"single": single, "fleet": fleet, "ideal": ideal}


def _report(r: dict[str, Any]) -> None:
    single, fleet = r["single"], r["fleet"]
    n = fleet["nodes"]
    print(f"\nfleet simulator: {n} nodes, maxunavailable {fleet['max_unavailable']}")
    print(f"  per-node time (1 node alone):   {single['seconds']:.1f} s")
    print(f"  total time:                     {fleet['seconds']:.1f} s "
          f"(ideal ceil({n}/{fleet['max_unavailable']}) x {single['seconds']:.1f} s = "
          f"{r['ideal']:.1f} s; ratio {fleet['seconds'] / r['ideal']:.2f})")
    print(f"  start waves seen:               {fleet['batches']}")
    print(f"  API requests per node:          proxy {fleet['proxy_requests'] / n:.1f}, "
          f"kubelet stand-in {fleet['kubelet_requests'] / n:.1f}, "
          f"operator {fleet['operator_requests'] / n:.1f}")
    print(f"  peak memory (VmHWM):            operator {fleet['operator_peak_mib']:.0f} MiB; "
          f"node process ({n} proxies + agents) {fleet['nodes_peak_mib']:.0f} MiB "
          f"(~{fleet['nodes_peak_mib'] / n:.2f} MiB per node)")
    print(f"  image downloads:                {fleet['downloads']}")
    print(f"  CPU seconds of the node process during the rollout: "
          f"{fleet['cpu_seconds_this_process']:.1f}")
    print(f"  start-up: control plane {fleet['startup'].get('control plane', 0):.1f} s, "
          f"{n} nodes {fleet['startup'].get('nodes', 0):.1f} s")
    print(f"  machine load average: {fleet['load_average']:.1f} on {os.cpu_count()} CPUs")


@pytest.mark.bench
@pytest.mark.timeout(1500)
def test_bench_sim() -> None:
    result = bench()
    _report(result)
    assert result["fleet"]["downloads"] >= result["fleet"]["nodes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--max-unavailable", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    _report(bench(args.nodes, args.max_unavailable, args.timeout))


if __name__ == "__main__":
    main()
