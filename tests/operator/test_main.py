"""The os-operator command line: flags and their OS_OPERATOR_* environment variables."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from kubeos.operator import main as entry


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def fake_run(**options: Any) -> None:
        seen.update(options)

    monkeypatch.setattr(entry, "run_operator", fake_run)
    return seen


def test_defaults(captured: dict[str, Any]) -> None:
    result = CliRunner().invoke(entry.main, [], env={"KUBECONFIG": ""})
    assert result.exit_code == 0, result.output
    assert captured["osinstance_namespace"] == "default"
    assert captured["leader_elect"] is True
    assert captured["watch_namespace"] is None
    assert captured["bind_address"] == ":8080"


def test_environment_and_flags(captured: dict[str, Any]) -> None:
    env = {"OS_OPERATOR_OSINSTANCE_NAMESPACE": "kubeos", "OS_OPERATOR_LEADER_ELECT": "false",
           "OS_OPERATOR_BIND_ADDRESS": "0", "KUBECONFIG": "/tmp/kc"}
    result = CliRunner().invoke(entry.main, ["--workers", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert captured["osinstance_namespace"] == "kubeos"
    assert captured["leader_elect"] is False
    assert captured["bind_address"] == "0"
    assert captured["kubeconfig"] == "/tmp/kc"
    assert captured["workers"] == 3


@pytest.mark.parametrize(("text", "expected"), [
    ("0", None), ("", None), (":8080", ("0.0.0.0", 8080)), ("127.0.0.1:9", ("127.0.0.1", 9))])
def test_bind_address(text: str, expected: tuple[str, int] | None) -> None:
    assert entry._split_address(text) == expected
