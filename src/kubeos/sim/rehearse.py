"""``kubeos-sim rehearse``: run a user's OS CR against a simulated fleet before production.

The CR's rollout policy (maxunavailable, maxfailures, node pacing, serial/parallel, drain
settings) is used as written; what cannot exist locally is replaced, and the report says so:
a disk image is built for the CR's ``osversion`` and served over local HTTPS (imageurl,
checksum and cacert replaced; mTLS off), and container-image upgrades are rehearsed as disk
upgrades (the rollout policy, not the pull, is what is rehearsed). Failures are injected into
the first nodes by name (the operator starts nodes in name order), so a rehearsal shows at once
whether the policy stops where it should.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kubeos.sim.chaos import ChaosLog, ChaosPlan, Invariants, drop_reboots, make_chaos
from kubeos.sim.demo import build_image
from kubeos.sim.fleet import Fleet, FleetOptions, node_name
from kubeos.sim.imageserver import CA_FILE, sha256_of
from kubeos.sim.node import NodeFaults
from kubeos.sim.progress import batches_table, print_failures, summary_table
from kubeos.sim.rollout import RolloutResult, run_rollout

FAIL_KINDS = ("image", "boot", "drain", "reboot")
DEFAULT_DRAIN_SECONDS = 30.0
START_VERSION = "1.0.0"
_SPEC_FIELDS_SCALED = ("timeinterval", "draintimeout")


class RehearsalError(ValueError):
    """The CR or the options cannot be rehearsed; the message says why."""


@dataclass(frozen=True)
class FailSpec:
    """``KIND:COUNT[:SECONDS]`` from the command line."""

    kind: str
    count: int
    seconds: float = DEFAULT_DRAIN_SECONDS

    @classmethod
    def parse(cls, text: str) -> FailSpec:
        match = re.fullmatch(r"(\w+)(?::(\d+))?(?::(\d+(?:\.\d+)?))?", text.strip())
        if match is None or match.group(1) not in FAIL_KINDS:
            raise RehearsalError(
                f"--fail {text!r}: expected KIND[:COUNT[:SECONDS]] with KIND one of "
                f"{', '.join(FAIL_KINDS)} (SECONDS only for drain)"
            )
        seconds = float(match.group(3)) if match.group(3) else DEFAULT_DRAIN_SECONDS
        return cls(match.group(1), int(match.group(2) or 1), seconds)


def assign_faults(fails: list[FailSpec], nodes: int) -> dict[str, NodeFaults]:
    """Give each failure to the next node by name that has none yet."""
    faults: dict[str, NodeFaults] = {}
    index = 1
    for fail in fails:
        for _ in range(fail.count):
            if index > nodes:
                raise RehearsalError(f"more failures than nodes ({nodes})")
            name = node_name(index)
            index += 1
            faults[name] = NodeFaults(bad_image=fail.kind == "image",
                                      failed_boots=1 if fail.kind == "boot" else 0,
                                      slow_drain=fail.seconds if fail.kind == "drain" else 0.0,
                                      lost_reboots=1 if fail.kind == "reboot" else 0)
    return faults


def load_os(path: Path) -> dict[str, Any]:
    """The first ``kind: OS`` document of a YAML file."""
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as error:
        raise RehearsalError(f"cannot read {path}: {error}") from None
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "OS" and isinstance(doc.get("spec"),
                                                                           dict):
            return doc
    raise RehearsalError(f"{path} holds no OS document with a spec")


def version_of(osversion: str) -> str:
    return osversion[len("KubeOS "):].strip() if osversion.startswith("KubeOS ") else osversion


@dataclass
class Plan:
    """How the CR is rehearsed: the spec to apply and where the nodes start."""

    spec: dict[str, Any]
    start: str
    previous: str | None
    notes: list[str] = field(default_factory=list)


def plan_rehearsal(spec: dict[str, Any], time_scale: float) -> Plan:
    spec = dict(spec)
    op = spec.get("opstype") or "upgrade"
    target = version_of(str(spec.get("osversion") or ""))
    if not target:
        raise RehearsalError("spec.osversion is empty")
    notes: list[str] = []
    if time_scale != 1.0:
        for key in _SPEC_FIELDS_SCALED:
            if key in spec or key == "timeinterval":
                original = spec.get(key, 15 if key == "timeinterval" else 600)
                spec[key] = max(0, math.ceil(float(original) * time_scale))
                notes.append(f"{key} {original} s scaled by {time_scale} to {spec[key]} s")
    if op == "upgrade":
        start = START_VERSION if target != START_VERSION else "0.9.0"
        return Plan(spec, start, None, notes)
    if op == "rollback":
        # the nodes run a newer version; the rollback target is in their other slot
        return Plan(spec, "2.0.0" if target != "2.0.0" else "3.0.0", target, notes)
    return Plan(spec, target, None, notes)


def _adapt_image(plan: Plan, fleet: Fleet) -> None:
    """Serve the upgrade image locally and point the CR at it."""
    spec = plan.spec
    target = version_of(str(spec["osversion"]))
    if spec.get("imagetype") in ("docker", "containerd"):
        plan.notes.append(f"imagetype {spec['imagetype']} ({spec.get('containerimage')}) is "
                          "rehearsed as a disk upgrade")
    tar = build_image(fleet.work / "build", target)
    url = fleet.images.publish(tar)
    replaced = {"imagetype": "disk", "imageurl": url, "checksum": sha256_of(tar),
                "cacert": CA_FILE, "mtls": False, "flagSafe": False, "containerimage": ""}
    for key, value in replaced.items():
        if spec.get(key) != value:
            plan.notes.append(f"{key}: {spec.get(key)!r} replaced by {value!r}")
    spec.update(replaced)


async def run_rehearsal(
    os_doc: dict[str, Any],
    *,
    nodes: int,
    fails: list[FailSpec],
    time_scale: float = 1.0,
    timeout: float = 600.0,
    console: Console | None = None,
    faults: dict[str, NodeFaults] | None = None,
    chaos: ChaosPlan | None = None,
) -> RolloutResult:
    """Start a fleet, apply the CR (adapted), follow it to its end and print the report.

    ``faults`` gives named nodes faults of their own, beside those ``fails`` assigns.
    With ``chaos``, the operator, proxies and API server are broken while it rolls out, and
    the result carries the invariants checked and any breach (:mod:`kubeos.sim.chaos`).
    """
    console = console or Console()
    plan = plan_rehearsal(dict(os_doc["spec"]), time_scale)
    faults = {**assign_faults(fails, nodes), **(faults or {})}
    name = str((os_doc.get("metadata") or {}).get("name") or "rehearsal")
    options = FleetOptions(nodes=nodes, version=plan.start, previous=plan.previous,
                           faults=faults, time_scale=1.0)
    console.print(f"starting a control plane, the operator and {nodes} simulated nodes "
                  f"(KubeOS {plan.start}) ...")
    async with Fleet(options) as fleet:
        console.print(fleet.credentials_note())
        if (plan.spec.get("opstype") or "upgrade") == "upgrade":
            await asyncio.to_thread(_adapt_image, plan, fleet)
        for note in plan.notes:
            console.print(f"[yellow]note[/yellow]: {note}")
        for node, fault in faults.items():
            console.print(f"[yellow]fault[/yellow]: {node}: {_describe(fault)}")
        title = f"{plan.spec.get('opstype', 'upgrade')} {name}"
        if chaos is None:
            result = await run_rollout(fleet, name, plan.spec, title=title, timeout=timeout)
        else:
            result = await _with_chaos(fleet, chaos, name, plan.spec, title, timeout, console)
    console.print(batches_table(result))
    print_failures(console, result)
    for row in result.nodes.values():
        took = (f"{row.finished - row.started:.1f} s"
                if row.finished is not None and row.started is not None else "not finished")
        if row.started is not None:
            console.print(f"{row.name}: {row.phase}, {row.os_image}, slot {row.slot}, {took}")
    untouched = [r.name for r in result.nodes.values() if r.started is None]
    if untouched:
        console.print(f"not started: {len(untouched)} node(s) ({', '.join(untouched[:10])}"
                      f"{' ...' if len(untouched) > 10 else ''})")
    console.print(summary_table([result], nodes))
    if chaos is not None:
        table = Table(title=f"invariants under chaos (seed {chaos.seed})")
        table.add_column("invariant")
        table.add_column("seen")
        for key, value in result.invariants.items():
            table.add_row(key, value)
        console.print(table)
        for breach in result.breaches:
            console.print(f"[red]breach[/red]: {escape(breach)}")
        if not result.breaches:
            console.print("no invariant was breached")
    return result


async def _with_chaos(fleet: Fleet, chaos: ChaosPlan, name: str, spec: dict[str, Any],
                      title: str, timeout: float, console: Console) -> RolloutResult:
    assert fleet.client is not None
    done = ChaosLog()
    drop_reboots(fleet, chaos, done)
    for node in done.lost_reboots:
        console.print(f"[yellow]chaos[/yellow]: {node}'s host drops its next reboot request")
    async with Invariants(fleet.client) as invariants:
        breaking = asyncio.create_task(make_chaos(fleet, chaos, done), name="chaos")
        try:
            result = await run_rollout(fleet, name, spec, title=title, timeout=timeout)
        finally:
            breaking.cancel()
            with contextlib.suppress(BaseException):
                await breaking
        await invariants.settle(timeout=60.0)

        def injected(node: str) -> bool:
            fault = fleet.nodes[node].faults
            return fault.bad_image or fault.failed_boots > 0

        figures, breaches = invariants.verdict(
            fleet, int(spec.get("maxunavailable") or 1), injected)
    result.invariants = {
        "operator kills / proxy restarts / API-server restarts / lost reboots":
            f"{done.operator_kills} / {done.proxy_restarts} / {done.apiserver_restarts} / "
            f"{len(done.lost_reboots)}",
        **figures,
        "reboot requests (max per node)": str(max(
            (n.machine.reboot_requests for n in fleet.nodes.values()), default=0)),
    }
    result.breaches = [f"{b.invariant}: {b.detail}" for b in breaches]
    return result


def _describe(fault: NodeFaults) -> str:
    if fault.bad_image:
        return "bad image (the download does not match the checksum)"
    if fault.failed_boots:
        return "failed boot (the trial slot panics; GRUB falls back to saved_entry)"
    if fault.lost_reboots:
        return "lost reboot (the first reboot request never happens; the proxy asks again)"
    return f"slow drain (a PDB refuses eviction for {fault.slow_drain:.0f} s)"
