"""``os-operator``: the cluster-wide rollout controller as a process.

Every flag can also be set from the environment as ``OS_OPERATOR_<FLAG>`` (for example
``OS_OPERATOR_OSINSTANCE_NAMESPACE``), which is how a Deployment usually configures it.
With leader election on (the default) several replicas may run; only the Lease holder
reconciles, and it exits if it loses the Lease so that a fresh process starts from the
cluster state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

import click
from prometheus_client import PlatformCollector, ProcessCollector

import kubeos
from kubeos.api import labels
from kubeos.kube.client import load_config, make_client, on_request, on_response
from kubeos.kube.events import EventRecorder
from kubeos.kube.leader import LeaderElector, LeadershipLost
from kubeos.kube.probes import ProbeServer
from kubeos.operator.controller import FIELD_MANAGER, Controller, OperatorConfig
from kubeos.operator.metrics import Metrics

log = logging.getLogger("kubeos.operator")


def _split_address(address: str) -> tuple[str, int] | None:
    """``host:port`` or ``:port``; ``0`` or empty disables the server."""
    if address in ("", "0"):
        return None
    host, _, port = address.rpartition(":")
    return (host or "0.0.0.0", int(port))  # reachable from the kubelet and Prometheus


async def run_operator(
    *,
    kubeconfig: str | None,
    osinstance_namespace: str,
    watch_namespace: str | None,
    leader_elect: bool,
    leader_election_namespace: str,
    leader_election_id: str,
    identity: str,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    bind_address: str,
    workers: int,
    resync: float,
) -> None:
    """Build the client, metrics, probes and controller, and run until signalled."""
    config = load_config(kubeconfig)
    client = make_client(config, field_manager=FIELD_MANAGER)
    metrics = Metrics()
    ProcessCollector(registry=metrics.registry)
    PlatformCollector(registry=metrics.registry)
    on_request(client, lambda method, _path: metrics.api_requests.labels(method).inc())
    on_response(client, lambda code, _method, _path: _count_refusal(metrics, code))
    recorder = EventRecorder(client, component="os-operator", instance=identity)
    controller = Controller(
        client,
        OperatorConfig(
            instance_namespace=osinstance_namespace,
            os_namespace=watch_namespace,
            workers=workers,
            resync=resync,
        ),
        metrics=metrics,
        recorder=recorder,
    )
    elector: LeaderElector | None = None
    if leader_elect:
        elector = LeaderElector(
            client, name=leader_election_id, namespace=leader_election_namespace,
            identity=identity, lease_duration=lease_duration, renew_deadline=renew_deadline,
            retry_period=retry_period,
        )
    probes: ProbeServer | None = None
    address = _split_address(bind_address)
    if address is not None:
        probes = ProbeServer(
            address[0], address[1], registry=metrics.registry,
            # Not leading is healthy and ready (a standby); leading requires synced caches.
            ready=lambda: controller.ready or (elector is not None and not elector.is_leader),
        )
        await probes.start()
        log.info("serving /metrics, /healthz and /readyz on %s:%d", address[0], probes.port)

    async def lead() -> None:
        metrics.leader.set(1)
        try:
            await controller.run()
        finally:
            metrics.leader.set(0)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    work = asyncio.create_task(elector.run(lead) if elector is not None else lead())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
        if elector is not None:
            await elector.release()
        if probes is not None:
            await probes.stop()
        with contextlib.suppress(Exception):
            await recorder.flush(force=True)
        await client.close()
    if work.done() and not work.cancelled() and work.exception() is not None:
        raise work.exception()  # type: ignore[misc]


@click.command(context_settings={"auto_envvar_prefix": "OS_OPERATOR", "show_default": True})
@click.version_option(kubeos.__version__, prog_name="os-operator")
@click.option("--kubeconfig", envvar=["OS_OPERATOR_KUBECONFIG", "KUBECONFIG"], default=None,
              help="Kubeconfig file; default: in-cluster, then KUBECONFIG/~/.kube/config.")
@click.option("--osinstance-namespace", default=labels.DEFAULT_OSINSTANCE_NAMESPACE,
              help="Namespace of the OSInstances (the reference uses default).")
@click.option("--watch-namespace", default=None,
              help="Only reconcile OS CRs in this namespace (default: all namespaces).")
@click.option("--leader-elect/--no-leader-elect", default=True,
              help="Hold a Lease so only one replica works.")
@click.option("--leader-election-namespace",
              default=lambda: os.environ.get("POD_NAMESPACE", "default"),
              help="Namespace of the Lease (default: $POD_NAMESPACE or default).")
@click.option("--leader-election-id", default="os-operator.upgrade.openeuler.org",
              help="Name of the Lease.")
@click.option("--identity", default=lambda: f"{socket.gethostname()}_{os.getpid()}",
              help="This replica's name in the Lease.")
@click.option("--lease-duration", type=float, default=15.0, help="Seconds.")
@click.option("--renew-deadline", type=float, default=10.0, help="Seconds.")
@click.option("--retry-period", type=float, default=2.0, help="Seconds.")
@click.option("--bind-address", default=":8080",
              help="host:port for /metrics, /healthz and /readyz; 0 disables.")
@click.option("--workers", type=int, default=2, help="Concurrent reconciles (one per OS).")
@click.option("--resync", type=float, default=15.0,
              help="Seconds between re-checks of time-based conditions.")
@click.option("--log-level", default="info",
              type=click.Choice(["debug", "info", "warning", "error"]))
def main(log_level: str, **options: object) -> None:
    """Roll OS upgrades, rollbacks and settings across the cluster's nodes."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        asyncio.run(run_operator(**options))  # type: ignore[arg-type]
    except LeadershipLost as lost:
        log.error("%s; exiting so a fresh process starts from the cluster state", lost)
        sys.exit(1)


def _count_refusal(metrics: Metrics, code: int) -> None:
    if code in (401, 403):
        metrics.api_refused.labels(str(code)).inc()


if __name__ == "__main__":
    main()
