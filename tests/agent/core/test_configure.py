"""``configure`` through the agent: the settings engine runs, results come back, errors are
JSON-RPC errors; the agent keeps serving status and configure even on a host whose boot layout
it does not understand."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeos.agent.errors import ConfigureError
from kubeos.agent.hostpaths import HostPaths
from kubeos.agent.service import AgentService


@pytest.fixture
def agent(tmp_path: Path) -> AgentService:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "sysctl.conf").write_text("# tuned by hand\nvm.swappiness = 10\n")
    service = AgentService(
        HostPaths(root=root, mountinfo=tmp_path / "no-mountinfo"),
        reboot=lambda reason: pytest.fail(f"unexpected reboot: {reason}"),
        restart_service=None,
    )
    service.start()  # no A/B layout here: recorded, not fatal
    return service


def test_configure_runs_the_settings_engine(agent: AgentService, tmp_path: Path) -> None:
    request = {
        "configs": [
            {
                "model": "kernel.sysctl.persist",
                "config_path": "",
                "contents": {
                    "vm.swappiness": {"value": 1, "operation": ""},
                    "net.ipv4.ip_forward": {"value": "1", "operation": ""},
                },
            }
        ]
    }
    result = agent.configure([request])
    assert result["status"] == "Configured"
    assert result["changed"] is True
    text = (tmp_path / "root" / "etc" / "sysctl.conf").read_text()
    assert text.startswith("# tuned by hand\n")
    assert "vm.swappiness = 1" in text and "net.ipv4.ip_forward=1" in text


def test_configure_errors_change_nothing(agent: AgentService, tmp_path: Path) -> None:
    before = (tmp_path / "root" / "etc" / "sysctl.conf").read_text()
    with pytest.raises(ConfigureError, match=r"kuberntes\.kubelet"):
        agent.configure(
            [
                {
                    "configs": [
                        {"model": "kernel.sysctl.persist", "contents": {"a.b": {"value": "1"}}},
                        {"model": "kuberntes.kubelet", "contents": {}},
                    ]
                }
            ]
        )
    assert (tmp_path / "root" / "etc" / "sysctl.conf").read_text() == before


def test_status_without_a_boot_layout(agent: AgentService) -> None:
    status = agent.status([])
    assert status["booted_slot"] is None and status["slots"] == []
    assert "boot layout not understood" in status["last_error"]
    assert status["agent_version"]
