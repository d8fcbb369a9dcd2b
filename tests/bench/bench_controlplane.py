"""Benchmark of the local control plane: start-up, stop, and per-test (namespace) overhead.

Run: ``.venv/bin/python tests/bench/bench_controlplane.py [--runs N] [--namespaces M]``
(or through pytest: ``pytest -m bench -s tests/bench/bench_controlplane.py``).

The per-test overhead is what the cluster fixtures add to each test: create a namespace and
delete it. It is printed next to a baseline measured in the same run, a plain GET of the
``default`` namespace, so the ratio stays meaningful on faster or slower machines.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import pytest
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from kubeos.sim.controlplane import ControlPlane


def bench(runs: int = 2, namespaces: int = 30) -> dict[str, float]:
    """Start and stop *runs* control planes; time *namespaces* namespace round trips."""
    starts: list[float] = []
    stops: list[float] = []
    per_namespace: list[float] = []
    per_get: list[float] = []
    for run in range(runs):
        plane = ControlPlane()
        began = time.monotonic()
        plane.start()
        starts.append(time.monotonic() - began)
        try:
            if run == 0:
                client = plane.client()
                for _ in range(namespaces):
                    began = time.monotonic()
                    client.get(Namespace, "default")
                    per_get.append(time.monotonic() - began)
                for _ in range(namespaces):
                    name = f"bench-{uuid.uuid4().hex[:8]}"
                    began = time.monotonic()
                    client.create(Namespace(metadata=ObjectMeta(name=name)))
                    client.delete(Namespace, name)
                    per_namespace.append(time.monotonic() - began)
                client.close()
        finally:
            began = time.monotonic()
            plane.stop()
            stops.append(time.monotonic() - began)
    result = {
        "startup_s_median": statistics.median(starts),
        "startup_s_max": max(starts),
        "stop_s_median": statistics.median(stops),
        "namespace_ms_median": statistics.median(per_namespace) * 1000,
        "get_ms_median": statistics.median(per_get) * 1000,
    }
    result["namespace_vs_get_ratio"] = result["namespace_ms_median"] / result["get_ms_median"]
    return result


def _report(result: dict[str, float]) -> None:
    print(f"control-plane start-up: median {result['startup_s_median']:.2f}s, "
          f"max {result['startup_s_max']:.2f}s (CRDs installed and Established)")
    print(f"control-plane stop:     median {result['stop_s_median']:.2f}s")
    print(f"per-test overhead (create + delete namespace): "
          f"{result['namespace_ms_median']:.1f}ms median; baseline GET "
          f"{result['get_ms_median']:.1f}ms; ratio {result['namespace_vs_get_ratio']:.1f}x")


@pytest.mark.bench
def test_bench_controlplane() -> None:
    _report(bench())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--namespaces", type=int, default=30)
    arguments = parser.parse_args()
    _report(bench(arguments.runs, arguments.namespaces))
