"""``kubeos-sim``: the simulator's command line (a plain click group; subcommands plug in).

``kubeos-sim controlplane`` runs a local control plane in the foreground so a person can point
kubectl, the operator or the proxies at it by hand, the same one the cluster tests use.
``kubeos-sim demo`` is the project's main job on one machine; ``kubeos-sim rehearse`` runs a
user's OS CR against a simulated fleet (see docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any

import click

from kubeos.sim.controlplane import (
    DEFAULT_CONTROLLERS,
    ControlPlane,
    ControlPlaneError,
    copy_kubeconfig,
)
from kubeos.sim.envtest_assets import MissingBinariesError


@click.group()
def main() -> None:
    """Local simulation of a KubeOS cluster: control plane and simulated nodes."""


@main.command("demo")
@click.option("--nodes", type=click.IntRange(1, 500), default=4, show_default=True,
              help="Simulated nodes.")
@click.option("--maxunavailable", type=click.IntRange(1), default=2, show_default=True)
@click.option("--phase-timeout", type=float, default=240.0, show_default=True,
              help="Seconds each phase (upgrade, config, rollback) may take.")
@click.option("--no-live", is_flag=True, help="No live table (for logs and CI).")
def demo(nodes: int, maxunavailable: int, phase_timeout: float, no_live: bool) -> None:
    """Upgrade, configure and roll back a local simulated cluster; exit 0 when all went right.

    Starts a control plane, the operator and NODES simulated nodes (real proxies and agents),
    serves a KubeOS 2.0.0 image over local HTTPS and applies an OS CR three times.
    """
    from kubeos.sim.demo import run_demo

    _run_async(run_demo(nodes=nodes, maxunavailable=maxunavailable,
                        phase_timeout=phase_timeout, live=not no_live))


@main.command("rehearse")
@click.option("-f", "--filename", "path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML file with the OS CR to rehearse.")
@click.option("--nodes", type=click.IntRange(1, 500), default=10, show_default=True)
@click.option("--fail", "fails", multiple=True, metavar="KIND[:COUNT[:SECONDS]]",
              help="Make COUNT nodes (first by name) fail: image (checksum mismatch), boot "
              "(trial slot panics, GRUB falls back), drain (a PDB blocks eviction for SECONDS, "
              "default 30) or reboot (the first reboot request is lost). Repeatable.")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Multiply the CR's timeinterval and draintimeout (0.1: ten times faster).")
@click.option("--timeout", type=float, default=900.0, show_default=True,
              help="Seconds the rollout may take.")
@click.option("--chaos", is_flag=True,
              help="While it rolls out: SIGKILL the operator every 6-10 s, restart 3 proxies "
              "every 4-6 s, restart the kube-apiserver once, drop one reboot request; then "
              "check the invariants (docs/reliability.md).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of the chaos schedule (the same seed breaks the same things).")
def rehearse(path: Path, nodes: int, fails: tuple[str, ...], time_scale: float,
             timeout: float, chaos: bool, seed: int) -> None:
    """Run an OS CR against a simulated fleet; report batches, timing and failures.

    Exit status: 0 when the rollout completed, 3 when it ended otherwise (halted by
    maxfailures, paused, ...), 4 when --chaos found an invariant breached, 1 when the
    rehearsal itself failed.
    """
    from kubeos.sim.chaos import ChaosPlan
    from kubeos.sim.rehearse import FailSpec, RehearsalError, load_os, run_rehearsal

    try:
        doc = load_os(path)
        specs = [FailSpec.parse(text) for text in fails]
    except RehearsalError as error:
        raise click.UsageError(str(error)) from error
    outcome: list[bool] = []
    breached: list[str] = []

    async def go() -> None:
        result = await run_rehearsal(doc, nodes=nodes, fails=specs, time_scale=time_scale,
                                     timeout=timeout,
                                     chaos=ChaosPlan(seed=seed) if chaos else None)
        outcome.append(result.complete)
        breached.extend(result.breaches)

    _run_async(go())
    if breached:
        sys.exit(4)
    if not outcome or not outcome[0]:
        sys.exit(3)


def _run_async(coroutine: Coroutine[Any, Any, object]) -> None:
    """Run a simulator coroutine; its known failures become a clear message and exit 1.

    SIGINT and SIGTERM cancel the coroutine, so the fleet's teardown runs inside it (processes
    stopped by their PIDs, temp dirs removed) however the run is stopped.
    """
    from kubeos.sim.demo import DemoError
    from kubeos.sim.fleet import FleetError
    from kubeos.sim.rehearse import RehearsalError
    from kubeos.sim.rollout import RolloutTimeout

    # the nodes' agents and proxies log every step; the report says what matters
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await coroutine
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(guarded())
    except (DemoError, FleetError, RolloutTimeout, RehearsalError, ControlPlaneError,
            MissingBinariesError) as error:
        raise click.ClickException(str(error)) from error
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise click.ClickException("interrupted; everything started was stopped") from None


@main.command("controlplane")
@click.option(
    "--kubeconfig-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a self-contained admin kubeconfig here (certificates embedded); "
    "removed on exit.",
)
@click.option(
    "--crd-dir",
    "crd_dirs",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="CRD YAML files or directories to install (default: the checkout's config/crd/bases).",
)
@click.option(
    "--controllers",
    default=",".join(DEFAULT_CONTROLLERS),
    show_default=True,
    help="Comma-separated kube-controller-manager controllers to run.",
)
def controlplane(kubeconfig_out: Path | None, crd_dirs: tuple[Path, ...], controllers: str
                 ) -> None:
    """Run etcd, kube-apiserver and kube-controller-manager until SIGINT or SIGTERM.

    Prints the kubeconfig path (one line on stdout) once the API server is ready and the CRDs
    are established, so scripts can wait for that line.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before start-up so a signal during start-up still stops the children cleanly.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    plane = ControlPlane(
        crd_paths=list(crd_dirs) if crd_dirs else None,
        controllers=[c.strip() for c in controllers.split(",") if c.strip()],
    )
    try:
        try:
            plane.start()
        except MissingBinariesError as error:
            raise click.ClickException(str(error)) from error
        path = (copy_kubeconfig(plane, kubeconfig_out) if kubeconfig_out is not None
                else plane.kubeconfig_path)
        click.echo(
            f"control plane ready in {plane.startup_seconds:.1f}s at {plane.server_url}; "
            f"CRDs: {', '.join(plane.installed_crds) or 'none'}",
            err=True,
        )
        click.echo(str(path))
        sys.stdout.flush()
        while not stop.wait(1.0):
            plane.check_alive()
    finally:
        plane.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if kubeconfig_out is not None:
            kubeconfig_out.unlink(missing_ok=True)
