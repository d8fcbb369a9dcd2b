"""``kubeos-sim``: the simulator's command line (a plain click group; subcommands plug in).

``kubeos-sim controlplane`` runs a local control plane in the foreground so a person can point
kubectl, the operator or the proxies at it by hand, the same one the cluster tests use.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from kubeos.sim.controlplane import DEFAULT_CONTROLLERS, ControlPlane, copy_kubeconfig
from kubeos.sim.envtest_assets import MissingBinariesError


@click.group()
def main() -> None:
    """Local simulation of a KubeOS cluster: control plane and simulated nodes."""


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
