"""Cluster fixtures shared by every tier: one real control plane per session, a namespace per test.

Starting etcd + kube-apiserver + kube-controller-manager costs seconds, a namespace costs
milliseconds, so tests share the control plane and isolate themselves by namespace (and by
unique names for cluster-scoped objects such as Nodes).

They live here, at the root of the tests, so that the cluster, kube, operator and proxy tests
share one control plane: a fixture re-exported by several conftest files would be a separate
session fixture in each, and start a control plane of its own. It starts only when a test asks.

Missing binaries make these tests fail, not skip: a silently skipped integration tier looks
exactly like a passing one.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from lightkube import AsyncClient, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from kubeos.kube.client import make_client, on_response
from kubeos.sim.controlplane import ControlPlane
from kubeos.sim.credentials import Access
from kubeos.sim.envtest_assets import MissingBinariesError
from kubeos.sim.kubelet import KubeletStandIn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's control plane, with the repository's CRDs installed and Established."""
    plane = ControlPlane()
    try:
        plane.start()
    except MissingBinariesError as error:
        pytest.fail(f"cluster tests need the control-plane binaries: {error}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def sync_client(control_plane: ControlPlane) -> Iterator[Client]:
    """A synchronous admin client, shared by the session."""
    client = control_plane.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def access(control_plane: ControlPlane, sync_client: Client) -> Access:
    """``kubectl apply -k config/default`` (CRDs, RBAC, policy, Deployment, DaemonSet) as a user
    would, then the pod objects the components' tokens are bound to.

    No controller runs the Deployment or the DaemonSet here; they are objects only.
    """
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to install config/default"
    subprocess.run(
        [kubectl, "--kubeconfig", str(control_plane.kubeconfig_path), "apply",
         "--server-side", "--force-conflicts", "-k", str(ROOT / "config" / "default")],
        check=True, capture_output=True, text=True, timeout=120,
    )
    access = Access(sync_client, server=control_plane.server_url, ca_pem=control_plane.ca_pem)
    access.install()
    return access


class Deployed:
    """API clients with the components' deployed credentials, for one test.

    ``await deployed.proxy(node)``: the token of the proxy DaemonSet's pod on *node*;
    ``await deployed.operator()``: the operator Deployment's pod's token. Both under the shipped
    RBAC and node-scoping policy. Any 401/403 one of them gets fails the test at teardown.
    """

    def __init__(self, access: Access) -> None:
        self._access = access
        self.clients: list[AsyncClient] = []
        self.refusals: list[str] = []

    async def proxy(self, node: str) -> AsyncClient:
        config = await asyncio.to_thread(self._access.proxy_config, node)
        return self._track(make_client(config, field_manager="os-proxy"), node)

    async def operator(self) -> AsyncClient:
        config = await asyncio.to_thread(self._access.operator_config)
        return self._track(make_client(config, field_manager="os-operator"), "operator")

    def _track(self, client: AsyncClient, who: str) -> AsyncClient:
        def record(code: int, method: str, path: str) -> None:
            if code in (401, 403):
                self.refusals.append(f"{who}: {code} {method} {path}")

        on_response(client, record)
        self.clients.append(client)
        return client


@pytest.fixture
async def deployed(access: Access) -> AsyncIterator[Deployed]:
    identities = Deployed(access)
    yield identities
    for client in identities.clients:
        await client.close()
    assert not identities.refusals, f"the API server refused: {identities.refusals}"


@pytest.fixture
def namespace(sync_client: Client) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for it to go)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    sync_client.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    sync_client.delete(Namespace, name)


@pytest.fixture
async def client(control_plane: ControlPlane, namespace: str) -> AsyncIterator[AsyncClient]:
    """An async admin client whose default namespace is the test's namespace.

    Function-scoped because an httpx connection pool belongs to one event loop, and each
    async test runs in its own loop.
    """
    async with control_plane.async_client(namespace=namespace) as async_client:
        yield async_client


@pytest.fixture
async def kubelet(client: AsyncClient) -> AsyncIterator[KubeletStandIn]:
    """A running kubelet stand-in; the test adds nodes with ``await kubelet.add_node(...)``.

    Nodes are cluster-scoped, so tests must give them unique names (see ``unique``).
    """
    async with KubeletStandIn(client, heartbeat_interval=2.0, status_interval=10.0) as stand_in:
        yield stand_in
        for name in list(stand_in.nodes):
            await stand_in.remove_node(name)


@pytest.fixture
def unique() -> str:
    """A short random suffix for names of cluster-scoped objects."""
    return uuid.uuid4().hex[:8]
