"""Deployed credentials for the simulator and the tests: shipped RBAC, the policy, pod-bound tokens.

Why: a missing verb or a too-strict policy must show here, not first on a user's cluster. So the
operator and every proxy talk to the API server as their ServiceAccounts, with ``config/rbac``
and ``config/policy`` applied exactly as shipped, and each token is minted the way the kubelet
mints it: a TokenRequest bound to a Pod of the component (a proxy's pod is bound to its node,
so the API server puts the node's name in the token's claims, which the policy checks). No
kubelet runs containers here, so the Pods are objects only; the drain skips the proxy's pods
because the shipped DaemonSet controls them, as on a real node.

The harness (whoever builds the cluster, applies CRs and plays the kubelet) keeps admin rights.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, cast

import yaml
from lightkube import Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Pod, ServiceAccount

from kubeos.api import labels
from kubeos.kube.client import token_kubeconfig

SYSTEM_NAMESPACE = "upgrade-system"
OPERATOR_ACCOUNT = "kubeos-operator"
PROXY_ACCOUNT = "kubeos-proxy"
ACCESS_DIRS = ("rbac", "policy")
FIELD_MANAGER = "kubeos-sim-access"
TOKEN_SECONDS = 48 * 3600  # longer than any run; the kubelet would rotate it
PROBE_NAME = "kubeos-policy-probe"


class AccessError(RuntimeError):
    """The shipped access rules could not be installed or are not enforced."""


def config_root() -> Path:
    """The repository's ``config`` directory (source checkout or current directory)."""
    for candidate in (Path(__file__).resolve().parents[3] / "config", Path.cwd() / "config"):
        if (candidate / "rbac" / "kustomization.yaml").is_file():
            return candidate
    raise AccessError("config/rbac not found: run from a source checkout of the repository")


def kustomize_documents(directory: Path) -> list[dict[str, Any]]:
    """The documents of the plain files a ``kustomization.yaml`` lists under ``resources``.

    Enough for ``config/rbac`` and ``config/policy``, which use no transformers: a test of
    ``kubectl apply -k config/default`` checks the full rendering separately.
    """
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    documents: list[dict[str, Any]] = []
    for entry in spec.get("resources") or []:
        with (directory / str(entry)).open() as stream:
            documents.extend(d for d in yaml.safe_load_all(stream) if isinstance(d, dict))
    return documents


def access_documents(root: Path | None = None) -> list[dict[str, Any]]:
    """ServiceAccounts, roles, bindings and the node-scoping policy, as shipped."""
    base = root or config_root()
    return [doc for name in ACCESS_DIRS for doc in kustomize_documents(base / name)]


def manifest(kind: str, name: str, root: Path | None = None) -> dict[str, Any]:
    """One document of ``config/manager`` (the shipped Deployment or DaemonSet)."""
    for doc in kustomize_documents((root or config_root()) / "manager"):
        if doc.get("kind") == kind and doc["metadata"]["name"] == name:
            return doc
    raise AccessError(f"config/manager has no {kind} {name}")


class Access:
    """Installs the shipped access rules on a cluster and mints the components' tokens.

    *client* is the harness's admin client (synchronous); *server* and *ca_pem* go into the
    kubeconfigs of the tokens.
    """

    def __init__(self, client: Client, *, server: str, ca_pem: bytes,
                 root: Path | None = None) -> None:
        self._client = client
        self._server = server
        self._ca_pem = ca_pem
        self._root = root or config_root()
        self._daemonset_uid = ""

    def install(self, timeout: float = 30.0) -> None:
        """Apply ``config/rbac`` and ``config/policy``, create the proxy's DaemonSet object,
        and wait until the API server enforces the policy."""
        try:
            self._client.create(Namespace(metadata=ObjectMeta(name=SYSTEM_NAMESPACE)))
        except ApiError as error:
            if error.status.code != 409:
                raise
        for document in access_documents(self._root):
            self._client.apply(from_dict(document), field_manager=FIELD_MANAGER, force=True)
        daemonset = manifest("DaemonSet", PROXY_ACCOUNT, self._root)
        applied = self._client.apply(from_dict(daemonset), field_manager=FIELD_MANAGER,
                                     force=True)
        assert applied.metadata is not None
        self._daemonset_uid = str(applied.metadata.uid)
        self._wait_enforced(time.monotonic() + timeout)

    # -- pods and tokens ----------------------------------------------------------------------

    def proxy_pod(self, node: str) -> Pod:
        """The proxy DaemonSet's pod on *node* (created if missing), controlled by the DaemonSet."""
        if not self._daemonset_uid:
            raise AccessError("install() first: the proxy pods belong to its DaemonSet")
        template = manifest("DaemonSet", PROXY_ACCOUNT, self._root)["spec"]["template"]
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"{PROXY_ACCOUNT}-{node}", "namespace": SYSTEM_NAMESPACE,
                "labels": dict(template["metadata"].get("labels") or {}),
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "DaemonSet", "name": PROXY_ACCOUNT,
                    "uid": self._daemonset_uid, "controller": True,
                    "blockOwnerDeletion": True,
                }],
            },
            "spec": {**copy.deepcopy(template["spec"]), "nodeName": node},
        }
        return self._ensure_pod(body)

    def operator_pod(self) -> Pod:
        """A pod of the operator's Deployment (not bound to a node: no scheduler runs here)."""
        template = manifest("Deployment", OPERATOR_ACCOUNT, self._root)["spec"]["template"]
        spec = copy.deepcopy(template["spec"])
        spec.pop("nodeSelector", None)
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{OPERATOR_ACCOUNT}-sim", "namespace": SYSTEM_NAMESPACE,
                         "labels": dict(template["metadata"].get("labels") or {})},
            "spec": spec,
        }
        return self._ensure_pod(body)

    def token(self, account: str, pod: Pod, seconds: int = TOKEN_SECONDS) -> str:
        """A token of *account* bound to *pod*, as the kubelet requests for a projected volume."""
        assert pod.metadata is not None
        request = ServiceAccount.Token(
            metadata=ObjectMeta(name=account, namespace=SYSTEM_NAMESPACE),
            spec=TokenRequestSpec(
                audiences=[], expirationSeconds=seconds,
                boundObjectRef=BoundObjectReference(
                    apiVersion="v1", kind="Pod", name=pod.metadata.name, uid=pod.metadata.uid),
            ),
        )
        answer = self._client.create(request, account, namespace=SYSTEM_NAMESPACE)
        assert answer.status is not None
        return str(answer.status.token)

    def unbound_token(self, account: str, seconds: int = 3600) -> str:
        """A token of *account* bound to nothing (what a leaked long-lived token looks like)."""
        request = ServiceAccount.Token(
            metadata=ObjectMeta(name=account, namespace=SYSTEM_NAMESPACE),
            spec=TokenRequestSpec(audiences=[], expirationSeconds=seconds))
        answer = self._client.create(request, account, namespace=SYSTEM_NAMESPACE)
        assert answer.status is not None
        return str(answer.status.token)

    def config(self, token: str, name: str = "kubeos") -> KubeConfig:
        return KubeConfig.from_dict(token_kubeconfig(self._server, self._ca_pem, token, name=name))

    def proxy_config(self, node: str) -> KubeConfig:
        """The kubeconfig of *node*'s proxy: its DaemonSet pod's bound token."""
        return self.config(self.token(PROXY_ACCOUNT, self.proxy_pod(node)), name=node)

    def operator_config(self) -> KubeConfig:
        return self.config(self.token(OPERATOR_ACCOUNT, self.operator_pod()), name="operator")

    def write_kubeconfig(self, token: str, path: Path) -> Path:
        """The kubeconfig of *token* as a file (for a component that runs as a process)."""
        document = token_kubeconfig(self._server, self._ca_pem, token)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        path.chmod(0o600)
        return path

    # -- internals ----------------------------------------------------------------------------

    def _ensure_pod(self, body: dict[str, Any]) -> Pod:
        meta = body["metadata"]
        try:
            pod = cast(Pod, Pod.from_dict(body))
            return self._client.create(pod)
        except ApiError as error:
            if error.status.code != 409:
                raise
        existing: Pod = self._client.get(Pod, meta["name"], namespace=meta["namespace"])
        return existing

    def _wait_enforced(self, deadline: float) -> None:
        """Until a write with a proxy token that has no node claim gets the policy's 403.

        A new policy takes effect once the API server's policy informer has seen it (about a
        second); a run that started earlier would test RBAC alone.
        """
        probe = Client(config=self.config(self.unbound_token(PROXY_ACCOUNT)), trust_env=False)
        body = from_dict({
            "apiVersion": labels.API_VERSION, "kind": labels.OSINSTANCE_KIND,
            "metadata": {"name": PROBE_NAME, "namespace": SYSTEM_NAMESPACE},
        })
        last = "no answer"
        try:
            while True:
                try:
                    probe.create(body, dry_run=True)
                    last = "a dry-run write was admitted"
                except ApiError as error:
                    if error.status.code == 403 and "node claim" in str(error.status.message):
                        return
                    last = f"{error.status.code}: {error.status.message}"
                if time.monotonic() > deadline:
                    raise AccessError(f"the node-scoping policy is not enforced ({last})")
                time.sleep(0.2)
        finally:
            probe.close()

