"""The main job end to end: ``kubeos-sim demo``'s function on a real control plane, in CI.

``run_demo`` itself checks every node after every phase (version reported, slot booted,
settings file written) and raises otherwise; the assertions here restate the expected end
state so a change to those checks cannot quietly weaken the test.
"""

from __future__ import annotations

import pytest
from rich.console import Console

from kubeos.sim.demo import NEW_VERSION, OLD_VERSION, run_demo
from kubeos.sim.rollout import RolloutResult
from kubeos.sim.rootfs import pretty_name

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]


async def test_demo_upgrades_configures_and_rolls_back_every_node() -> None:
    report = await run_demo(nodes=4, maxunavailable=2, phase_timeout=120,
                            console=Console(quiet=True), live=False)
    assert [p.outcome for p in report.phases] == ["RolloutComplete"] * 3
    expected = [(NEW_VERSION, "B"), (NEW_VERSION, "B"), (OLD_VERSION, "A")]
    for phase, (version, slot) in zip(report.phases, expected, strict=True):
        assert phase.failed_nodes == []
        assert {(r.os_image, r.slot) for r in phase.nodes.values()} == {
            (pretty_name(version), slot)}, phase.title
        # every node was seen starting and finishing (a watch sees even a half-second config)
        assert sorted(n for batch in phase.batches for n in batch) == sorted(phase.nodes)
        assert max_in_flight(phase) <= 2, phase.nodes


def max_in_flight(phase: RolloutResult) -> int:
    """The most nodes between their start and their finish at any one time."""
    events = []
    for row in phase.nodes.values():
        assert row.started is not None and row.finished is not None, row
        events += [(row.started, 1), (row.finished, -1)]
    in_flight = peak = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):  # finishes first on ties
        in_flight += change
        peak = max(peak, in_flight)
    return peak
