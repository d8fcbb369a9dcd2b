"""Building an async lightkube client the way every component needs it.

Why a helper: the precedence (explicit kubeconfig file, then in-cluster service account,
then ``KUBECONFIG``/``~/.kube/config``) and the request counter used by metrics and the
benchmark should be the same in the operator and the proxy.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def load_config(kubeconfig: str | None = None) -> KubeConfig:
    """Kubeconfig file if given, else in-cluster, else ``KUBECONFIG`` / ``~/.kube/config``."""
    if kubeconfig:
        return KubeConfig.from_file(kubeconfig)
    if (SERVICE_ACCOUNT_DIR / "token").exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return KubeConfig.from_service_account()
    return KubeConfig.from_env()


def make_client(
    config: KubeConfig,
    *,
    field_manager: str,
    namespace: str | None = None,
    timeout: float = 15.0,
) -> AsyncClient:
    """An AsyncClient that ignores proxy environment variables (API traffic goes direct)."""
    return AsyncClient(
        config=config,
        namespace=namespace,
        field_manager=field_manager,
        trust_env=False,
        timeout=httpx2.Timeout(timeout),
    )


def on_request(client: AsyncClient, callback: Callable[[str, str], None]) -> None:
    """Call ``callback(method, path)`` for every HTTP request *client* sends.

    Uses httpx's event hooks on lightkube's inner client (not public lightkube API, hence
    one small place to adapt if it moves).
    """
    inner: Any = client._client._client

    async def hook(request: httpx2.Request) -> None:
        callback(request.method, request.url.path)

    hooks = dict(inner.event_hooks)
    hooks["request"] = [*hooks.get("request", []), hook]
    inner.event_hooks = hooks


def on_response(client: AsyncClient, callback: Callable[[int, str, str], None]) -> None:
    """Call ``callback(status_code, method, path)`` for every HTTP response *client* receives.

    The same hook point as :func:`on_request`; watches report once, when their headers arrive.
    """
    inner: Any = client._client._client

    async def hook(response: httpx2.Response) -> None:
        callback(response.status_code, response.request.method, response.request.url.path)

    hooks = dict(inner.event_hooks)
    hooks["response"] = [*hooks.get("response", []), hook]
    inner.event_hooks = hooks



def token_kubeconfig(server: str, ca_pem: bytes, token: str, *, name: str = "kubeos"
                     ) -> dict[str, Any]:
    """A kubeconfig document for one bearer token (a ServiceAccount's), trusting *ca_pem* only."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_pem).decode(),
        }}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
