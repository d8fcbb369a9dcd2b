"""``kubeos-sim demo``: the project's main job, end to end, on this machine.

A local control plane, the real operator, N simulated nodes (real proxies and agents), and
three rollouts of one OS CR: a disk upgrade to 2.0.0 served over local HTTPS, a settings change,
and a rollback to 1.0.0. After each phase every node is checked where it matters — the version
its kubelet reports, the slot it booted, the settings file in its sandbox root — so the demo
fails loudly (non-zero exit) instead of printing a happy table over a broken rollout.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from kubeos.sim.fleet import Fleet, FleetOptions, peak_rss_mib
from kubeos.sim.imageserver import CA_FILE, sha256_of
from kubeos.sim.progress import print_failures, render, summary_table
from kubeos.sim.rollout import Follower, RolloutResult, run_rollout
from kubeos.sim.rootfs import make_root_tree, make_rootfs_tar, pretty_name

OS_NAME = "kubeos-demo"
OLD_VERSION = "1.0.0"
NEW_VERSION = "2.0.0"
SETTINGS_FILE = "etc/sysctl.d/90-kubeos-demo.conf"
SETTING_KEY = "kernel.pid_max"
SETTING_VALUE = "4194304"
# seconds between the operator's scheduling rounds (the CRD's default, 15, is for real reboots)
TIME_INTERVAL = 1


class DemoError(RuntimeError):
    """A phase ended, but not where it should have; the message names the nodes."""


@dataclass
class DemoReport:
    """What the demo did, for the summary and for tests."""

    nodes: int
    startup: dict[str, float] = field(default_factory=dict)
    phases: list[RolloutResult] = field(default_factory=list)
    seconds: float = 0.0


def build_image(work: Path, version: str) -> Path:
    """The version-*version* root filesystem tar the fleet upgrades to."""
    tree = make_root_tree(work / f"tree-{version}", version)
    return make_rootfs_tar(tree, work / f"kubeos-{version}.tar")


def upgrade_spec(url: str, checksum: str, version: str, maxunavailable: int) -> dict[str, Any]:
    return {
        "imagetype": "disk", "opstype": "upgrade", "osversion": pretty_name(version),
        "maxunavailable": maxunavailable, "containerimage": "", "evictpodforce": False,
        "imageurl": url, "checksum": checksum, "flagSafe": False, "mtls": False,
        "cacert": CA_FILE, "clientcert": "", "clientkey": "", "maxfailures": 0,
        "timeinterval": TIME_INTERVAL,
    }


def config_spec(version: str, maxunavailable: int) -> dict[str, Any]:
    return {
        "imagetype": "", "opstype": "config", "osversion": pretty_name(version),
        "maxunavailable": maxunavailable, "containerimage": "", "evictpodforce": False,
        "imageurl": "", "checksum": "", "timeinterval": TIME_INTERVAL,
        "sysconfigs": {"version": "v1", "configs": [{
            "model": "kernel.sysctl.persist", "configpath": "/" + SETTINGS_FILE,
            "contents": [{"key": SETTING_KEY, "value": SETTING_VALUE}],
        }]},
    }


def rollback_spec(version: str, maxunavailable: int) -> dict[str, Any]:
    return {
        "imagetype": "", "opstype": "rollback", "osversion": pretty_name(version),
        "maxunavailable": maxunavailable, "containerimage": "", "evictpodforce": False,
        "imageurl": "", "checksum": "", "timeinterval": TIME_INTERVAL,
    }


def check_nodes(fleet: Fleet, result: RolloutResult, version: str, slot: str,
                extra: Callable[[Path], str] | None = None) -> None:
    """Every node reports *version*, booted *slot*; *extra* returns a problem or ""."""
    if not result.complete:
        raise DemoError(f"{result.title}: the rollout ended with {result.outcome or 'nothing'}"
                        f" (failed nodes: {', '.join(result.failed_nodes) or 'none'})")
    wrong = []
    for name, node in fleet.nodes.items():
        row = result.nodes[name]
        problems = []
        if row.os_image != pretty_name(version):
            problems.append(f"reports {row.os_image!r}")
        if node.machine.booted_slot != slot:
            problems.append(f"booted slot {node.machine.booted_slot}")
        if extra is not None and (problem := extra(node.machine.root)):
            problems.append(problem)
        if problems:
            wrong.append(f"{name}: {', '.join(problems)}")
    if wrong:
        raise DemoError(f"{result.title}: expected {pretty_name(version)} on slot {slot} "
                        f"everywhere; " + "; ".join(wrong))


def setting_problem(root: Path) -> str:
    try:
        text = (root / SETTINGS_FILE).read_text()
    except OSError as error:
        return f"no {SETTINGS_FILE}: {error.strerror}"
    if f"{SETTING_KEY}={SETTING_VALUE}" not in text.replace(" ", ""):
        return f"{SETTINGS_FILE} lacks {SETTING_KEY}={SETTING_VALUE}"
    return ""


async def run_demo(
    *,
    nodes: int = 4,
    maxunavailable: int = 2,
    phase_timeout: float = 240.0,
    console: Console | None = None,
    live: bool = True,
) -> DemoReport:
    """Bring the cluster up, run the three phases, check every node after each; tear down."""
    console = console or Console()
    began = time.monotonic()
    report = DemoReport(nodes=nodes)
    console.print(f"starting a control plane, the operator and {nodes} simulated nodes ...")
    async with Fleet(FleetOptions(nodes=nodes, version=OLD_VERSION)) as fleet:
        report.startup = dict(fleet.startup)
        tar = await asyncio.to_thread(build_image, fleet.work / "build", NEW_VERSION)
        url = fleet.images.publish(tar)
        console.print(f"cluster up in {sum(fleet.startup.values()):.1f} s "
                      f"(work dir {fleet.work}); KubeOS {NEW_VERSION} image served at {url}")
        console.print(fleet.credentials_note())
        phases: list[tuple[str, dict[str, Any], str, str, Callable[[Path], str] | None]] = [
            (f"upgrade to {NEW_VERSION}",
             upgrade_spec(url, sha256_of(tar), NEW_VERSION, maxunavailable),
             NEW_VERSION, "B", None),
            ("config (kernel.sysctl.persist)", config_spec(NEW_VERSION, maxunavailable),
             NEW_VERSION, "B", setting_problem),
            (f"rollback to {OLD_VERSION}", rollback_spec(OLD_VERSION, maxunavailable),
             OLD_VERSION, "A", None),
        ]
        for title, spec, version, slot, extra in phases:
            result = await _phase(fleet, title, spec, phase_timeout, console, live)
            report.phases.append(result)
            print_failures(console, result)
            check_nodes(fleet, result, version, slot, extra)
            console.print(f"[green]✓[/green] {title}: {nodes} nodes on "
                          f"{pretty_name(version)}, slot {slot} ({result.seconds:.1f} s)")
    report.seconds = time.monotonic() - began
    console.print(summary_table(report.phases, nodes))
    console.print(f"total {report.seconds:.1f} s (control plane "
                  f"{report.startup.get('control plane', 0):.1f} s, nodes "
                  f"{report.startup.get('nodes', 0):.1f} s); peak memory of this process "
                  f"(all nodes) {peak_rss_mib(os.getpid()):.0f} MiB")
    return report


async def _phase(fleet: Fleet, title: str, spec: dict[str, Any], timeout: float,
                 console: Console, live: bool) -> RolloutResult:
    if not live:
        return await run_rollout(fleet, OS_NAME, spec, title=title, timeout=timeout)
    with Live(console=console, refresh_per_second=4, transient=False) as view:

        def show(follower: Follower) -> None:
            view.update(render(follower))

        return await run_rollout(fleet, OS_NAME, spec, title=title, timeout=timeout,
                                 on_look=show)
