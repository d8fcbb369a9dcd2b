"""``os-agent config apply``: file formats, --root, --dry-run, --diff, --json, slot, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kubeos.agent.cli import main
from kubeos.agent.settings.command import booted_slot_from_grubenv

from .support import GRUB_CFG, lines, read, reference_grub_cfg, write

REQUEST_YAML = """\
version: v1
configs:
  - model: kernel.sysctl.persist
    contents:
      - key: vm.swappiness
        value: 10
      - key: ""
        value: ""
  - model: kubernetes.kubelet
    contents:
      - key: port
        value: 10250
"""


@pytest.fixture
def node(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root, "/etc/sysctl.conf", lines("# stock"))
    write(root, "/var/lib/kubelet/config.yaml", "port: 1\n")
    return root


def test_apply_yaml_reports_changes_restarts_and_warnings(
        node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = write(tmp_path, "/req.yaml", REQUEST_YAML)
    assert main(["config", "apply", "--root", str(node), str(request)]) == 0
    out, err = capsys.readouterr()
    assert "kernel.sysctl.persist: changed /etc/sysctl.conf (next-boot)" in out
    assert "restart needed: kubelet" in out
    assert "warning: kernel.sysctl.persist" in err
    assert read(node, "/etc/sysctl.conf") == lines("# stock", "vm.swappiness=10")


def test_dry_run_with_diff_changes_nothing(
        node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = write(tmp_path, "/req.yaml", REQUEST_YAML)
    assert main(["config", "apply", "--root", str(node), "--dry-run", "--diff",
                 str(request)]) == 0
    out, _ = capsys.readouterr()
    assert "would change /etc/sysctl.conf" in out
    assert "+++ b/etc/sysctl.conf\n" in out and "+vm.swappiness=10\n" in out
    assert read(node, "/etc/sysctl.conf") == lines("# stock")


def test_json_request_in_rpc_shape_and_json_output(
        node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = write(tmp_path, "/req.json", json.dumps({"configs": [{
        "model": "kernel.sysctl.persist", "config_path": "",
        "contents": {"a": {"value": 1, "operation": ""}}}]}))
    assert main(["config", "apply", "--root", str(node), "--json", str(request)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["applied"] and data["configs"][0]["files"] == ["/etc/sysctl.conf"]


def test_errors_exit_1_with_the_message(
        node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = write(tmp_path, "/req.yaml", "configs:\n- model: kuberntes.kubelet\n")
    assert main(["config", "apply", "--root", str(node), str(request)]) == 1
    assert "did you mean 'kubernetes.kubelet'" in capsys.readouterr().err
    assert main(["config", "apply", "--root", str(node), str(tmp_path / "missing")]) == 1
    broken = write(tmp_path, "/broken.yaml", "configs: [\n")
    assert main(["config", "apply", "--root", str(node), str(broken)]) == 1


def test_booted_slot_comes_from_grubenv(tmp_path: Path) -> None:
    assert booted_slot_from_grubenv(tmp_path) == "A"
    write(tmp_path, "/boot/efi/EFI/openEuler/grubenv",
          "# GRUB Environment Block\nsaved_entry=B\n" + "#" * 40)
    assert booted_slot_from_grubenv(tmp_path) == "B"


def test_grub_current_follows_grubenv_unless_given(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    write(root, GRUB_CFG, reference_grub_cfg())
    write(root, "/boot/efi/EFI/openEuler/grubenv", "saved_entry=B\n")
    request = write(tmp_path, "/req.yaml",
                    "configs:\n- model: grub.cmdline.current\n  contents:\n  - key: debug\n")
    assert main(["config", "apply", "--root", str(root), str(request)]) == 0
    assert "root=UUID=2" in next(ln for ln in read(root, GRUB_CFG).splitlines() if "debug" in ln)
    assert main(["config", "apply", "--root", str(root), "--booted-slot", "A",
                 str(request)]) == 0
    assert "root=UUID=1" in next(ln for ln in read(root, GRUB_CFG).splitlines()
                             if "debug" in ln)


def test_console_script_is_installed(node: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "os-agent"
    request = write(tmp_path, "/req.yaml", REQUEST_YAML)
    done = subprocess.run([str(script), "config", "apply", "--root", str(node), "--dry-run",
                           str(request)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "would change" in done.stdout
