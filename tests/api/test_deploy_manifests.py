"""`kubectl kustomize config/default` renders a safe, least-privilege deployment."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render config/default (it ships kustomize)"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "config" / "default")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_renders_crds_rbac_deployment_daemonset(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds.count("CustomResourceDefinition") == 2
    assert kinds.count("Deployment") == 1
    assert kinds.count("DaemonSet") == 1
    assert kinds.count("ClusterRole") == 2
    assert kinds.count("ValidatingAdmissionPolicy") == 1
    assert kinds.count("ValidatingAdmissionPolicyBinding") == 1


def test_node_scoping_policy_guards_the_proxy_and_denies(rendered: list[dict[str, Any]]) -> None:
    policy = _one(rendered, "ValidatingAdmissionPolicy")["spec"]
    binding = _one(rendered, "ValidatingAdmissionPolicyBinding")["spec"]
    assert binding["policyName"] == "kubeos-proxy-node-scope"
    assert binding["validationActions"] == ["Deny"]
    assert policy["failurePolicy"] == "Fail"
    matched = {(group, res) for rule in policy["matchConstraints"]["resourceRules"]
               for group in rule["apiGroups"] for res in rule["resources"]}
    group = "upgrade.openeuler.org"
    for needed in [("", "nodes"), ("", "pods/eviction"), (group, "osinstances"),
                   (group, "osinstances/status"), (group, "os")]:
        assert needed in matched
    assert ":kubeos-proxy" in policy["matchConditions"][0]["expression"]


def test_operator_runs_unprivileged(rendered: list[dict[str, Any]]) -> None:
    dep = _one(rendered, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 6552
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["image"].startswith("registry.example.internal/kubeos/os-operator:")


def test_proxy_reaches_the_agent_socket_with_no_capabilities(
    rendered: list[dict[str, Any]],
) -> None:
    pod = _one(rendered, "DaemonSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["runAsUser"] == 0
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/run/os-agent")
    assert volumes[mount["name"]]["hostPath"]["path"] == "/run/os-agent"
    assert {"operator": "Exists"} in pod["tolerations"]


def _rules(docs: list[dict[str, Any]], name: str) -> dict[str, set[str]]:
    role = _one(docs, "ClusterRole", name)
    out: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], "no wildcards"
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault(f"{group}/{res}", set()).update(rule["verbs"])
    return out


def test_roles_are_separate_and_least_privilege(rendered: list[dict[str, Any]]) -> None:
    operator = _rules(rendered, "kubeos-operator")
    proxy = _rules(rendered, "kubeos-proxy")
    # Only the proxy evicts, and nobody may delete pods directly (PDBs must hold).
    assert "/pods/eviction" not in operator
    assert proxy["/pods/eviction"] == {"create"}
    assert "delete" not in proxy.get("/pods", set())
    assert not any(k.startswith("/pods") for k in operator)
    # The proxy only reads OS intent; the operator never creates OSInstances.
    assert proxy["upgrade.openeuler.org/os"] == {"get", "list", "watch"}
    assert proxy["upgrade.openeuler.org/osinstances/status"] == {"patch"}
    assert "update" not in proxy["upgrade.openeuler.org/osinstances"]
    assert not any(k.endswith("/secrets") for k in [*operator, *proxy])
    assert not any(k.startswith("events.k8s.io/") for k in [*operator, *proxy])
    assert "create" not in operator["upgrade.openeuler.org/osinstances"]
    bindings = {
        b["metadata"]["name"]: b["subjects"][0]["name"]
        for b in rendered
        if b["kind"] == "ClusterRoleBinding"
    }
    assert bindings == {"kubeos-operator": "kubeos-operator", "kubeos-proxy": "kubeos-proxy"}


def test_node_evictions_variant_drains_as_the_node_and_drops_pod_rights() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl
    out = subprocess.run([kubectl, "kustomize", str(ROOT / "config" / "node-evictions")],
                         check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    proxy = _rules(docs, "kubeos-proxy")
    assert not any(k.startswith("/pods") for k in proxy), proxy
    assert proxy["policy/poddisruptionbudgets"] == {"list"}
    pod = _one(docs, "DaemonSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["--eviction-kubeconfig=/etc/kubernetes/kubelet.conf"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/pki"):
        assert mounts[path]["readOnly"] is True
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
