"""``kubeos-sim rehearse`` with a failed boot: the node falls back, the rollout halts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from kubeos.sim.cli import main
from kubeos.sim.node import NodeFaults
from kubeos.sim.rehearse import FailSpec, RehearsalError, assign_faults, run_rehearsal

OS_DOC = {
    "apiVersion": "upgrade.openeuler.org/v1alpha1",
    "kind": "OS",
    "metadata": {"name": "os-sample"},
    "spec": {
        "imagetype": "docker", "opstype": "upgrade", "osversion": "KubeOS 1.0.2",
        "maxunavailable": 2, "maxfailures": 0, "containerimage": "registry.example/kubeos:1.0.2",
        "evictpodforce": False, "imageurl": "", "checksum": "", "flagSafe": False,
        "mtls": True, "cacert": "ca.crt", "clientcert": "client.crt", "clientkey": "client.key",
    },
}


def test_fail_specs_parse_and_go_to_the_first_nodes() -> None:
    specs = [FailSpec.parse("boot:1"), FailSpec.parse("drain:2:5"), FailSpec.parse("image")]
    faults = assign_faults(specs, 5)
    assert faults["node-001"].failed_boots == 1
    assert faults["node-002"].slow_drain == faults["node-003"].slow_drain == 5
    assert faults["node-004"].bad_image
    with pytest.raises(RehearsalError):
        FailSpec.parse("network:1")
    with pytest.raises(RehearsalError):
        assign_faults([FailSpec.parse("boot:3")], 2)


@pytest.mark.cluster
@pytest.mark.timeout(240)
async def test_failed_boot_falls_back_and_halts_the_rollout() -> None:
    result = await run_rehearsal(OS_DOC, nodes=5, fails=[FailSpec.parse("boot:1")],
                                 time_scale=0.1, timeout=150, console=Console(quiet=True))
    assert result.outcome == "MaxFailuresReached"
    assert result.failed_nodes == ["node-001"]
    failed = result.nodes["node-001"]
    assert (failed.phase, failed.os_image, failed.slot) == ("Failed", "KubeOS 1.0.0", "A")
    assert result.batches[0] == ["node-001", "node-002"]
    # the halt: nothing after the first batch started
    assert all(result.nodes[n].started is None for n in ("node-003", "node-004", "node-005"))


@pytest.mark.cluster
@pytest.mark.timeout(240)
async def test_slow_drain_waits_for_the_pdb_and_a_bad_image_fails_its_node() -> None:
    result = await run_rehearsal(OS_DOC, nodes=4,
                                 fails=[FailSpec.parse("drain:1:4"), FailSpec.parse("image:1")],
                                 time_scale=0.1, timeout=150, console=Console(quiet=True))
    slow, bad = result.nodes["node-001"], result.nodes["node-002"]
    assert (slow.phase, slow.os_image) == ("Succeeded", "KubeOS 1.0.2")
    assert slow.started is not None and slow.finished is not None
    assert slow.finished - slow.started >= 4
    assert (bad.phase, bad.os_image, bad.slot) == ("Failed", "KubeOS 1.0.0", "A")
    assert "mismatch" in bad.error.lower()
    assert result.outcome == "MaxFailuresReached" and result.failed_nodes == ["node-002"]


def test_cli_rejects_an_unknown_failure_kind(tmp_path: Path) -> None:
    path = tmp_path / "os.yaml"
    path.write_text(yaml.safe_dump(OS_DOC))
    outcome = CliRunner().invoke(main, ["rehearse", "-f", str(path), "--fail", "disk:1"])
    assert outcome.exit_code == 2 and "KIND" in outcome.output


@pytest.mark.cluster
@pytest.mark.timeout(240)
async def test_a_lost_reboot_request_is_asked_again_once_and_the_node_succeeds() -> None:
    """node-004's first reboot request never happens: one re-ask, no storm, Succeeded."""
    doc = {**OS_DOC, "spec": {**OS_DOC["spec"], "maxunavailable": 5}}
    faults = assign_faults([FailSpec("reboot", 1)], 4)
    assert faults["node-001"].lost_reboots == 1
    result = await run_rehearsal(doc, nodes=5, fails=[], time_scale=0.1, timeout=180,
                                 console=Console(quiet=True), faults=_move(faults, "node-004"))
    assert result.outcome == "RolloutComplete", result.failed_nodes
    lost = result.nodes["node-004"]
    assert lost.phase == "Succeeded" and lost.os_image == "KubeOS 1.0.2"
    assert 2 <= lost.reboot_requests <= 2
    assert all(result.nodes[n].reboot_requests == 1 for n in result.nodes if n != "node-004")


def _move(faults: dict[str, NodeFaults], to: str) -> dict[str, NodeFaults]:
    return {to: next(iter(faults.values()))}
