"""A simulated cluster: control plane, operator, image server and N simulated nodes.

The control plane (etcd, kube-apiserver, kube-controller-manager) and the operator are real
processes, started from the main thread so their parent-death signal is tied to a thread that
lives as long as we do (see :mod:`kubeos.sim.processes`). The nodes share this process: their
proxies and agents are libraries, each proxy with its own API client.

Credentials are the deployed ones (:mod:`kubeos.sim.credentials`): the shipped RBAC and
node-scoping policy, the operator with its ServiceAccount's token, every proxy with a token
bound to its DaemonSet pod on its node. Any 401 or 403 one of them gets fails the run
(:meth:`Fleet.check_alive`). The harness (CRs, kubelet stand-in, test workloads) is admin.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from lightkube import AsyncClient

from kubeos.kube.client import make_client, on_request, on_response
from kubeos.proxy.controller import ProxySettings
from kubeos.proxy.drain import DrainSettings
from kubeos.proxy.state import Timing
from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.credentials import OPERATOR_ACCOUNT, Access
from kubeos.sim.imageserver import ImageServer
from kubeos.sim.kubelet import KubeletStandIn
from kubeos.sim.node import NodeFaults, SimNode
from kubeos.sim.processes import ManagedProcess

log = logging.getLogger(__name__)

START_VERSION = "1.0.0"
OPERATOR_REQUESTS_METRIC = "kubeos_operator_api_requests_total"
OPERATOR_REFUSED_METRIC = "kubeos_operator_api_refused_total"
OPERATOR_SCRIPT = "from kubeos.operator.main import main; main()"


class FleetError(RuntimeError):
    """The simulated cluster could not start or broke; the message says where to look."""


@dataclass
class FleetOptions:
    """Size, failures and pace of the simulated cluster."""

    nodes: int = 4
    version: str = START_VERSION
    previous: str | None = None  # a version already in slot B (for rollbacks)
    faults: dict[str, NodeFaults] = field(default_factory=dict)  # by node name
    time_scale: float = 1.0  # multiplies the proxies' waits (health window, polling)
    commit_window: float = 120.0
    operator_resync: float = 5.0
    keep_work_dir: bool = False


def node_name(index: int) -> str:
    return f"node-{index:03d}"


def proxy_settings(time_scale: float) -> ProxySettings:
    """Production's state machine with short waits: a simulated node boots in a second."""
    s = time_scale
    return ProxySettings(
        timing=Timing(health_window=2.0 * s, reboot_timeout=180.0, reissue_after=15.0 * s,
                      poll=1.0 * s, resync=30.0 * s),
        drain=DrainSettings(poll_interval=0.5 * s, backoff_base=0.5 * s, backoff_cap=2.0 * s),
        agent_status_timeout=10.0, watch_timeout=120,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """``VmHWM`` (peak resident set) of a live process, in MiB; 0 when unknown."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


class Fleet:
    """``async with Fleet(options) as fleet``: everything up; everything down on exit."""

    def __init__(self, options: FleetOptions) -> None:
        self.options = options
        self.work = Path(tempfile.mkdtemp(prefix="kubeos-sim-"))
        self.plane = ControlPlane()
        self.images = ImageServer(self.work / "images")
        self.operator: ManagedProcess | None = None
        self.operator_metrics_port = 0
        self.nodes: dict[str, SimNode] = {}
        self.kubelet: KubeletStandIn | None = None
        self.client: AsyncClient | None = None  # ours: applying CRs, watching progress
        self._clients: list[AsyncClient] = []
        self.requests: Counter[str] = Counter()  # API requests by "proxy" / "kubelet"
        self.refusals: list[str] = []  # 401/403 answers to a proxy: "<node> <method> <path>"
        self.access: Access | None = None
        self.operator_restarts = 0
        self._operator_refused = 0.0  # refusals counted by operator processes since killed
        self.startup: dict[str, float] = {}

    async def __aenter__(self) -> Fleet:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # agent RPC handlers run in the default executor; with 6 threads (2 cores) one slow
        # prepare_upgrade per node would starve every other node's status call
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            max_workers=min(256, max(32, 2 * self.options.nodes)), thread_name_prefix="sim"))
        loop.set_exception_handler(_quiet_cancellations)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGUSR1, self.dump_tasks)
        began = time.monotonic()
        self.plane.start()  # blocking, in the main thread on purpose (see module docstring)
        self.startup["control plane"] = time.monotonic() - began
        self.images.start()
        began = time.monotonic()
        self.access = Access(self.plane.client(), server=self.plane.server_url,
                             ca_pem=self.plane.ca_pem)
        await asyncio.to_thread(self.access.install)
        self.startup["access"] = time.monotonic() - began
        self._start_operator()
        config = self.plane.kube_config()
        self.client = make_client(config, field_manager="kubeos-sim")
        kubelet_client = self._counted(make_client(config, field_manager="kubeos-sim-kubelet"),
                                       "kubelet")
        self.kubelet = KubeletStandIn(kubelet_client, heartbeat_interval=20.0,
                                      status_interval=120.0)
        await self.kubelet.start()
        began = time.monotonic()
        await self._start_nodes()
        self.startup["nodes"] = time.monotonic() - began

    def _counted(self, client: AsyncClient, who: str) -> AsyncClient:
        on_request(client, lambda _method, _path: self.requests.update([who]))
        self._clients.append(client)
        return client

    @staticmethod
    def credentials_note() -> str:
        """One line for the user: who runs with which rights."""
        return ("operator and proxies run as their ServiceAccounts (config/rbac, config/policy, "
                "pod-bound tokens); a 401/403 stops the run")

    def _refused(self, who: str) -> Callable[[int, str, str], None]:
        def record(code: int, method: str, path: str) -> None:
            if code in (401, 403):
                self.refusals.append(f"{who} {code} {method} {path}")
        return record

    def restart_operator(self) -> None:
        """SIGKILL the operator and start a fresh one (its refusals so far are kept)."""
        if self.operator is None:
            return
        self._operator_refused += self._operator_metric(OPERATOR_REFUSED_METRIC)
        self.operator.kill()
        self.operator_restarts += 1
        self._start_operator()

    def _start_operator(self) -> None:
        assert self.access is not None
        kubeconfig = self.work / "operator.kubeconfig"
        if not kubeconfig.exists():
            self.access.write_kubeconfig(
                self.access.token(OPERATOR_ACCOUNT, self.access.operator_pod()), kubeconfig)
        self.operator_metrics_port = _free_port()
        self.operator = ManagedProcess("os-operator", [
            sys.executable, "-c", OPERATOR_SCRIPT,
            "--kubeconfig", str(kubeconfig),
            "--no-leader-elect",
            "--bind-address", f"127.0.0.1:{self.operator_metrics_port}",
            "--resync", str(self.options.operator_resync),
        ], self.work / "logs" / "operator.log", env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def _start_nodes(self) -> None:
        assert self.kubelet is not None and self.client is not None
        access = self.access
        assert access is not None
        settings = proxy_settings(self.options.time_scale)
        names = [node_name(index) for index in range(1, self.options.nodes + 1)]
        gate = asyncio.Semaphore(16)

        async def proxy_client(name: str) -> AsyncClient:
            async with gate:
                config = await asyncio.to_thread(access.proxy_config, name)
            client = self._counted(make_client(config, field_manager="os-proxy"), "proxy")
            on_response(client, self._refused(name))
            return client

        clients = await asyncio.gather(*(proxy_client(name) for name in names))
        for name, client in zip(names, clients, strict=True):
            self.nodes[name] = SimNode(
                name, self.work / "nodes" / name, self.client, self.kubelet, settings=settings,
                faults=self.options.faults.get(name), commit_window=self.options.commit_window,
                proxy_client=client,
            )
        ca_pem = self.images.ca_pem

        async def start(node: SimNode) -> None:
            async with gate:
                await node.start(self.options.version, ca_pem, self.options.previous)

        await asyncio.gather(*(start(node) for node in self.nodes.values()))

    async def stop(self) -> None:
        """Tear everything down; bounded, so a stuck piece cannot keep processes alive."""
        await asyncio.gather(*(_quietly(node.stop()) for node in self.nodes.values()))
        if self.kubelet is not None:
            await _quietly(self.kubelet.stop())
        for client in [*self._clients, *([self.client] if self.client else [])]:
            await _quietly(client.close())
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        self._clients.clear()
        self.client = None
        if self.operator is not None:
            self.operator.stop()
        self.images.stop()
        self.plane.stop()
        if not self.options.keep_work_dir:
            shutil.rmtree(self.work, ignore_errors=True)

    def dump_tasks(self) -> None:
        """``kill -USR1 <pid>``: write every asyncio task's stack to ``<work>/logs/tasks.txt``
        (what a stuck simulation is waiting for)."""
        path = self.work / "logs" / "tasks.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for task in asyncio.all_tasks():
                print(f"--- {task.get_name()}", file=out)
                task.print_stack(limit=12, file=out)
        log.warning("asyncio tasks written to %s", path)

    # -- health and figures ----------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise :class:`FleetError` if the control plane or the operator died, or if the API
        server refused the operator or a proxy anything (a missing verb, a policy denial)."""
        self.plane.check_alive()
        if self.operator is not None and self.operator.returncode() is not None:
            raise FleetError(
                f"os-operator exited with status {self.operator.returncode()}; last log lines:"
                f"\n{self.operator.log_tail()}"
            )
        if self.refusals:
            raise FleetError(f"the API server refused a proxy: {'; '.join(self.refusals[:5])}")
        refused = self._operator_refused + self._operator_metric(OPERATOR_REFUSED_METRIC)
        if refused:
            raise FleetError(f"the API server refused the operator {refused:.0f} time(s); "
                             f"last log lines:\n{self.operator_log_tail()}")

    def operator_log_tail(self, lines: int = 40) -> str:
        return self.operator.log_tail(lines) if self.operator is not None else ""

    def operator_requests(self) -> float:
        """API requests the operator made so far (its own Prometheus counter)."""
        return self._operator_metric(OPERATOR_REQUESTS_METRIC)

    def _operator_metric(self, metric: str) -> float:
        """The sum of one of the operator's counters over its labels; 0 when unreachable."""
        if not self.operator_metrics_port:
            return 0.0
        url = f"http://127.0.0.1:{self.operator_metrics_port}/metrics"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if line.split("{")[0].split(" ")[0] == metric:
                with contextlib.suppress(ValueError):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def operator_peak_mib(self) -> float:
        return peak_rss_mib(self.operator.pid) if self.operator is not None else 0.0


def _quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Drop asyncio's report of a cancelled RPC connection task.

    Every simulated reboot closes a node's agent server, which cancels its open connections;
    asyncio's stream callback then logs the CancelledError as if it were a crash.
    """
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def _quietly(awaitable: Awaitable[object], timeout: float = 30.0) -> None:
    """Await a teardown step, ignoring its errors, for at most *timeout* seconds."""
    task = asyncio.ensure_future(awaitable)
    _, pending = await asyncio.wait({task}, timeout=timeout)
    if pending:
        task.cancel()
        log.warning("a teardown step did not finish within %.0f s", timeout)
    elif not task.cancelled():
        task.exception()
