"""The engine: all or nothing, request order, shared staging, effects, dry run, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeos.agent.settings import (
    ConfigPathError,
    ParseError,
    RequestError,
    ServiceRestartError,
    UnknownModelError,
    apply_settings,
)

from .support import GRUB_CFG, apply, config, lines, read, reference_grub_cfg, write


def test_a_failing_config_leaves_earlier_ones_unwritten(tmp_path: Path) -> None:
    # Fixed (§10.7/§10.3): the reference had applied the earlier configs already.
    write(tmp_path, "/etc/sysctl.conf", lines("a=1"))
    write(tmp_path, "/etc/security/limits.conf", lines("bad line"))
    with pytest.raises(ParseError):
        apply(tmp_path, config("kernel.sysctl.persist", ("a", 2)),
              config("pam.limits", ("x", "soft.core.0")))
    assert read(tmp_path, "/etc/sysctl.conf") == lines("a=1")


def test_unknown_model_is_caught_before_anything_is_applied(tmp_path: Path) -> None:
    write(tmp_path, "/etc/sysctl.conf", lines("a=1"))
    with pytest.raises(UnknownModelError):
        apply(tmp_path, config("kernel.sysctl.persist", ("a", 2)), config("kernel.sysctll"))
    assert read(tmp_path, "/etc/sysctl.conf") == lines("a=1")


def test_current_and_next_in_one_request_both_land(tmp_path: Path) -> None:
    write(tmp_path, GRUB_CFG, reference_grub_cfg())
    apply(tmp_path, config("grub.cmdline.current", ("panic", "7")),
          config("grub.cmdline.next", ("panic", "9")), slot="A")
    text = read(tmp_path, GRUB_CFG)
    assert "root=UUID=1" in text.split("panic=7")[0]
    assert "root=UUID=2" in text.split("panic=7")[1].split("panic=9")[0]


def test_two_configs_on_one_file_apply_in_order(tmp_path: Path) -> None:
    write(tmp_path, "/etc/sysctl.conf", lines("a=1"))
    result = apply(tmp_path, config("kernel.sysctl.persist", ("a", 2)),
                   config("kernel.sysctl.persist", ("a", 3), ("b", 1)))
    assert read(tmp_path, "/etc/sysctl.conf") == lines("a=3", "b=1")
    assert [c.files[0].after for c in result.configs] == [lines("a=2"), lines("a=3", "b=1")]


def test_dry_run_changes_nothing_but_reports_everything(tmp_path: Path) -> None:
    write(tmp_path, "/etc/sysctl.conf", lines("a=1"))
    write(tmp_path, "/proc/sys/vm/swappiness", "60\n")
    result = apply(tmp_path, config("kernel.sysctl.persist", ("a", 2)),
                   config("kernel.sysctl", ("vm.swappiness", 10)), dry_run=True)
    assert read(tmp_path, "/etc/sysctl.conf") == lines("a=1")
    assert read(tmp_path, "/proc/sys/vm/swappiness") == "60\n"
    assert not result.applied and result.changed
    assert "-a=1\n+a=2\n" in result.diff()
    assert "-60\n+10\n" in result.diff()


def test_effects_and_restarts_only_for_changed_files(tmp_path: Path) -> None:
    write(tmp_path, "/var/lib/kubelet/config.yaml", "port: 10250\n")
    write(tmp_path, "/etc/containerd/config.toml", "[grpc]\nuid = 0\n")
    restarted: list[str] = []
    result = apply_settings(
        [config("kubernetes.kubelet", ("port", 10250)),
         config("container.containerd", ("grpc.uid", 1))],
        root=tmp_path, booted_slot="A", restart=restarted.append)
    assert [c.effect for c in result.configs] == [None, "restart:containerd"]
    assert result.restarts == ("containerd",) and restarted == ["containerd"]
    assert result.restarted == ("containerd",)


def test_restart_hook_failure_reports_written_files(tmp_path: Path) -> None:
    write(tmp_path, "/var/lib/kubelet/config.yaml", "port: 10250\n")

    def fail(service: str) -> None:
        raise RuntimeError("unit not found")

    with pytest.raises(ServiceRestartError) as err:
        apply_settings([config("kubernetes.kubelet", ("port", 1))], root=tmp_path,
                       booted_slot="A", restart=fail)
    assert err.value.service == "kubelet" and "unit not found" in str(err.value)
    assert read(tmp_path, "/var/lib/kubelet/config.yaml") == "port: 1\n"


def test_dry_run_never_restarts(tmp_path: Path) -> None:
    write(tmp_path, "/var/lib/kubelet/config.yaml", "port: 10250\n")
    called: list[str] = []
    apply_settings([config("kubernetes.kubelet", ("port", 1))], root=tmp_path,
                   booted_slot="A", dry_run=True, restart=called.append)
    assert called == []


def test_bad_booted_slot_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(RequestError):
        apply_settings([], root=tmp_path, booted_slot="C")  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["etc/sysctl.conf", "/etc/../../x", "/etc/", "/"])
def test_bad_configpath_is_rejected(tmp_path: Path, path: str) -> None:
    with pytest.raises(ConfigPathError) as err:
        apply(tmp_path, config("kernel.sysctl.persist", ("a", 1), configpath=path))
    assert "kernel.sysctl.persist" in str(err.value)


def test_result_to_dict_is_json_ready(tmp_path: Path) -> None:
    import json

    write(tmp_path, "/etc/sysctl.conf", "")
    result = apply(tmp_path, config("kernel.sysctl.persist", ("a", 1), ("", 2)))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["changed"] and data["effects"] == ["next-boot"]
    assert data["configs"][0]["files"] == ["/etc/sysctl.conf"]
    assert len(data["configs"][0]["warnings"]) == 1
