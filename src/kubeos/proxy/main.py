"""``os-proxy``: run the node controller for the node named by ``NODE_NAME``.

Runs in the proxy DaemonSet (one pod per node, ``NODE_NAME`` from ``spec.nodeName``, the agent
socket's directory mounted from the host) or, for rehearsals, anywhere with a kubeconfig.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import click

import kubeos
from kubeos.agent.client import DEFAULT_SOCKET, AsyncAgentClient
from kubeos.api import labels
from kubeos.kube.client import load_config, make_client
from kubeos.proxy.controller import COMPONENT, ProxyController, ProxySettings
from kubeos.proxy.drain import DrainSettings
from kubeos.proxy.state import Timing


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(kubeos.__version__, prog_name="os-proxy")
@click.option("--node-name", envvar="NODE_NAME", required=True, help="This node (env NODE_NAME).")
@click.option("--kubeconfig", envvar="KUBECONFIG_FILE", default=None,
              help="Kubeconfig file; default: in-cluster, then KUBECONFIG / ~/.kube/config.")
@click.option("--namespace", default=labels.DEFAULT_OSINSTANCE_NAMESPACE, show_default=True,
              help="Namespace of the OSInstances.")
@click.option("--agent-socket", type=click.Path(path_type=Path), default=DEFAULT_SOCKET,
              show_default=True, help="The os-agent's unix socket.")
@click.option("--agent-connect-timeout", type=float, default=5.0, show_default=True)
@click.option("--agent-call-timeout", type=float, default=60.0, show_default=True,
              help="Seconds for short agent calls (status, commit, upgrade).")
@click.option("--agent-operation-timeout", type=float, default=3600.0, show_default=True,
              help="Seconds for prepare_upgrade and configure.")
@click.option("--health-window", type=float, default=60.0, show_default=True,
              help="Seconds the node must stay Ready on the new version before commit.")
@click.option("--reboot-timeout", type=float, default=900.0, show_default=True,
              help="Seconds from the reboot request until the node must be Ready again.")
@click.option("--drain-concurrency", type=int, default=5, show_default=True)
@click.option("--eviction-kubeconfig", envvar="EVICTION_KUBECONFIG", default=None,
              help="Kubeconfig of this node's kubelet (e.g. /etc/kubernetes/kubelet.conf). "
                   "Pods are then listed and evicted as the node itself, and the API server "
                   "(NodeRestriction) refuses evictions of pods on other nodes; "
                   "docs/security.md.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(
    node_name: str,
    kubeconfig: str | None,
    namespace: str,
    agent_socket: Path,
    agent_connect_timeout: float,
    agent_call_timeout: float,
    agent_operation_timeout: float,
    health_window: float,
    reboot_timeout: float,
    drain_concurrency: int,
    eviction_kubeconfig: str | None,
    verbose: bool,
) -> None:
    """Drive this node's upgrades, rollbacks and configuration through its os-agent."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    def agent() -> AsyncAgentClient:
        return AsyncAgentClient(
            agent_socket,
            connect_timeout=agent_connect_timeout,
            call_timeout=agent_call_timeout,
            operation_timeout=agent_operation_timeout,
        )

    settings = ProxySettings(
        namespace=namespace,
        timing=Timing(health_window=health_window, reboot_timeout=reboot_timeout),
        drain=DrainSettings(concurrency=drain_concurrency),
    )

    async def serve() -> None:
        # SIGTERM is how the kubelet stops the pod: stop the same way as on SIGINT (cancel,
        # let the controller release what it holds and flush its events), then exit 0.
        main_task = asyncio.current_task()
        assert main_task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, main_task.cancel)
        client = make_client(load_config(kubeconfig), field_manager=COMPONENT)
        evictor = (make_client(load_config(eviction_kubeconfig),
                               field_manager=COMPONENT) if eviction_kubeconfig else None)
        try:
            await ProxyController(node_name, client, agent, settings=settings,
                                  evictor=evictor).run()
        except asyncio.CancelledError:
            logging.getLogger(__name__).info("stopping on request")
        finally:
            await client.close()
            if evictor is not None:
                await evictor.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
