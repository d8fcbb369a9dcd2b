"""The manifests' command lines are accepted by the entrypoints the images carry.

A flag the program does not know makes the Deployment crash-loop on its first start, which no
image test would show: parse the manifests' args with the real click commands instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from kubeos.operator.main import main as operator_main
from kubeos.proxy.main import main as proxy_main

MANAGER = Path(__file__).resolve().parents[2] / "config" / "manager"


def _container(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((MANAGER / name).read_text())
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return container


def _parse(command: click.Command, container: dict[str, Any]) -> None:
    """Raises click's usage error for an unknown flag or a bad value, as the pod would."""
    args = [str(a) for a in container.get("args", [])]
    with command.make_context(container["command"][0], args) as ctx:
        assert ctx.params is not None


def test_operator_args_parse(monkeypatch: Any) -> None:
    container = _container("operator.yaml")
    assert container["command"] == ["/usr/local/bin/os-operator"]
    monkeypatch.setenv("POD_NAMESPACE", "upgrade-system")
    _parse(operator_main, container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    bind = next(a for a in container["args"] if a.startswith("--bind-address="))
    assert int(bind.rsplit(":", 1)[1]) == ports["metrics"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ports


def test_proxy_args_parse(monkeypatch: Any) -> None:
    container = _container("proxy.yaml")
    assert container["command"] == ["/usr/local/bin/os-proxy"]
    assert any(e["name"] == "NODE_NAME" for e in container["env"])
    monkeypatch.setenv("NODE_NAME", "node-1")
    _parse(proxy_main, container)
