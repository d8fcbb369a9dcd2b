"""A real, local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

Why real processes and not a fake: CRD schema and CEL validation, status subresources,
resourceVersion conflicts, watches, server-side apply and the Eviction API with
PodDisruptionBudgets are API-server behaviour; imitating them would test our imitation.
This follows controller-runtime's envtest: loopback only, random free ports, a throwaway CA,
a client-certificate admin kubeconfig, and no kubelet (``kubeos.sim.kubelet`` plays that part).

The controller-manager runs only the controllers the tests and the simulator rely on:
``disruption`` (PDB status, hence real eviction decisions), ``garbagecollector`` (owner
references) and ``namespace`` (so the per-test namespaces really go away).

Usage::

    with ControlPlane() as cp:
        client = cp.client()
        ...
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import yaml
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from kubeos.sim.envtest_assets import EnvtestAssets, find_assets
from kubeos.sim.pki import ControlPlanePki, create_pki, node_client_cert
from kubeos.sim.processes import ManagedProcess

FIELD_MANAGER = "kubeos-sim"
DEFAULT_CONTROLLERS: tuple[str, ...] = ("disruption", "garbagecollector", "namespace")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
FIRST_SERVICE_IP = "10.0.0.1"


class ControlPlaneError(RuntimeError):
    """The control plane failed to start or to become ready; the message carries the logs."""


def default_crd_dirs() -> list[Path]:
    """The repository's generated CRDs (``config/crd/bases``), if this is a source checkout.

    Looked up from this file (an editable install lives in the checkout) and from the current
    directory, so both ``pytest`` and ``kubeos-sim`` run from the repository find them.
    """
    candidates = [
        Path(__file__).resolve().parents[3] / "config" / "crd" / "bases",
        Path.cwd() / "config" / "crd" / "bases",
    ]
    seen: list[Path] = []
    for candidate in candidates:
        if candidate.is_dir() and candidate.resolve() not in seen:
            seen.append(candidate.resolve())
    return seen[:1]


_WORK_DIR_PREFIX = "kubeos-controlplane-"
_OWNER_FILE = "owner.pid"


def _remove_stale_work_dirs() -> None:
    """Delete work dirs of control planes whose owning process is gone.

    A SIGKILLed test run cannot remove its temp dir (its children die with it, see
    :mod:`kubeos.sim.processes`, but files stay), so the next start cleans up after it.
    """
    for directory in Path(tempfile.gettempdir()).glob(f"{_WORK_DIR_PREFIX}*"):
        try:
            owner = int((directory / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            shutil.rmtree(directory, ignore_errors=True)


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for *count* distinct free loopback ports.

    All sockets stay open until every port is chosen, so the ports differ from each other;
    another process could still take one before our child binds it, which is rare enough
    that a clear start-up failure is the right answer.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def crd_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in the given YAML files or directories."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        elif path.is_file():
            files.append(path)
    documents: list[dict[str, Any]] = []
    for file in files:
        with file.open() as stream:
            for doc in yaml.safe_load_all(stream):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    documents.append(doc)
    return documents


class ControlPlane:
    """One etcd + kube-apiserver + kube-controller-manager, started and stopped together.

    Start with :meth:`start` or a ``with`` block; everything (processes, certificates, etcd
    data) lives in a temporary directory that :meth:`stop` removes. Children die with this
    process even if it is SIGKILLed (see :mod:`kubeos.sim.processes`).
    """

    def __init__(
        self,
        *,
        crd_paths: Sequence[Path] | None = None,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        assets: EnvtestAssets | None = None,
        start_timeout: float = 90.0,
        keep_work_dir: bool = False,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self._crd_paths = list(crd_paths) if crd_paths is not None else default_crd_dirs()
        self._controllers = list(controllers)
        self._assets = assets
        self._start_timeout = start_timeout
        self._keep_work_dir = keep_work_dir
        self._extra_apiserver_args = list(extra_apiserver_args)
        self._work_dir: Path | None = None
        self._pki: ControlPlanePki | None = None
        self._processes: list[ManagedProcess] = []
        self._apiserver_port = 0
        self._kubeconfig_path: Path | None = None
        self.startup_seconds: float = 0.0
        self.installed_crds: list[str] = []

    # -- public surface ---------------------------------------------------------------------

    @property
    def kubeconfig_path(self) -> Path:
        """Path of the admin kubeconfig (client certificate in ``system:masters``)."""
        if self._kubeconfig_path is None:
            raise ControlPlaneError("the control plane is not running")
        return self._kubeconfig_path

    @property
    def server_url(self) -> str:
        """``https://127.0.0.1:<port>`` of the API server."""
        if not self._apiserver_port:
            raise ControlPlaneError("the control plane is not running")
        return f"https://127.0.0.1:{self._apiserver_port}"

    @property
    def ca_pem(self) -> bytes:
        """The cluster CA certificate (PEM) that signs the API server's serving certificate."""
        if self._pki is None:
            raise ControlPlaneError("the control plane is not running")
        return self._pki.ca.cert.read_bytes()

    @property
    def work_dir(self) -> Path:
        """The temporary directory holding certificates, etcd data and process logs."""
        if self._work_dir is None:
            raise ControlPlaneError("the control plane is not running")
        return self._work_dir

    def kube_config(self) -> KubeConfig:
        """The admin kubeconfig, loaded for lightkube."""
        return KubeConfig.from_file(self.kubeconfig_path)

    def node_kubeconfig(self, node: str) -> dict[str, Any]:
        """The kubeconfig document of *node*'s kubelet: a client certificate for
        ``system:node:<node>`` (written once per node into the work dir)."""
        if self._pki is None:
            raise ControlPlaneError("the control plane is not running")
        pair = node_client_cert(self.work_dir / "pki" / "nodes", self._pki.ca, node)
        return {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kubeos-sim", "cluster": {
                "server": self.server_url, "certificate-authority": str(self._pki.ca.cert)}}],
            "users": [{"name": node, "user": {
                "client-certificate": str(pair.cert), "client-key": str(pair.key)}}],
            "contexts": [{"name": node, "context": {"cluster": "kubeos-sim", "user": node}}],
            "current-context": node,
        }

    def node_kube_config(self, node: str) -> KubeConfig:
        """:meth:`node_kubeconfig`, loaded for lightkube."""
        return KubeConfig.from_dict(self.node_kubeconfig(node))

    def client(self, *, field_manager: str = FIELD_MANAGER, namespace: str | None = None
               ) -> Client:
        """A synchronous lightkube client as the admin user.

        ``trust_env=False`` keeps HTTP(S)_PROXY settings of the machine away from loopback.
        """
        return Client(config=self.kube_config(), namespace=namespace,
                      field_manager=field_manager, trust_env=False)

    def async_client(self, *, field_manager: str = FIELD_MANAGER, namespace: str | None = None
                     ) -> AsyncClient:
        """An asynchronous lightkube client as the admin user (close it when done)."""
        return AsyncClient(config=self.kube_config(), namespace=namespace,
                           field_manager=field_manager, trust_env=False)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start all three processes, wait until they serve, install and establish the CRDs.

        On any failure everything started so far is stopped and the error carries the end
        of the failing process's log.
        """
        if self._work_dir is not None:
            raise ControlPlaneError("the control plane is already running")
        began = time.monotonic()
        assets = self._assets or find_assets()
        _remove_stale_work_dirs()
        self._work_dir = Path(tempfile.mkdtemp(prefix=_WORK_DIR_PREFIX))
        (self._work_dir / _OWNER_FILE).write_text(str(os.getpid()))
        try:
            self._start(assets, began + self._start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop the processes (controller-manager first, etcd last) and remove the temp dir."""
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        if self._work_dir is not None and not self._keep_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        self._work_dir = None
        self._pki = None
        self._kubeconfig_path = None
        self._apiserver_port = 0

    def kill_apiserver(self) -> None:
        """SIGKILL the kube-apiserver and start it again on the same port (etcd keeps the data).

        Returns once the new process runs, not once it serves: await :meth:`wait_ready` in a
        thread so the caller's event loop keeps running meanwhile.
        """
        index = next(i for i, p in enumerate(self._processes) if p.name == "kube-apiserver")
        old = self._processes[index]
        old.kill()
        self._processes[index] = ManagedProcess(old.name, old.argv, old.log_path)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the API server answers ``/readyz``."""
        self._wait_http(f"{self.server_url}/readyz", time.monotonic() + timeout,
                        context=self._admin_ssl_context())

    def check_alive(self) -> None:
        """Raise :class:`ControlPlaneError` if any of the processes has exited."""
        for process in self._processes:
            code = process.returncode()
            if code is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with status {code}; last log lines:\n"
                    f"{process.log_tail()}"
                )

    # -- internals --------------------------------------------------------------------------

    def _start(self, assets: EnvtestAssets, deadline: float) -> None:
        work = self.work_dir
        etcd_port, peer_port, api_port, kcm_port = _free_ports(4)
        self._pki = pki = create_pki(work / "pki", service_ip=FIRST_SERVICE_IP)
        logs = work / "logs"

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._processes.append(ManagedProcess("etcd", [
            str(assets.etcd),
            "--name=default",
            f"--data-dir={work / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Test data is disposable: skipping fsync makes every write much cheaper.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ], logs / "etcd.log"))
        self._wait_http(f"{etcd_url}/health", deadline, context=None)

        self._apiserver_port = api_port
        self._processes.append(ManagedProcess("kube-apiserver", [
            str(assets.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={work / 'apiserver-certs'}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-account-issuer=https://127.0.0.1:{api_port}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # as kubeadm sets them: kubelets (and a proxy draining with its kubelet's
            # identity) are scoped to their own node by the API server
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # No serviceaccount controller runs, so pods must not wait for a default SA.
            "--disable-admission-plugins=ServiceAccount",
            # The `kubernetes` Service's endpoints cannot be 127.0.0.1 (loopback is rejected);
            # nothing in the simulation reaches the API server through that Service.
            "--endpoint-reconciler-type=none",
            *self._extra_apiserver_args,
        ], logs / "kube-apiserver.log"))
        self._kubeconfig_path = self._write_kubeconfig(work / "admin.kubeconfig", pki)
        self._wait_http(f"{self.server_url}/readyz", deadline, context=self._admin_ssl_context())

        self._processes.append(ManagedProcess("kube-controller-manager", [
            str(assets.kube_controller_manager),
            f"--kubeconfig={self._kubeconfig_path}",
            f"--authentication-kubeconfig={self._kubeconfig_path}",
            f"--authorization-kubeconfig={self._kubeconfig_path}",
            f"--controllers={','.join(self._controllers)}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={work / 'kcm-certs'}",
            "--cluster-name=kubeos-sim",
        ], logs / "kube-controller-manager.log"))

        # CRDs are installed while the controller-manager starts; neither waits on the other.
        self.installed_crds = self.install_crds(self._crd_paths, deadline)

        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its serving cert is self-signed on the fly
        self._wait_http(f"https://127.0.0.1:{kcm_port}/healthz", deadline, context=insecure)

    def install_crds(self, paths: Iterable[Path], deadline: float | None = None) -> list[str]:
        """Server-side apply every CRD found in *paths*; wait until each is Established and served.

        Returns the CRD names. Usable on a running control plane too (e.g. after
        regenerating the CRDs).
        """
        if deadline is None:
            deadline = time.monotonic() + self._start_timeout
        documents = crd_documents(paths)
        if not documents:
            return []
        names: list[str] = []
        client = self.client()
        try:
            for document in documents:
                crd = cast(CustomResourceDefinition, CustomResourceDefinition.from_dict(document))
                client.apply(crd, field_manager=FIELD_MANAGER, force=True)
                names.append(str(document["metadata"]["name"]))
            for name in names:
                self._wait_established(client, name, deadline)
        finally:
            client.close()
        # Established is not the end: the first requests for a new resource get 429 "storage
        # is (re)initializing" while its watch cache fills. Wait for a LIST to succeed, so no
        # test or simulator client ever sees that start-up artefact.
        context = self._admin_ssl_context()
        for document in documents:
            spec = document["spec"]
            for version in spec.get("versions", []):
                if version.get("served", True):
                    url = (f"{self.server_url}/apis/{spec['group']}/{version['name']}/"
                           f"{spec['names']['plural']}?limit=1")
                    self._wait_http(url, deadline, context=context)
                    self._warm_up(document, version["name"], context)
        return names

    def _warm_up(self, crd: dict[str, Any], version: str, context: ssl.SSLContext) -> None:
        """Send one dry-run create of an empty object of this kind and ignore the answer.

        The API server's first write of a custom resource after start-up stalls for ~2s
        (measured on 1.34: any first write, valid or not, dry run or not). Paying that here
        keeps it out of the first test's timing, where it would look like a slow operator.
        """
        spec = crd["spec"]
        path = f"/apis/{spec['group']}/{version}/"
        if spec.get("scope", "Namespaced") == "Namespaced":
            path += "namespaces/default/"
        body = json.dumps({
            "apiVersion": f"{spec['group']}/{version}",
            "kind": spec["names"]["kind"],
            "metadata": {"name": "kubeos-sim-warm-up"},
        }).encode()
        request = urllib.request.Request(
            f"{self.server_url}{path}{spec['names']['plural']}?dryRun=All",
            data=body, method="POST", headers={"Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with contextlib.suppress(urllib.error.HTTPError), opener.open(request, timeout=30):
            pass

    def _wait_established(self, client: Client, name: str, deadline: float) -> None:
        while True:
            crd = client.get(CustomResourceDefinition, name)
            conditions = crd.status.conditions if crd.status and crd.status.conditions else []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"CRD {name} not Established in time: "
                    + "; ".join(f"{c.type}={c.status} ({c.message})" for c in conditions)
                )
            time.sleep(0.05)

    def _admin_ssl_context(self) -> ssl.SSLContext:
        assert self._pki is not None
        context = ssl.create_default_context(cafile=str(self._pki.ca.cert))
        context.load_cert_chain(str(self._pki.admin.cert), str(self._pki.admin.key))
        return context

    def _wait_http(self, url: str, deadline: float, context: ssl.SSLContext | None) -> None:
        """Poll *url* until it answers 200, a child dies, or the deadline passes."""
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),  # never route loopback through a proxy
            urllib.request.HTTPSHandler(context=context),
        )
        last = "no answer yet"
        while True:
            self.check_alive()
            try:
                with opener.open(url, timeout=2) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                body = error.read().decode(errors="replace")
                last = f"HTTP {error.code}: {body[-2000:]}"
            except (OSError, ssl.SSLError) as error:
                last = str(error)
            if time.monotonic() > deadline:
                tails = "\n".join(
                    f"--- {p.name} ---\n{p.log_tail()}" for p in self._processes
                )
                raise ControlPlaneError(f"{url} not ready in time ({last})\n{tails}")
            time.sleep(0.1)

    def _write_kubeconfig(self, path: Path, pki: ControlPlanePki) -> Path:
        """Write an admin kubeconfig with file references (kubectl and lightkube read both)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "kubeos-sim",
                "cluster": {
                    "server": self.server_url,
                    "certificate-authority": str(pki.ca.cert),
                },
            }],
            "users": [{
                "name": "kubeos-admin",
                "user": {
                    "client-certificate": str(pki.admin.cert),
                    "client-key": str(pki.admin.key),
                },
            }],
            "contexts": [{
                "name": "kubeos-sim",
                "context": {"cluster": "kubeos-sim", "user": "kubeos-admin",
                            "namespace": "default"},
            }],
            "current-context": "kubeos-sim",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path


def copy_kubeconfig(control_plane: ControlPlane, destination: Path) -> Path:
    """Write a self-contained copy of the admin kubeconfig (certificates embedded).

    The control plane's own kubeconfig refers to files in its temp dir; a copy handed to
    another program (a container, another user, a different working directory) should carry
    everything it needs. Written atomically so a watcher never reads half a file.
    """
    source = yaml.safe_load(control_plane.kubeconfig_path.read_text())
    cluster = source["clusters"][0]["cluster"]
    user = source["users"][0]["user"]
    cluster["certificate-authority-data"] = base64.b64encode(
        Path(cluster.pop("certificate-authority")).read_bytes()).decode()
    user["client-certificate-data"] = base64.b64encode(
        Path(user.pop("client-certificate")).read_bytes()).decode()
    user["client-key-data"] = base64.b64encode(Path(user.pop("client-key")).read_bytes()).decode()
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(destination.name + ".tmp")
    tmp.write_text(yaml.safe_dump(source, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(destination)
    return destination
